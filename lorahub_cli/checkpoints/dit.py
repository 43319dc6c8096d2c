"""Flux and SD3 transformers' weights between diffusers' names and the original layouts (BFL's, SAI's MMDiT).

Flux goes both ways here; SD3 is written here and read by diffusers' own converter, which takes every width
from the shapes (``sd3_to_original`` is its inverse, proven by the round trip in tests/checkpoints).

BFL keeps each attention's q, k and v (and, in a single block, the MLP input) as one fused Linear
(``archs.fused``: FLUX_DOUBLE / FLUX_SINGLE), the blocks' q/k RMSNorm scales under ``.scale`` and the final
AdaLayerNorm's (shift, scale) halves the other way round (``archs.ldm``). The reader splits a fused tensor by the
parts' widths read from the shapes (q, k, v as wide as the input; the MLP the rest), never by the published model's
3072, so any width loads: diffusers' own converter fixes inner_dim = 3072, which no test-sized Flux has.
The writers place every tensor (a key left over is an error: the file must load back whole); the reader, like
diffusers' own converter, takes the transformer's keys and leaves the rest (a ComfyUI file's VAE or text encoders
under their own roots, markers such as ``scaled_fp8``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping

from lorahub_cli.archs import ldm
from lorahub_cli.archs.fused import FLUX_DOUBLE, FLUX_SINGLE, SD3_JOINT
from lorahub_cli.archs.single_file import fused_widths
from lorahub_cli.errors import UnsupportedConversion

if TYPE_CHECKING:
    import torch

StateDict = Mapping[str, "torch.Tensor"]
_BLOCKS = (("double_blocks", "transformer_blocks", FLUX_DOUBLE, ldm.FLUX_DOUBLE_NORMS),
           ("single_blocks", "single_transformer_blocks", FLUX_SINGLE, ldm.FLUX_SINGLE_NORMS))


def flux_to_original(state: StateDict) -> dict[str, "torch.Tensor"]:
    """A diffusers FluxTransformer2DModel state dict under BFL's names (bare, as flux1-dev.safetensors)."""
    import torch

    out: dict[str, "torch.Tensor"] = {}
    used: set[str] = set()

    def take(key: str) -> "torch.Tensor":
        used.add(key)
        return state[key]

    for theirs, ours in ldm.FLUX_TOP.items():
        for param in ("weight", "bias"):
            if f"{ours}.{param}" in state:
                tensor = take(f"{ours}.{param}")
                out[f"{theirs}.{param}"] = swap_halves(tensor) if theirs in ldm.FLUX_SWAPPED else tensor
    for block, ours_block, rules, norms in _BLOCKS:
        for n in _numbers(state, ours_block):
            for theirs, parts in rules:
                for param in ("weight", "bias"):
                    keys = [f"{ours_block}.{n}.{p}.{param}" for p in parts]
                    if all(k in state for k in keys):
                        out[f"{block}.{n}.{theirs}.{param}"] = torch.cat([take(k) for k in keys], dim=0)
            for theirs, ours in norms.items():
                if f"{ours_block}.{n}.{ours}" in state:
                    out[f"{block}.{n}.{theirs}"] = take(f"{ours_block}.{n}.{ours}")
    left = [k for k in state if k not in used]
    if left:
        raise UnsupportedConversion(f"{len(left)} Flux transformer weights have no place in BFL's layout "
                                    f"(e.g. {left[0]}): this transformer cannot be written as a single file")
    return out


def sd3_to_original(state: StateDict, root: str = "model.diffusion_model.") -> dict[str, "torch.Tensor"]:
    """A diffusers SD3Transformer2DModel state dict under SAI's names, below ``root`` (as sd3_medium.safetensors)."""
    import torch

    out: dict[str, "torch.Tensor"] = {}
    used: set[str] = set()

    def take(key: str) -> "torch.Tensor":
        used.add(key)
        return state[key]

    theirs_pos, ours_pos = ldm.SD3_POSITIONS
    if ours_pos in state:
        out[theirs_pos] = take(ours_pos)
    for theirs, ours in ldm.SD3_TOP.items():
        for param in ("weight", "bias"):
            if f"{ours}.{param}" in state:
                tensor = take(f"{ours}.{param}")
                out[f"{theirs}.{param}"] = swap_halves(tensor) if theirs in ldm.SD3_SWAPPED else tensor
    numbers = _numbers(state, "transformer_blocks")
    for n in numbers:
        for theirs, parts in SD3_JOINT:
            for param in ("weight", "bias"):
                keys = [f"transformer_blocks.{n}.{p}.{param}" for p in parts]
                if all(k in state for k in keys):
                    tensor = torch.cat([take(k) for k in keys], dim=0)
                    swap = theirs == ldm.SD3_LAST_SWAPPED and n == numbers[-1]
                    out[f"joint_blocks.{n}.{theirs}.{param}"] = swap_halves(tensor) if swap else tensor
        for theirs, ours in ldm.SD3_NORMS.items():
            if f"transformer_blocks.{n}.{ours}" in state:
                out[f"joint_blocks.{n}.{theirs}"] = take(f"transformer_blocks.{n}.{ours}")
    left = [k for k in state if k not in used]
    if left:
        raise UnsupportedConversion(f"{len(left)} SD3 transformer weights have no place in SAI's layout "
                                    f"(e.g. {left[0]}): this transformer cannot be written as a single file")
    return {root + k: v for k, v in out.items()}


def flux_from_original(state: StateDict, root: str = "") -> dict[str, "torch.Tensor"]:
    """BFL Flux weights (below ``root``) under diffusers' names: what FluxTransformer2DModel loads as it is."""
    import torch

    below = {k[len(root):]: v for k, v in state.items() if k.startswith(root)}
    out: dict[str, "torch.Tensor"] = {}
    take = below.__getitem__
    for theirs, ours in ldm.FLUX_TOP.items():
        for param in ("weight", "bias"):
            if f"{theirs}.{param}" in below:
                tensor = take(f"{theirs}.{param}")
                out[f"{ours}.{param}"] = swap_halves(tensor) if theirs in ldm.FLUX_SWAPPED else tensor
    for block, ours_block, rules, norms in _BLOCKS:
        for n in _numbers(below, block):
            for theirs, parts in rules:
                weight = below.get(f"{block}.{n}.{theirs}.weight")
                if weight is None:
                    continue
                widths = fused_widths(tuple(weight.shape), parts)
                for param in ("weight", "bias"):
                    key = f"{block}.{n}.{theirs}.{param}"
                    if key in below:
                        for part, piece in zip(parts, torch.split(take(key), widths, dim=0)):
                            out[f"{ours_block}.{n}.{part}.{param}"] = piece.contiguous() if len(parts) > 1 else piece
            for theirs, ours in norms.items():
                if f"{block}.{n}.{theirs}" in below:
                    out[f"{ours_block}.{n}.{ours}"] = take(f"{block}.{n}.{theirs}")
    return out


def _numbers(state: StateDict, block: str) -> list[int]:
    pattern = re.compile(rf"^{block}\.(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def swap_halves(tensor: "torch.Tensor") -> "torch.Tensor":
    """The two row halves the other way round (the DiTs' final AdaLayerNorm: BFL/SAI shift, scale; diffusers
    scale, shift)."""
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)
