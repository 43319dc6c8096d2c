"""DoRA against the base weight: ``W' = W + w * (m * V / ||V|| - W)`` with ``V = W + scale * up @ down``.

The norm is taken per output row (PEFT's ``lora_magnitude_vector``, LyCORIS' ``dora_scale`` of shape
[out, 1, ...]) or per input channel over the output rows and the kernel (LyCORIS' ``dora_scale`` of shape
[1, in, ...], ``wd_on_out=False``); the magnitude's shape says which. An adapter weight ``w`` blends the
whole DoRA update linearly, as A1111 (``finalize_updown``: decompose, then times the multiplier) and ComfyUI
(``weight_decompose``: ``weight += strength * (calc - weight)``) do, so ``<lora:x:0.5>`` means what it means
there and weight 0 is the base. (PEFT's ``set_adapters`` scales the low-rank term inside the norm instead;
at ``w = 1`` every implementation agrees.) LyCORIS adds float eps to the norm, a relative difference below
1e-7 for any real weight, which we leave out. Arithmetic is float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def axis_of(magnitude: "torch.Tensor", out: int, inp: int) -> str:
    """"out" (one magnitude per output row) or "in" (one per input channel), from the magnitude's shape."""
    if magnitude.numel() == out and (magnitude.dim() <= 1 or magnitude.shape[0] == out):
        return "out"
    if magnitude.numel() == inp:
        return "in"
    from lorahub_cli.errors import NotALora

    raise NotALora(f"a DoRA magnitude of shape {tuple(magnitude.shape)} fits neither the {out} output rows nor "
                   f"the {inp} input channels of its layer")


def dora_delta(weight: "torch.Tensor", pair: Any, w: float) -> "torch.Tensor":
    """``W' - W`` for one DoRA layer, flattened to [out, in*kh*kw], float32 on the weight's device."""
    import torch

    base = weight.detach().reshape(weight.shape[0], -1).to(torch.float32)
    up = pair.up.to(device=weight.device, dtype=torch.float32).reshape(pair.up.shape[0], -1)
    down = pair.down.to(device=weight.device, dtype=torch.float32).reshape(pair.rank, -1)
    v = base + pair.scale * (up @ down)
    m = pair.magnitude.to(device=weight.device, dtype=torch.float32).reshape(-1)
    out, width = v.shape
    inp = weight.shape[1]
    if axis_of(pair.magnitude, out, inp) == "out":
        norm = v.norm(dim=1, keepdim=True)
        scaled = v * (m[:, None] / norm)
    else:
        per_in = v.reshape(out, inp, width // inp)
        norm = per_in.pow(2).sum(dim=(0, 2)).sqrt()
        scaled = (per_in * (m / norm)[None, :, None]).reshape(out, width)
    return (scaled - base) * w if w != 1 else scaled - base
