"""DoRA and (IA)^3 layers made into plain pairs against a named base: what `convert --base` and `merge --base` use.

Their update depends on the base weight, so with the base at hand each such layer's effective update
``W' - W`` (``lycoris.based``, at the adapter weight given) is computed from the base's own weight, read one
layer at a time from its memory-mapped safetensors (``lycoris.extract.layer_readers``: a diffusers folder or a
single-file checkpoint), and written as one exact pair (the smaller side the identity, as ``factors.diff``). A
criterion then cuts each layer to its best rank right after it is built, so only one dense update is held at a
time. The pairs arrive already named on the base (``convert.on_base.read_on_base``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from lorahub_cli.errors import Incompatible
from lorahub_cli.lycoris.based import based_delta, is_based

if TYPE_CHECKING:
    import torch

    from lorahub_cli.bases import Base
    from lorahub_cli.lycoris.lowrank import Criterion, LayerResize

def dense_pair(delta: "torch.Tensor", like: LoraPair) -> LoraPair:
    """``delta`` [out, in*kh*kw] as one exact pair (identity on the smaller side), shaped as ``like``'s layer."""
    import torch

    out, width = delta.shape
    if out <= width:
        up, down = torch.eye(out, dtype=delta.dtype), delta
    else:
        up, down = delta, torch.eye(width, dtype=delta.dtype)
    rank = down.shape[0]
    if like.down.dim() == 4:
        down = down.reshape(rank, *like.down.shape[1:])
        up = up.reshape(out, rank, 1, 1)
    return LoraPair(down=down.contiguous(), up=up.contiguous(), alpha=None)


def bake(adapter: CanonicalAdapter, base: "Base", *,
         then: Optional[Callable[[str, LoraPair], LoraPair]] = None) -> CanonicalAdapter:
    """``adapter`` with every DoRA / (IA)^3 layer replaced by the exact pair of its full update (weight 1)
    against ``base``: both updates are linear in the adapter weight, so scaling the pair by a weight, as a
    merge does, gives the update at that weight. ``then(key, pair)`` sees every layer in order (e.g. to cut it
    to a rank at once)."""
    import torch

    based = [k for k, p in adapter.modules.items() if is_based(p)]
    readers = _readers(base, based)
    modules: dict[str, LoraPair] = {}
    for key, pair in adapter.modules.items():
        if key in readers:
            w0 = readers[key]()
            if w0.shape[0] != pair.up.shape[0] or w0[0].numel() != pair.down[0].numel():
                raise Incompatible(f"layer {key} of base {base.id} is {tuple(w0.shape)}, which the adapter's "
                                   f"{tuple(pair.up.shape[:1])} x {tuple(pair.down.shape[1:])} does not fit")
            with torch.no_grad():
                delta = based_delta(w0, pair, 1.0)
            del w0
            pair = dense_pair(delta, pair)
        modules[key] = then(key, pair) if then is not None else pair
    return CanonicalAdapter(family=adapter.family, modules=modules, tokens=dict(adapter.tokens),
                            metadata=dict(adapter.metadata))


def truncate_on_base(adapter: CanonicalAdapter, base: "Base", c: "Criterion"
                     ) -> tuple[CanonicalAdapter, list["LayerResize"]]:
    """``bake`` with every layer cut by ``c`` as soon as it is built: the per-layer reports in order."""
    from lorahub_cli.lycoris.lowrank import truncate

    reports: list["LayerResize"] = []

    def cut(key: str, pair: LoraPair) -> LoraPair:
        new, report = truncate(key, pair, c, dtype=_out_dtype(pair))
        reports.append(report)
        return new

    return bake(adapter, base, then=cut), reports


def _out_dtype(pair: LoraPair) -> "torch.dtype":
    import torch

    return pair.up.dtype if pair.up.is_floating_point() and pair.up.dtype != torch.float64 else torch.float32


def _readers(base: "Base", keys: list[str]) -> dict[str, Callable[[], "torch.Tensor"]]:
    """A reader of the base's weight for each of ``keys`` (CLIP names with or without ``text_model.``)."""
    if not keys:
        return {}
    from lorahub_cli.lycoris.extract import layer_readers

    components = sorted({k.split(".", 1)[0] for k in keys})
    available = layer_readers(base, components)
    out = {}
    for key in keys:
        component, path = key.split(".", 1)
        for candidate in (key, f"{component}.text_model.{path}", f"{component}.{path.removeprefix('text_model.')}"):
            if candidate in available:
                out[key] = available[candidate]
                break
        else:
            raise Incompatible(f"base {base.id} has no weight for layer {key}, which the adapter's DoRA / (IA)^3 "
                               "update is computed against", hint="Give the base the adapter was trained on.")
    return out
