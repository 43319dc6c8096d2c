"""Adapters merged into the live weights in fp32, with an exact undo: the fast way to stack.

For every layer any adapter touches, ``W' = W + sum_i w_i * scale_i * up_i @ down_i`` is computed in fp32
(the adapters' factors concatenated along the rank, so one matmul per layer) and rounded once to the weight's
dtype. PEFT instead adds each update in the weight's own dtype (in bf16 about 16% of a 1%-magnitude update is
lost, and unfusing leaves drift), and unfused PEFT layers cost extra kernels on every step; a merged stack
costs exactly what the base costs per step.

With ``keep_originals`` the original tensors of just the touched layers are kept (on their device), so
``restore()`` puts back the base bit for bit: switching adapter sets or weights never accumulates error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    import torch

    from lorahub_cli.canonical import CanonicalAdapter, LoraPair

_CLIP_NEST = "text_model."


@dataclass
class ApplyReport:
    layers: int = 0                                     # live layers changed
    skipped: list[str] = field(default_factory=list)    # canonical keys with no fitting layer in this pipeline
    kept_bytes: int = 0                                 # memory held for the undo


def live_layer(pipe: Any, key: str) -> Optional["torch.nn.Module"]:
    """The pipeline's module for a canonical "<component>.<path>" (CLIP with or without "text_model.")."""
    component, path = key.split(".", 1)
    model = getattr(pipe, component, None)
    if model is None:
        return None
    candidates = (path, path[len(_CLIP_NEST):]) if path.startswith(_CLIP_NEST) else (path,)
    for candidate in candidates:
        try:
            module = model.get_submodule(candidate)
        except AttributeError:
            continue
        return getattr(module, "base_layer", module)   # a PEFT-wrapped layer: its base weight
    return None


def merged_update(parts: Sequence[tuple["LoraPair", float]], device: Any,
                  base: Optional["torch.Tensor"] = None) -> "torch.Tensor":
    """sum_i w_i * scale_i * up_i @ down_i in fp32 as one [out, in*k*k] matmul over the concatenated ranks.
    DoRA and (IA)^3 parts are computed against ``base``, the layer's weight (``lycoris.based``)."""
    import torch

    from lorahub_cli.lycoris.based import based_delta, is_based

    ups, downs, dora = [], [], []
    for pair, weight in parts:
        if is_based(pair):
            dora.append((pair, weight))
            continue
        up = pair.up.to(device=device, dtype=torch.float32)
        ups.append(up.reshape(up.shape[0], -1) * (weight * pair.scale))
        downs.append(pair.down.to(device=device, dtype=torch.float32).reshape(pair.rank, -1))
    total = torch.cat(ups, dim=1) @ torch.cat(downs, dim=0) if ups else None
    for pair, weight in dora:
        if base is None:
            from lorahub_cli.errors import NeedsBase

            raise NeedsBase("a DoRA or (IA)^3 update needs the base weight it is applied to")
        delta = based_delta(base, pair, weight)
        total = delta if total is None else total.add_(delta)
    return total


def _fits(weight: "torch.Tensor", pair: "LoraPair") -> bool:
    # out rows and per-row width (in * kh * kw) agree: a 1x1 conv and a Linear are the same map
    return weight.shape[0] == pair.up.shape[0] and weight[0].numel() == pair.down[0].numel()


def _overflow(key: str, dtype: Any, parts: Sequence[tuple["LoraPair", float]]) -> Exception:
    from lorahub_cli.errors import NonFinite

    weights = ", ".join(f"{w:g}" for _, w in parts)
    return NonFinite(f"the adapters make layer {key} NaN or infinite in {str(dtype).removeprefix('torch.')} "
                     f"(weights {weights})",
                     hint="Use smaller adapter weights, or --dtype fp32; nothing was generated or written.")


class MergedStack:
    """The adapters merged into one pipeline's weights; ``restore()`` undoes it exactly when originals are kept."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self._originals: dict[str, tuple["torch.Tensor", "torch.Tensor"]] = {}   # key -> (live weight, copy)
        self.fused = False      # merged without originals: cannot be undone

    def apply(self, adapters: Sequence[tuple["CanonicalAdapter", float]], *, keep_originals: bool = True) -> ApplyReport:
        """Restore the base, then merge ``adapters`` (pairs, weight) into it."""
        import torch

        if self.fused:
            from lorahub_cli.errors import UsageError

            raise UsageError("this pipeline's adapters were fused without keeping the original weights; "
                             "build a new pipeline to change them")
        self.restore()
        plan: dict[str, list[tuple["LoraPair", float]]] = {}
        for pairs, weight in adapters:
            for key, pair in pairs.modules.items():
                plan.setdefault(key, []).append((pair, float(weight)))
        report = ApplyReport()
        with torch.no_grad():
            for key, parts in plan.items():
                layer = live_layer(self.pipe, key)
                weight = getattr(layer, "weight", None)
                if weight is None or not all(_fits(weight, pair) for pair, _ in parts):
                    report.skipped.append(key)
                    continue
                delta = merged_update(parts, weight.device, weight).reshape(weight.shape)
                # fp32 sum, one rounding to the weight's dtype; checked before the live weight changes:
                # finite adapters can still overflow it (large weights, fp16's 65504)
                updated = delta.add_(weight.float()).to(weight.dtype)   # into delta: the weight is untouched
                if not bool(torch.isfinite(updated).all()):
                    self.restore()
                    raise _overflow(key, weight.dtype, parts)
                if keep_originals:
                    self._originals[key] = (weight, weight.detach().clone())
                    report.kept_bytes += weight.numel() * weight.element_size()
                weight.copy_(updated)
                del updated
                report.layers += 1
        self.fused = not keep_originals and report.layers > 0
        return report

    def restore(self) -> int:
        """Put every touched weight back bit for bit; the number of layers restored."""
        import torch

        with torch.no_grad():
            for weight, original in self._originals.values():
                weight.copy_(original)
        count = len(self._originals)
        self._originals.clear()
        return count
