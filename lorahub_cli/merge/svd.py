"""Compressed merge: the best rank-k approximation of the weighted sum, found from the factors alone.

The sum is already factored, ``dW = U @ V`` with U = [c_i up_i] (out x R) and V = [down_i] (R x in*kh*kw),
R = sum of ranks. With reduced QR U = Qu Ru and V^T = Qv Rv, dW = Qu (Ru Rv^T) Qv^T, and Qu, Qv have
orthonormal columns, so the singular values of dW are those of the small R x R core. An SVD of the core,
P S Z^T, gives dW = (Qu P) S (Qv Z)^T: a full SVD of dW for O((out + in) R^2) work, where the dense route
(kohya svd_merge_lora, PEFT combination_type="svd") builds the out x in matrix and pays O(out in min(out, in)).
Truncating to the top k singular triplets is optimal in Frobenius and spectral norm (Eckart-Young).

Factor split (as kohya and PEFT): up = Qu P_k S_k carries the singular values, down = (Qv Z_k)^T has
orthonormal rows, alpha = k (scale 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorahub_cli.canonical import LoraPair
from lorahub_cli.merge.plan import ModulePlan


@dataclass(frozen=True)
class Truncation:
    """How much of a module's update a rank cut kept, as squared Frobenius norms."""

    total_sq: float
    discarded_sq: float

    @property
    def relative_error(self) -> float:
        return (self.discarded_sq / self.total_sq) ** 0.5 if self.total_sq > 0 else 0.0


def stacked_factors(module: ModulePlan, compute_dtype: Any) -> tuple[Any, Any]:
    """(U, V), U [out, R] with the coefficients folded in and V [R, in*kh*kw]: U @ V is the weighted sum."""
    import torch

    ups = [t.pair.up.reshape(module.rows, -1).to(compute_dtype) * t.coef for t in module.terms]
    downs = [t.pair.down.reshape(t.pair.rank, -1).to(compute_dtype) for t in module.terms]
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)


def factored_svd(up: Any, down: Any) -> tuple[Any, Any, Any]:
    """Thin SVD of ``up @ down`` without forming it: (left [out, p], singular values [p], right_h [p, in])."""
    import torch

    qu, ru = torch.linalg.qr(up)            # [out, p], [p, R]
    qv, rv = torch.linalg.qr(down.T)        # [in, q], [q, R]
    p, s, zh = torch.linalg.svd(ru @ rv.T, full_matrices=False)
    return qu @ p, s, zh @ qv.T


def truncate(left: Any, s: Any, right_h: Any, rank: int) -> tuple[Any, Any, Truncation]:
    """(up, down) of the best rank-``rank`` approximation, and what the cut discarded."""
    k = min(rank, s.numel())
    total = float((s * s).sum())
    discarded = float((s[k:] * s[k:]).sum())   # summed directly: a difference would lose small errors
    return left[:, :k] * s[:k], right_h[:k], Truncation(total, discarded)


def to_pair(up: Any, down: Any, shape: tuple[int, ...], out_dtype: Any) -> LoraPair:
    """Factors in the weight's layout: conv up [out, k, 1, 1] and down [k, in, kh, kw]; alpha = k."""
    k = int(down.shape[0])
    if len(shape) == 4:
        up = up.reshape(shape[0], k, 1, 1)
        down = down.reshape(k, *shape[1:])
    return LoraPair(down=down.to(out_dtype).contiguous(), up=up.to(out_dtype).contiguous(), alpha=float(k))


def svd_module(module: ModulePlan, rank: int, *, out_dtype: Any, compute_dtype: Any) -> tuple[LoraPair, Truncation]:
    import torch

    up, down = stacked_factors(module, compute_dtype)
    left, s, right_h = factored_svd(up, down)
    new_up, new_down, cut = truncate(left, s, right_h, rank)
    # inputs that cancel (w and -w of one adapter) leave only rounding noise: its "relative error" means nothing
    bound = float(torch.linalg.norm(up)) * float(torch.linalg.norm(down))     # >= |up @ down|_F
    if cut.total_sq <= (100 * torch.finfo(compute_dtype).eps * bound) ** 2:
        cut = Truncation(0.0, 0.0)
    return to_pair(new_up, new_down, module.shape, out_dtype), cut
