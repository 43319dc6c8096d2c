"""(IA)^3 against the base weight: ``W' = W + w * (W scaled by the vector v along one axis)``.

LyCORIS' IA3 module stores one vector per layer (``<stem>.weight``: ``[dim]`` for a Linear, ``[1, dim, 1, 1]``
for a conv) and an ``on_input`` flag. Its merged weight is ``W * (1 + w * v)`` with ``v`` scaling the output
rows (``on_input`` 0) or the input channels (``on_input`` 1, every kernel position of a channel alike), so the
update is ``w * W * v``: it depends on the base weight, like DoRA, and is applied against it. The flag's
value, not the vector's shape, says the axis (a conv's vector is ``[1, dim, 1, 1]`` either way).
Arithmetic is float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from lorahub_cli.errors import NonFinite, NotALora

if TYPE_CHECKING:
    import torch


@dataclass
class IA3Scale:
    """One layer's scaling vector and its axis."""

    vector: "torch.Tensor"     # 1-D, float
    on_input: bool             # True: one scale per input channel; False: one per output row

    def split(self, out_splits: Sequence[int]) -> list["IA3Scale"]:
        """The parts for a fused target (rows stacked): an output vector divides, an input vector is shared."""
        if self.on_input or len(out_splits) == 1:
            return [self] * len(out_splits)
        return [IA3Scale(part, False) for part in self.vector.split(list(out_splits))]


def read_scale(key: str, vector: "torch.Tensor", flag: "torch.Tensor") -> IA3Scale:
    """The vector and flag as stored, checked: a flag of one value, a vector of finite floats."""
    import torch

    if flag.numel() != 1:
        raise NotALora(f"module {key!r} stores on_input as {flag.numel()} values, not one flag")
    if not vector.is_floating_point() or vector.numel() == 0:
        raise NotALora(f"module {key!r} has an (IA)^3 vector of {vector.dtype} {tuple(vector.shape)}, not floats")
    if not bool(torch.isfinite(vector).all()):
        raise NonFinite(f"module {key!r} has NaN or infinite values in its (IA)^3 vector",
                        hint="The file is damaged or was saved after training diverged.")
    return IA3Scale(vector=vector.reshape(-1), on_input=bool(flag.reshape(-1)[0].item()))


def check_fits(key: str, scale: IA3Scale, out: int, inp: int) -> None:
    """The vector's length is the layer's output rows, or its input channels for an on_input layer."""
    want, axis = (inp, "input channels") if scale.on_input else (out, "output rows")
    if scale.vector.numel() != want:
        raise NotALora(f"module {key!r}: an (IA)^3 vector of {scale.vector.numel()} values for a layer of {want} "
                       f"{axis}")


def ia3_delta(weight: "torch.Tensor", pair: Any, w: float) -> "torch.Tensor":
    """``W' - W`` for one (IA)^3 layer, flattened to [out, in*kh*kw], float32 on the weight's device."""
    import torch

    scale: IA3Scale = pair.ia3
    out, inp = weight.shape[0], weight.shape[1]
    check_fits("this layer", scale, out, inp)
    base = weight.detach().reshape(out, -1).to(torch.float32)
    v = scale.vector.to(device=weight.device, dtype=torch.float32) * w
    if scale.on_input:
        return (base.reshape(out, inp, -1) * v[None, :, None]).reshape(out, -1)
    return base * v[:, None]
