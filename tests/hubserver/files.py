"""Bytes for fake repositories: real LoRA files (SD1/SD2 shapes), pickles, model cards, traps."""

from __future__ import annotations

import io
import math
from typing import Any, Optional

import numpy as np
import yaml

# SD1/SD2 U-Net attention blocks with their width; attn2 to_k/to_v read the text encoder's context
_BLOCKS = ([(f"down_blocks.{b}.attentions.{a}", w) for b, w in ((0, 320), (1, 640), (2, 1280)) for a in (0, 1)]
           + [("mid_block.attentions.0", 1280)]
           + [(f"up_blocks.{b}.attentions.{a}", w) for b, w in ((1, 1280), (2, 640), (3, 320)) for a in (0, 1, 2)])
CONTEXT_DIM = {"sd1": 768, "sd2": 1024}


def lora_modules(family: str = "sd1") -> list[tuple[str, int, int]]:
    """(module path, in_features, out_features) of every attention projection a diffusers LoRA adapts."""
    ctx = CONTEXT_DIM[family]
    out = []
    for block, width in _BLOCKS:
        stem = f"{block}.transformer_blocks.0"
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            out.append((f"{stem}.attn1.{proj}", width, width))
        out += [(f"{stem}.attn2.to_q", width, width), (f"{stem}.attn2.to_k", ctx, width),
                (f"{stem}.attn2.to_v", ctx, width), (f"{stem}.attn2.to_out.0", width, width)]
    return out


def rank_for_size(size: int, family: str = "sd1", bytes_per_value: int = 2) -> int:
    """The rank that makes a full U-Net LoRA about ``size`` bytes."""
    per_rank = sum(i + o for _, i, o in lora_modules(family)) * bytes_per_value
    return max(1, math.ceil(size / per_rank))


def lora_state(family: str = "sd1", rank: int = 4, *, seed: int = 0, style: str = "peft") -> dict[str, np.ndarray]:
    """A trained-looking LoRA state dict (float16). ``style``: "peft" (lora_A/B) or "attn-procs"."""
    rng = np.random.default_rng(seed)
    state = {}
    for module, fin, fout in lora_modules(family):
        down = (rng.standard_normal((rank, fin), dtype=np.float32) * 0.01).astype(np.float16)
        up = (rng.standard_normal((fout, rank), dtype=np.float32) * 0.01).astype(np.float16)
        if style == "peft":
            state[f"unet.{module}.lora_A.weight"] = down
            state[f"unet.{module}.lora_B.weight"] = up
        else:
            stem, proj = module.rsplit(".attn", 1)[0], module.split(".attn", 1)[1]
            attn, name = proj.split(".", 1)
            name = name.replace(".0", "")
            base = f"unet.{stem}.attn{attn}.processor.{name}_lora"
            state[f"{base}.down.weight"] = down
            state[f"{base}.up.weight"] = up
    return state


def lora_safetensors(family: str = "sd1", rank: int = 4, *, seed: int = 0, size: Optional[int] = None,
                     metadata: Optional[dict[str, str]] = None) -> bytes:
    """A real .safetensors LoRA; ``size`` picks the rank so the file is about that many bytes."""
    from safetensors.numpy import save

    if size is not None:
        rank = rank_for_size(size, family)
    return save(lora_state(family, rank, seed=seed), metadata=metadata)


def lora_bin(family: str = "sd1", rank: int = 4, *, seed: int = 0) -> bytes:
    """A pickled (torch.save) attn-procs LoRA, as old diffusers training scripts wrote."""
    import torch

    state = {k: torch.from_numpy(v) for k, v in lora_state(family, rank, seed=seed, style="attn-procs").items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def model_card(body: str = "# A LoRA\n", **front_matter: Any) -> str:
    """A README.md with YAML front matter (keys with None values are left out)."""
    data = {k: v for k, v in front_matter.items() if v is not None}
    if not data:
        return body
    return "---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n\n" + body


def diffusers_card(base_model: Any = "CompVis/stable-diffusion-v1-4", *, instance_prompt: Optional[str] = None,
                   widget: Optional[list[str]] = None, tags: Optional[list[str]] = None,
                   license: Optional[str] = "creativeml-openrail-m") -> str:
    """The card diffusers' LoRA training scripts write (``load_or_create_model_card``)."""
    return model_card(
        "# LoRA text2image fine-tuning\n\nThese are LoRA adaption weights.\n",
        license=license, base_model=base_model, instance_prompt=instance_prompt,
        tags=tags if tags is not None else ["stable-diffusion", "stable-diffusion-diffusers", "text-to-image",
                                            "diffusers", "lora", "diffusers-training"],
        widget=[{"text": w} for w in widget] if widget else None, inference=True)


HTML_PAGE = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in</title></head>"
             b"<body><p>Please sign in to download this model.</p></body></html>\n")
