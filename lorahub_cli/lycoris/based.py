"""Updates that depend on the base weight (DoRA, (IA)^3): which pairs they are, and their ``W' - W``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def is_based(pair: Any) -> bool:
    """True for a pair whose update is computed against the base weight, not ``scale * up @ down``."""
    return getattr(pair, "magnitude", None) is not None or getattr(pair, "ia3", None) is not None


def based_delta(weight: "torch.Tensor", pair: Any, w: float) -> "torch.Tensor":
    """``W' - W`` at adapter weight ``w``, flattened to [out, in*kh*kw], float32 on the weight's device."""
    if getattr(pair, "ia3", None) is not None:
        from lorahub_cli.lycoris.ia3 import ia3_delta

        return ia3_delta(weight, pair, w)
    from lorahub_cli.lycoris.dora import dora_delta

    return dora_delta(weight, pair, w)
