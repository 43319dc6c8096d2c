"""Each LyCORIS layer's exact update, written as one low-rank pair ``up @ down`` built from its factors.

Every LyCORIS form is a product of small factors, and each has an exact factorisation whose rank is known from
the factor shapes, so the update never has to be built densely to be applied, merged or truncated:

* LoHa ``(A1 B1) ⊙ (A2 B2)``: the Hadamard product of two rank-r matrices is ``(A1 • A2) @ (B1 • B2)`` with the
  face-splitting products (column i*r2+j of the left is ``A1[:, i] * A2[:, j]``, row i*r2+j of the right is
  ``B1[i] * B2[j]``): rank r1*r2 at most;
* LoKr ``kron(W1, W2)``: with ``W1 = U1 V1`` and ``W2 = U2 V2`` it is ``kron(U1, U2) @ kron(V1, V2)``; a full
  factor is written as ``W @ I`` or ``I @ W`` (whichever side is smaller). A conv's kernel belongs to W2, and
  the flattened columns (in, kh, kw) then line up with ``kron(W1, W2.reshape(b, -1))``;
* Tucker cores (LoHa t1/t2, LoKr t2, LoCon lora_mid), ``einsum("i j k, i p, j q -> p q k", t, wa, wb)``: the
  core folds into the down side, ``up = waᵀ``, ``down[i, (q, k)] = sum_j t[i, j, k] wb[j, q]``: rank r;
* full-difference (``diff``) layers: the difference itself, as ``I @ D`` or ``D @ I``.

When the exact rank would exceed the layer's own size (``min(out, in*kh*kw)``) the pair is rebuilt in that
smaller dense form, so nothing costs more than the dense update. Definitions follow LyCORIS
(``lycoris/functional/{loha,lokr,locon}.py``): LoHa's scale is alpha / r with r the rows of ``hada_w1_b``;
LoKr's is alpha / r with r the rank of the first low-rank side (w1 first, then w2), and 1 when both sides are
full; a Tucker LoCon's is alpha / r. Arithmetic is float32 (float64 where the factors are float64); the scale
is folded into ``up``, so the pairs carry alpha None (scale 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional

from lorahub_cli.errors import NotALora

if TYPE_CHECKING:
    import torch


@dataclass
class ExactPair:
    """``up @ down`` equals the layer's update; ``down`` is [rank, in*kh*kw], ``up`` [out, rank]."""

    up: "torch.Tensor"
    down: "torch.Tensor"


def _work(t: "torch.Tensor") -> "torch.Tensor":
    import torch

    return t if t.dtype == torch.float64 else t.to(torch.float32)


def _flat(t: "torch.Tensor") -> "torch.Tensor":
    return t.reshape(t.shape[0], -1)


