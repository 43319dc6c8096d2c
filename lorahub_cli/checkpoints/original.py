"""A diffusers pipeline's weights in the original single-file layout (what A1111, ComfyUI and Forge load).

Names come from ``archs.ldm`` (the inverse of the rules the header reader uses); only three things change
shape on the way: the VAE mid-block attention's Linears become 1x1 convs, OpenCLIP's q, k and v are one
``in_proj`` tensor, and its ``text_projection`` is stored transposed. A key with no place in the layout is an
error, never silently dropped: the file must load back whole.

SD2 writes its OpenCLIP-H text encoder at ``cond_stage_model.model.`` with one more layer than the pipeline runs:
the checkpoint's last resblock, which SD2 never runs (penultimate features) and a diffusers folder does not have,
is written as zeros so that the file has the 24-layer shape A1111 / ComfyUI build (and lora's own reader drops it
again). Flux writes its transformer alone in BFL's layout (``checkpoints.dit``), as flux1-dev.safetensors ships;
SD3 its transformer alone in SAI's MMDiT layout below ``model.diffusion_model.``, as sd3_medium.safetensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from lorahub_cli.archs import ldm
from lorahub_cli.errors import UnsupportedConversion

if TYPE_CHECKING:
    import torch

StateDict = Mapping[str, "torch.Tensor"]
_TEXT_ROOTS = {"sdxl": ldm.SDXL_TEXT_ROOT}
WRITABLE_FAMILIES = ("sd1", "sd2", "sdxl", "unknown", "flux", "sd3")


def to_original(components: Mapping[str, StateDict], family: str) -> dict[str, "torch.Tensor"]:
    """Every tensor of ``components`` (unet, vae, text_encoder, text_encoder_2) under its original name."""
    if family not in WRITABLE_FAMILIES:
        raise UnsupportedConversion(f"writing a {family} pipeline as a single file is not supported yet "
                                    f"(supported: SD1.x-shaped, SD2, SDXL, SD3 and Flux)",
                                    hint="Fuse into a diffusers folder instead (`lora fuse ... -o FOLDER`).")
    out: dict[str, "torch.Tensor"] = {}
    for component, state in components.items():
        if component == "transformer" and family == "flux":
            from lorahub_cli.checkpoints.dit import flux_to_original

            out.update(flux_to_original(state))
        elif component == "transformer" and family == "sd3":
            from lorahub_cli.checkpoints.dit import sd3_to_original

            out.update(sd3_to_original(state))
        elif component == "unet":
            out.update(_renamed(state, ldm.unet_params_to_ldm(state), ldm.UNET_ROOT, component))
        elif component == "vae":
            out.update({k: _conv_1x1(v) if ".mid.attn_1." in k else v
                        for k, v in _renamed(state, ldm.vae_params_to_ldm(state), ldm.VAE_ROOT, component).items()})
        elif component == "text_encoder" and family == "sd2":
            out.update(_openclip(state, ldm.SD2_TEXT_ROOT, unused_last_layer=True))
        elif component == "text_encoder":
            root = _TEXT_ROOTS.get(family, ldm.SD1_TEXT_ROOT)
            out.update({root + nested(k): v for k, v in state.items() if not k.endswith("position_ids")})
        elif component == "text_encoder_2":
            out.update(_openclip(state, ldm.SDXL_TEXT2_ROOT))
    return out


def nested(key: str) -> str:
    """CLIP keys always with their ``text_model.`` level (transformers >= 5.6 saves them without it)."""
    return key if key.startswith("text_model.") or key.startswith("text_projection") else f"text_model.{key}"


def _renamed(state: StateDict, names: Mapping[str, str], root: str, component: str) -> dict[str, "torch.Tensor"]:
    missing = [k for k in state if k not in names]
    if missing:
        raise UnsupportedConversion(f"{len(missing)} {component} weights have no place in the original layout "
                                    f"(e.g. {missing[0]}): this architecture cannot be written as a single file")
    return {root + names[k]: v for k, v in state.items()}


def _conv_1x1(tensor: "torch.Tensor") -> "torch.Tensor":
    return tensor.reshape(*tensor.shape, 1, 1) if tensor.ndim == 2 else tensor


def _openclip(state: StateDict, root: str, *, unused_last_layer: bool = False) -> dict[str, "torch.Tensor"]:
    import torch

    out: dict[str, "torch.Tensor"] = {}
    fused: dict[str, list] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        found = ldm.openclip_params_to_ldm(nested(key))
        if found is None:
            raise UnsupportedConversion(f"text_encoder_2 weight {key} has no place in the OpenCLIP layout")
        if isinstance(found, tuple):
            name, part = found
            fused.setdefault(name, [None, None, None])[part] = value
        elif found == "text_projection":
            out[root + found] = value.T.contiguous()
        else:
            out[root + found] = value
    for name, parts in fused.items():
        out[root + name] = torch.cat(parts, dim=0)
    if unused_last_layer:
        out.update(_zero_layer(out, root))
    return out


def _zero_layer(written: dict[str, "torch.Tensor"], root: str) -> dict[str, "torch.Tensor"]:
    """SD2's never-run last resblock: the written last layer's tensors, one index up, as zeros."""
    import torch

    prefix = root + "transformer.resblocks."
    last = max(int(k[len(prefix):].split(".")[0]) for k in written if k.startswith(prefix))
    mark = f"{prefix}{last}."
    return {f"{prefix}{last + 1}.{k[len(mark):]}": torch.zeros_like(v) for k, v in written.items()
            if k.startswith(mark)}
