"""Original-checkpoint layer names of the DiT models (BFL Flux, SAI MMDiT for SD3), from a module table.

kohya and ComfyUI name Flux and SD3 layers as the original checkpoints do, where q, k and v (and, in a
Flux single block, the MLP input) are one fused Linear. diffusers splits them. A FusedLayer records
which diffusers layers, stacked along the output axis in this order, make up one original layer, so
a converter can split an up/B matrix by the parts' out_features and share the down/A matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from lorahub_cli.archs.tables import Layer


@dataclass(frozen=True)
class FusedLayer:
    parts: tuple[str, ...]   # diffusers module names, in output order
    in_features: int
    out_features: int        # sum of the parts' out_features

    kind = "linear"
    kernel = None


# (original name inside a block, diffusers parts inside the same block)
FLUX_DOUBLE = (
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
    ("img_attn.proj", ("attn.to_out.0",)),
    ("img_mlp.0", ("ff.net.0.proj",)),
    ("img_mlp.2", ("ff.net.2",)),
    ("img_mod.lin", ("norm1.linear",)),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
    ("txt_attn.proj", ("attn.to_add_out",)),
    ("txt_mlp.0", ("ff_context.net.0.proj",)),
    ("txt_mlp.2", ("ff_context.net.2",)),
    ("txt_mod.lin", ("norm1_context.linear",)),
)
FLUX_SINGLE = (
    ("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")),
    ("linear2", ("proj_out",)),
    ("modulation.lin", ("norm.linear",)),
)
SD3_JOINT = (
    ("x_block.attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
    ("x_block.attn.proj", ("attn.to_out.0",)),
    ("x_block.attn2.qkv", ("attn2.to_q", "attn2.to_k", "attn2.to_v")),   # SD3.5-medium only
    ("x_block.attn2.proj", ("attn2.to_out.0",)),
    ("x_block.mlp.fc1", ("ff.net.0.proj",)),
    ("x_block.mlp.fc2", ("ff.net.2",)),
    ("x_block.adaLN_modulation.1", ("norm1.linear",)),
    ("context_block.attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
    ("context_block.attn.proj", ("attn.to_add_out",)),        # absent in the last (context_pre_only) block
    ("context_block.mlp.fc1", ("ff_context.net.0.proj",)),
    ("context_block.mlp.fc2", ("ff_context.net.2",)),
    ("context_block.adaLN_modulation.1", ("norm1_context.linear",)),
)


def flux_layers(table: Mapping[str, Layer]) -> dict[str, FusedLayer]:
    """BFL names (double_blocks.N.img_attn.qkv, single_blocks.N.linear1, ...) of a Flux transformer."""
    return {**_fuse(table, "transformer_blocks", "double_blocks", FLUX_DOUBLE),
            **_fuse(table, "single_transformer_blocks", "single_blocks", FLUX_SINGLE)}


def sd3_layers(table: Mapping[str, Layer]) -> dict[str, FusedLayer]:
    """SAI MMDiT names (joint_blocks.N.x_block.attn.qkv, ...) of an SD3 transformer."""
    return _fuse(table, "transformer_blocks", "joint_blocks", SD3_JOINT)


def _fuse(table: Mapping[str, Layer], ours: str, theirs: str,
          rules: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, FusedLayer]:
    pattern = re.compile(rf"^{re.escape(ours)}\.(\d+)\.")
    blocks = sorted({int(m.group(1)) for name in table if (m := pattern.match(name))})
    out: dict[str, FusedLayer] = {}
    for n in blocks:
        for name, parts in rules:
            layers = [table.get(f"{ours}.{n}.{p}") for p in parts]
            if any(layer is None for layer in layers):
                continue
            fan_in = {layer.in_features for layer in layers}  # type: ignore[union-attr]
            if len(fan_in) != 1:
                continue  # not fusable: the parts read different inputs
            out[f"{theirs}.{n}.{name}"] = FusedLayer(tuple(f"{ours}.{n}.{p}" for p in parts), fan_in.pop(),
                                                     sum(layer.out_features for layer in layers))  # type: ignore[union-attr]
    return out
