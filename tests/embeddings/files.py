"""Real embedding files in every layout met in the wild, written with torch and safetensors as their tools do."""

from __future__ import annotations

from pathlib import Path


def _vectors(n: int, width: int, seed: int):
    import torch

    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def a1111_pt(path: Path, *, n: int = 4, width: int = 768, seed: int = 0) -> Path:
    """A1111's own .pt: string_to_param holds a Parameter saved with requires_grad, name and step beside it."""
    import torch

    param = torch.nn.Parameter(_vectors(n, width, seed), requires_grad=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": param}, "name": "bad-hands",
                "step": 3000, "sd_checkpoint": "e1441589", "sd_checkpoint_name": "v1-5-pruned"}, path)
    return path


def a1111_safetensors(path: Path, *, n: int = 8, width: int = 768, seed: int = 1) -> Path:
    from safetensors.torch import save_file

    save_file({"emb_params": _vectors(n, width, seed).half()}, str(path))
    return path


def diffusers_ti(path: Path, token: str = "<cat-toy>", *, width: int = 768, seed: int = 2) -> Path:
    """diffusers textual_inversion.py's learned_embeds (.safetensors, or .bin through torch.save)."""
    vectors = {token: _vectors(1, width, seed)[0]}
    if path.suffix == ".bin":
        import torch

        torch.save(vectors, path)
    else:
        from safetensors.torch import save_file

        save_file(vectors, str(path))
    return path


def sdxl_ti(path: Path, *, n: int = 2, keys: tuple[str, str] = ("clip_l", "clip_g"), seed: int = 3) -> Path:
    from safetensors.torch import save_file

    save_file({keys[0]: _vectors(n, 768, seed), keys[1]: _vectors(n, 1280, seed + 1)}, str(path))
    return path