def fold_tucker(core: "torch.Tensor", wa: "torch.Tensor", wb: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(up [p, r], down [r, q*k]) with ``up @ down == einsum("i j ..., i p, j q -> p q ...", core, wa, wb)``."""
    import torch

    r1, r2 = core.shape[0], core.shape[1]
    k = core[0, 0].numel()
    t = _work(core).reshape(r1, r2, k)
    down = torch.einsum("ijk,jq->iqk", t, _work(_flat(wb))).reshape(r1, -1)
    return _work(_flat(wa)).t().contiguous(), down


def face_split(a1, b1, a2, b2) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(A1 B1) ⊙ (A2 B2) as one pair of rank r1*r2."""
    out = a1.shape[0]
    up = (a1[:, :, None] * a2[:, None, :]).reshape(out, -1)
    down = (b1[:, None, :] * b2[None, :, :]).reshape(-1, b1.shape[1])
    return up, down


def _side(full: Optional["torch.Tensor"], a: Optional["torch.Tensor"], b: Optional["torch.Tensor"],
          core: Optional["torch.Tensor"] = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """One LoKr side as (up, down), flattened over the kernel."""
    import torch

    if full is not None:
        w = _work(_flat(full))
        rows, cols = w.shape
        if rows <= cols:
            return torch.eye(rows, dtype=w.dtype), w
        return w, torch.eye(cols, dtype=w.dtype)
    if core is not None:
        return fold_tucker(core, a, b)
    return _work(_flat(a)), _work(_flat(b))


def _bounded(up: "torch.Tensor", down: "torch.Tensor") -> ExactPair:
    """The pair, or its dense form when that is smaller (rank never above min(out, in*k*k))."""
    import torch

    rank, out, width = down.shape[0], up.shape[0], down.shape[1]
    if rank <= min(out, width):
        return ExactPair(up=up, down=down)
    dense = up @ down
    if out <= width:
        return ExactPair(up=torch.eye(out, dtype=dense.dtype), down=dense)
    return ExactPair(up=dense, down=torch.eye(width, dtype=dense.dtype))


def _alpha_scale(alpha: Optional[float], rank: Optional[int]) -> float:
    if alpha is None or not rank:
        return 1.0
    return float(alpha) / rank


def loha(t: Mapping[str, "torch.Tensor"], alpha: Optional[float]) -> ExactPair:
    """LoHa (hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b, optional Tucker cores hada_t1 / hada_t2)."""
    w1a, w1b, w2a, w2b = (t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"])
    rank = int(w1b.shape[0])
    if "hada_t1" in t and "hada_t2" in t:
        # Tucker: w*_a is [r, out], w*_b is [r, in], the core [r, r, kh, kw]
        a1, b1 = fold_tucker(t["hada_t1"], w1a, w1b)
        a2, b2 = fold_tucker(t["hada_t2"], w2a, w2b)
    else:
        a1, b1, a2, b2 = _work(_flat(w1a)), _work(_flat(w1b)), _work(_flat(w2a)), _work(_flat(w2b))
    if a1.shape[0] != a2.shape[0] or b1.shape[1] != b2.shape[1] or a1.shape[1] != b1.shape[0] \
            or a2.shape[1] != b2.shape[0]:
        raise NotALora(f"LoHa factors do not compose: w1 {tuple(a1.shape)} x {tuple(b1.shape)}, "
                       f"w2 {tuple(a2.shape)} x {tuple(b2.shape)}")
    up, down = face_split(a1, b1, a2, b2)
    return _bounded(up * _alpha_scale(alpha, rank), down)


def lokr(t: Mapping[str, "torch.Tensor"], alpha: Optional[float]) -> ExactPair:
    """LoKr (lokr_w1 or lokr_w1_a/_b; lokr_w2 or lokr_w2_a/_b, with Tucker core lokr_t2)."""
    import torch

    if "lokr_w1_b" in t:
        rank: Optional[int] = int(t["lokr_w1_b"].shape[0])
    elif "lokr_w2_b" in t:
        rank = int(t["lokr_w2_b"].shape[0])
    else:
        rank = None       # two full factors: LyCORIS uses scale 1
    u1, v1 = _side(t.get("lokr_w1"), t.get("lokr_w1_a"), t.get("lokr_w1_b"))
    u2, v2 = _side(t.get("lokr_w2"), t.get("lokr_w2_a"), t.get("lokr_w2_b"), t.get("lokr_t2"))
    up = torch.kron(u1.contiguous(), u2.contiguous())
    down = torch.kron(v1.contiguous(), v2.contiguous())
    return _bounded(up * _alpha_scale(alpha, rank), down)


def locon_tucker(t: Mapping[str, "torch.Tensor"], alpha: Optional[float]) -> ExactPair:
    """LoCon with a Tucker core: lora_down [r, in, 1, 1], lora_mid [r, r, kh, kw], lora_up [out, r, 1, 1]."""
    down, mid, up = t["down"], t["mid"], t["up"]
    rank = int(down.shape[0])
    wa = _work(_flat(up)).t()          # [r, out]: the core's first index meets up
    a, b = fold_tucker(mid, wa, _flat(down))
    return _bounded(a * _alpha_scale(alpha, rank), b)


def diff(t: Mapping[str, "torch.Tensor"]) -> ExactPair:
    """A full-difference layer (``.diff``): the difference itself, in its smaller dense form."""
    import torch

    d = _work(_flat(t["diff"]))
    out, width = d.shape
    if out <= width:
        return ExactPair(up=torch.eye(out, dtype=d.dtype), down=d)
    return ExactPair(up=d, down=torch.eye(width, dtype=d.dtype))


def exact_pair(roles: Mapping[str, "torch.Tensor"], alpha: Optional[float]) -> ExactPair:
    """The pair of one module from its tensors by role (as ``inspect.layout.split_key`` names them)."""
    if "hada_w1_a" in roles:
        return loha(roles, alpha)
    if any(r.startswith("lokr_") for r in roles):
        return lokr(roles, alpha)
    if "mid" in roles:
        return locon_tucker(roles, alpha)
    if "diff" in roles:
        return diff(roles)
    raise NotALora(f"no LyCORIS update is defined by roles {sorted(roles)}")
