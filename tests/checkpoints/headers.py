"""Header-only single-file checkpoints for tests: real names and shapes, no weights in memory or on disk.

``checkpoint_keys(tables, family)`` spells diffusers module tables (``archs.module_table`` of an alias or a tiny
pipeline folder) as an A1111 / ComfyUI checkpoint names them, with the project's own naming rules
(``archs.naming.sai_unet_names`` for the U-Net, ``archs.fused.flux_layers`` / ``sd3_layers`` for the DiTs, the OpenCLIP and CLIP roots of
``archs.ldm``). ``write_sparse`` writes a safetensors file whose data section is a hole (``truncate``): an SDXL-sized
file costs its header on disk and nothing in memory.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping, Optional

from lorahub_cli.archs import Layer, ldm
from lorahub_cli.archs.fused import flux_layers, sd3_layers
from lorahub_cli.archs.naming import sai_unet_names

WIDTH = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1}


def _shape(layer: Layer) -> tuple[int, ...]:
    if layer.kind == "conv":
        return (layer.out_features, layer.in_features, *(layer.kernel or (1, 1)))
    return (layer.out_features, layer.in_features)


def checkpoint_keys(tables: Mapping[str, Mapping[str, Layer]], family: str, *, vae: bool = True,
                    components: Optional[tuple[str, ...]] = None) -> dict[str, tuple[int, ...]]:
    """Weight name -> shape of a checkpoint holding ``tables`` (only ``components`` when given)."""
    keys: dict[str, tuple[int, ...]] = {}
    wanted = components or tuple(tables)
    if "unet" in wanted:
        unet = tables["unet"]
        for ours, theirs in sai_unet_names(unet).items():
            keys[f"{ldm.UNET_ROOT}{theirs}.weight"] = _shape(unet[ours])
            keys[f"{ldm.UNET_ROOT}{theirs}.bias"] = (unet[ours].out_features,)
    if "transformer" in wanted and family == "flux":
        table = tables["transformer"]
        for theirs, fused in flux_layers(table).items():
            keys[f"{ldm.UNET_ROOT}{theirs}.weight"] = (fused.out_features, fused.in_features)
        for theirs, ours in ldm.FLUX_TOP.items():
            if ours in table:
                keys[f"{ldm.UNET_ROOT}{theirs}.weight"] = _shape(table[ours])
    if "transformer" in wanted and family == "sd3":
        table = tables["transformer"]
        for theirs, fused in sd3_layers(table).items():
            keys[f"{ldm.UNET_ROOT}{theirs}.weight"] = (fused.out_features, fused.in_features)
        for theirs, ours in ldm.SD3_TOP.items():
            if ours in table:
                keys[f"{ldm.UNET_ROOT}{theirs}.weight"] = _shape(table[ours])
    if "text_encoder" in wanted and "text_encoder" in tables:
        if family == "sd2":
            keys.update(_openclip(tables["text_encoder"], ldm.SD2_TEXT_ROOT, extra_layer=True))
        else:
            root = ldm.SDXL_TEXT_ROOT if family == "sdxl" else ldm.SD1_TEXT_ROOT
            if family == "flux":
                root = "text_encoders.clip_l.transformer."
            for name, layer in tables["text_encoder"].items():
                keys[f"{root}{name}.weight"] = _shape(layer)
    if "text_encoder_2" in wanted and "text_encoder_2" in tables and family == "sdxl":
        keys.update(_openclip(tables["text_encoder_2"], ldm.SDXL_TEXT2_ROOT, extra_layer=False))
    if vae:
        keys[f"{ldm.VAE_ROOT}decoder.conv_out.weight"] = (3, 128, 3, 3)
        keys[f"{ldm.VAE_ROOT}encoder.conv_in.weight"] = (128, 3, 3, 3)
    return keys


def _openclip(table: Mapping[str, Layer], root: str, *, extra_layer: bool) -> dict[str, tuple[int, ...]]:
    """CLIP layers back into OpenCLIP resblocks (q, k, v fused as in_proj_weight); SD2's checkpoint holds one
    layer more than its diffusers text encoder (the pipeline stops one layer short)."""
    out: dict[str, tuple[int, ...]] = {}
    leaves = {v: k for k, v in ldm.OPENCLIP_LEAVES.items()}
    indices = sorted({int(n.split(".")[3]) for n in table if n.startswith("text_model.encoder.layers.")})
    for i in indices + ([indices[-1] + 1] if extra_layer else []):
        src = min(i, indices[-1])
        q = table[ldm.clip_name(src, "self_attn.q_proj")]
        out[f"{root}transformer.resblocks.{i}.attn.in_proj_weight"] = (3 * q.out_features, q.in_features)
        for leaf, theirs in leaves.items():
            out[f"{root}transformer.resblocks.{i}.{theirs}.weight"] = _shape(table[ldm.clip_name(src, leaf)])
    if "text_projection" in table:
        p = table["text_projection"]
        out[f"{root}text_projection"] = (p.in_features, p.out_features)
    return out


def write_sparse(path: Path, keys: Mapping[str, tuple[int, ...]], *, dtype: str = "F16",
                 metadata: Optional[dict[str, str]] = None, cut: int = 0) -> Path:
    """A safetensors file with ``keys`` whose data is a hole; ``cut`` bytes are left off the end (truncated)."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in keys.items():
        n = WIDTH[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset - cut)
    return path
