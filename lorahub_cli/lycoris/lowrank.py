"""The best rank-k LoRA of a layer's update, from its factors, with kohya's rank criteria.

A pair's update ``up @ down`` (rank r) has the SVD ``(Qu Uc) S (Vc^T Qd^T)`` where ``up = Qu Ru`` and
``down^T = Qd Rd`` are thin QRs and ``Ru Rd^T = Uc S Vc^T`` is the SVD of an r x r core. That costs
O((out + in) r^2) instead of the O(out * in * min(out, in)) of a dense SVD, and gives the same singular values,
so the truncation is the Eckart-Young optimum: the error left is exactly ``sqrt(sum of the dropped S^2)``.
LyCORIS layers arrive here already as exact pairs (``lycoris.factors``): a Kronecker product's pair has the
product's rank, a Hadamard product's at most r^2.

Criteria, as kohya's ``networks/resize_lora.py`` defines them (``--new_rank`` is the cap of the dynamic ones):
* ``rank``: a fixed rank;
* ``sv_ratio``: keep the singular values larger than ``S[0] / X``;
* ``sv_cumulative``: the smallest k whose ``sum(S[:k]) / sum(S)`` reaches C;
* ``sv_fro``: the smallest k whose ``sqrt(sum(S[:k]^2) / sum(S^2))`` reaches F.
An all-zero update (``S[0] <= 1e-6``) keeps rank 1. The rank never exceeds the layer's present rank (a dense
SVD would pad it with singular vectors of zero). The new alpha keeps the layer's scale (alpha = scale * k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from lorahub_cli.canonical import LoraPair
from lorahub_cli.errors import UsageError

if TYPE_CHECKING:
    import torch

MIN_SV = 1e-6


@dataclass(frozen=True)
class Criterion:
    """How to choose each layer's rank: ``method`` with its ``value``; ``max_rank`` caps a dynamic method."""

    method: str
    value: float
    max_rank: Optional[int] = None

    def describe(self) -> str:
        cap = f" (at most {self.max_rank})" if self.max_rank and self.method != "rank" else ""
        return f"{self.method.replace('_', '-')} {self.value:g}{cap}"


def criterion(rank: Optional[int] = None, sv_fro: Optional[float] = None, sv_ratio: Optional[float] = None,
              sv_cumulative: Optional[float] = None) -> Optional[Criterion]:
    """The one criterion the options name (None when none does); bad values are usage errors."""
    if rank is not None and rank < 1:
        raise UsageError(f"--rank must be at least 1, got {rank}")
    dynamic = {k: v for k, v in (("sv_fro", sv_fro), ("sv_ratio", sv_ratio), ("sv_cumulative", sv_cumulative))
               if v is not None}
    if len(dynamic) > 1:
        raise UsageError(f"give one of --sv-fro, --sv-ratio, --sv-cumulative, not {len(dynamic)}")
    for name, value in dynamic.items():
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"{flag} must be a positive number, got {value:g}")
        if name in ("sv_fro", "sv_cumulative") and value > 1:
            raise UsageError(f"{flag} is a fraction in (0, 1], got {value:g}")
        if name == "sv_ratio" and value < 1:
            raise UsageError(f"--sv-ratio is a ratio S[0] / S[k] of at least 1, got {value:g}")
    if dynamic:
        (name, value), = dynamic.items()
        return Criterion(name, float(value), rank)
    return Criterion("rank", float(rank), rank) if rank is not None else None


def choose_rank(s: "torch.Tensor", c: Criterion) -> int:
    """kohya's rank for singular values ``s`` (descending) under ``c``, capped at len(s)."""
    import torch

    n = int(s.numel())
    if n == 0 or float(s[0]) <= MIN_SV:
        return 1
    if c.method == "rank":
        k = int(c.value)
    elif c.method == "sv_ratio":
        k = int(torch.sum(s > s[0] / c.value))
    elif c.method == "sv_cumulative":
        k = int(torch.searchsorted(torch.cumsum(s, 0) / s.sum(), torch.tensor(c.value, dtype=s.dtype))) + 1
    else:   # sv_fro
        sq = s.pow(2)
        k = int(torch.searchsorted(torch.cumsum(sq, 0) / sq.sum(), torch.tensor(c.value ** 2, dtype=s.dtype))) + 1
    if c.method != "rank" and c.max_rank:
        k = min(k, c.max_rank)
    return max(1, min(k, n))


@dataclass
class LayerResize:
    """One layer's result: rank before and after, and what the truncation left out."""

    key: str
    rank_before: int
    rank_after: int
    error: float           # ||update - truncated||_F, in the layer's effective units (scale applied)
    rel_error: float       # error / ||update||_F
    fro_retained: float    # sqrt(sum(S[:k]^2) / sum(S^2)), as kohya reports it

    def to_dict(self) -> dict:
        return {"module": self.key, "rank_before": self.rank_before, "rank_after": self.rank_after,
                "error": self.error, "rel_error": self.rel_error, "fro_retained": self.fro_retained}


def pair_svd(up: "torch.Tensor", down: "torch.Tensor"):
    """(U, S, Vh) of ``up @ down`` (up [out, r], down [r, n]) from a QR of each factor and an r x r core; float64."""
    import torch

    up, down = up.to(torch.float64), down.to(torch.float64)
    qu, ru = torch.linalg.qr(up)
    qd, rd = torch.linalg.qr(down.t())
    uc, s, vch = torch.linalg.svd(ru @ rd.t())
    return qu @ uc, s, vch @ qd.t()


def truncate(key: str, pair: LoraPair, c: Criterion, dtype: Optional["torch.dtype"] = None
             ) -> tuple[LoraPair, LayerResize]:
    """The best pair of the rank ``c`` chooses for ``pair``'s update, and the layer's report."""
    import torch

    up = pair.up.reshape(pair.up.shape[0], -1)
    down = pair.down.reshape(pair.rank, -1)
    u, s, vh = pair_svd(up, down)
    k = choose_rank(s, c)
    sq = s.pow(2)
    total = float(sq.sum())
    left = float(sq[k:].sum())
    scale = abs(pair.scale)
    out_dtype = dtype or (pair.up.dtype if pair.up.is_floating_point() else torch.float32)
    new_up = (u[:, :k] * s[:k]).to(out_dtype)
    new_down = vh[:k].to(out_dtype)
    if pair.down.dim() == 4:   # a conv: [k, in, kh, kw] and [out, k, 1, 1]
        new_down = new_down.reshape(k, *pair.down.shape[1:])
        new_up = new_up.reshape(new_up.shape[0], k, 1, 1)
    new = LoraPair(down=new_down.contiguous(), up=new_up.contiguous(), alpha=pair.scale * k)
    report = LayerResize(key=key, rank_before=int(s.numel()), rank_after=k, error=math.sqrt(left) * scale,
                         rel_error=math.sqrt(left / total) if total > 0 else 0.0,
                         fro_retained=math.sqrt(1 - left / total) if total > 0 else 1.0)
    return new, report


def truncate_adapter(adapter, c: Criterion, dtype: Optional["torch.dtype"] = None):
    """Every module of a ``CanonicalAdapter`` truncated by ``c``: (new adapter, per-layer reports in order)."""
    from lorahub_cli.canonical import CanonicalAdapter

    modules, reports = {}, []
    for key, pair in adapter.modules.items():
        modules[key], report = truncate(key, pair, c, dtype)
        reports.append(report)
    return CanonicalAdapter(family=adapter.family, modules=modules, tokens=dict(adapter.tokens),
                            metadata=dict(adapter.metadata)), reports
