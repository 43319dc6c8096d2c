"""Checks and bookkeeping before any arithmetic: are these inputs mergeable, and what goes into each module.

A merge is planned per module: every input that adapts the module contributes one ``Term`` (its pair and
the coefficient ``weight * alpha / rank`` that multiplies its update). Inputs must be of one family, every
module's pairs must describe the same weight shape, and weights must be finite; anything else is refused
here with a specific error before a single tensor is multiplied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from lorahub_cli.errors import Incompatible, NonFinite, UsageError
from lorahub_cli.values import finite_weight  # noqa: F401 - merge.job and tests use it from here

METHODS = ("stack", "svd", "ties")
UNKNOWN_FAMILY = "unknown"


@dataclass(frozen=True)
class MergeSource:
    """What the output's metadata says about one input (its library name or file name, and its hash)."""

    name: str
    sha256: Optional[str] = None


@dataclass(frozen=True)
class Term:
    """One input's contribution to one module: ``coef * up @ down`` (up [out, r], down [r, in*kh*kw])."""

    pair: LoraPair
    coef: float
    source: int


@dataclass
class ModulePlan:
    key: str
    shape: tuple[int, ...]          # the update's shape: (out, in) or (out, in, kh, kw)
    terms: list[Term] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.shape[0]


@dataclass
class MergePlan:
    family: str
    modules: list[ModulePlan]
    tokens: dict[str, Any]
    dtype: Any                      # the output dtype (torch.dtype)


def check_method(method: str, rank: Optional[int], density: Optional[float]) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown merge method {method!r}; use one of: {', '.join(METHODS)}")
    if rank is not None:
        if method == "stack":
            raise UsageError("--rank applies to the svd and ties methods; stack keeps every input's rank (exact)",
                             hint="Use --method svd --rank R for a smaller file.")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise UsageError(f"rank must be a positive integer, got {rank!r}")
    if density is not None:
        if method != "ties":
            raise UsageError("--density applies to the ties method only")
        if not (isinstance(density, (int, float)) and 0.0 < density <= 1.0):
            raise UsageError(f"density must be in (0, 1], got {density!r}")


def check_family(families: Sequence[str], labels: Sequence[str]) -> str:
    """The family all inputs share. ``unknown`` joins any family (per-module shapes are still checked);
    two known families are refused, naming the input that differs from the others."""
    known = [f for f in families if f != UNKNOWN_FAMILY]
    if not known:
        return UNKNOWN_FAMILY
    counts = Counter(known)
    if len(counts) == 1:
        return known[0]
    # the majority wins; on a tie the first input's family does, so the later odd one is named
    top = max(counts.values())
    majority = next(f for f in known if counts[f] == top)
    odd = [i for i, f in enumerate(families) if f not in (majority, UNKNOWN_FAMILY)]
    first = odd[0]
    others = [labels[i] for i, f in enumerate(families) if f == majority]
    detail = ", ".join(f"{labels[i]}: {families[i]}" for i in range(len(families)))
    raise Incompatible(
        f"{labels[first]} is a {families[first]} adapter, but {_join(others)} "
        f"{'is' if len(others) == 1 else 'are'} {majority}; adapters of different families cannot be merged "
        f"({detail})",
        hint="Merge only adapters trained for the same base model family.")


def build_plan(adapters: Sequence[CanonicalAdapter], weights: Sequence[float], labels: Sequence[str],
               dtype: Any = None) -> MergePlan:
    import torch

    if not adapters:
        raise UsageError("nothing to merge: give at least one adapter")
    if len(weights) != len(adapters):
        raise UsageError(f"{len(weights)} weights for {len(adapters)} adapters")
    for label, w in zip(labels, weights):
        finite_weight(label, w)
    if all(w == 0 for w in weights):   # a zero weight drops its input: nothing would be left to write
        raise UsageError("every input has weight 0, so the merge would be empty; give at least one input a "
                         "non-zero weight")
    family = check_family([a.family for a in adapters], labels)

    modules: dict[str, ModulePlan] = {}
    dtypes = []
    for index, (adapter, weight) in enumerate(zip(adapters, weights)):
        for key, pair in adapter.modules.items():
            shape = _update_shape(key, pair, labels[index])
            dtypes += [pair.up.dtype, pair.down.dtype]
            if weight == 0:   # contributes nothing; a module only it adapts is left out
                continue
            plan = modules.setdefault(key, ModulePlan(key, shape))
            plan.shape = _same_shape(key, plan, shape, labels, index)
            plan.terms.append(Term(pair, float(weight) * pair.scale, index))
    for plan in modules.values():
        for term in plan.terms:
            _check_finite(plan.key, term.pair, labels[term.source])
    out_dtype = dtype if dtype is not None else _promote(dtypes) if dtypes else torch.float32
    return MergePlan(family, list(modules.values()), _merge_tokens(adapters, labels), out_dtype)


def _update_shape(key: str, pair: LoraPair, label: str) -> tuple[int, ...]:
    up, down = pair.up, pair.down
    ok = (up.dim() in (2, 4) and down.dim() == up.dim() and up.shape[1] == down.shape[0]
          and (up.dim() == 2 or tuple(up.shape[2:]) == (1, 1)))
    if not ok:
        raise Incompatible(f"{label}: module {key} has factors of shapes up {tuple(up.shape)} / down "
                           f"{tuple(down.shape)}, which are not a LoRA pair "
                           "(up [out, r(, 1, 1)], down [r, in(, kh, kw)])")
    return (int(up.shape[0]), *map(int, down.shape[1:]))


def _same_shape(key: str, plan: ModulePlan, shape: tuple[int, ...], labels: Sequence[str],
                index: int) -> tuple[int, ...]:
    """The module's update shape, agreed by every input. A linear (out, in) and a 1x1 conv (out, in, 1, 1) are
    the same update; the 4-d form wins because only a conv base layer is stored that way."""
    if shape == plan.shape:
        return shape
    squeeze = lambda s: s[:2] if s[2:] == (1, 1) else s  # noqa: E731
    if squeeze(shape) == squeeze(plan.shape):
        return shape if len(shape) == 4 else plan.shape
    first = labels[plan.terms[0].source] if plan.terms else "an earlier input"
    if shape[:2] == plan.shape[:2]:
        kernel = lambda s: "x".join(map(str, s[2:])) or "1x1"  # noqa: E731
        raise Incompatible(f"module {key} has a {kernel(plan.shape)} conv kernel in {first} but {kernel(shape)} in "
                           f"{labels[index]}; LoRA factors of one layer must use that layer's kernel")
    raise Incompatible(f"module {key} updates a weight of shape {plan.shape} in {first} but {shape} in "
                       f"{labels[index]}; these adapters are not for the same base model")


def _check_finite(key: str, pair: LoraPair, label: str) -> None:
    import torch

    for role, t in (("up", pair.up), ("down", pair.down)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFinite(f"{label}: module {key} has NaN or infinite values in its {role} weight",
                            hint="The file is damaged or was saved after training diverged; it cannot be merged.")


def check_finite_result(modules: dict[str, LoraPair], labels: Sequence[str], weights: Sequence[float]) -> None:
    """The merged pairs, before anything is written: finite inputs and finite weights can still overflow
    (1e308 x 1e308, or a sum past fp16's 65504 when rounded to the output dtype). Each module's factors must
    be finite, and so must a bound on its update ``|up| @ |down|`` in float32 (what loaders compute it in)."""
    import torch

    limit = torch.finfo(torch.float32).max
    for key, pair in modules.items():
        up = pair.up.reshape(pair.up.shape[0], -1)
        down = pair.down.reshape(pair.down.shape[0], -1)
        finite = bool(torch.isfinite(up).all()) and bool(torch.isfinite(down).all())
        # max_ij |sum_k up_ik down_kj| <= sum_k max_i |up_ik| * max_j |down_kj|: one cheap float64 bound
        bound = 0.0
        if finite and up.numel() and down.numel():
            bound = float((up.abs().amax(dim=0).double() * down.abs().amax(dim=1).double()).sum())
        if not finite or not bound * pair.scale <= limit:
            given = ", ".join(f"{label}: {w:g}" for label, w in zip(labels, weights))
            raise NonFinite(f"merging gives module {key} NaN or infinite values ({pair.up.dtype}); the weights "
                            f"({given}) or the inputs' values are too large to represent",
                            hint="Use smaller weights (and --dtype fp32 for large updates); nothing was written.")


def _merge_tokens(adapters: Sequence[CanonicalAdapter], labels: Sequence[str]) -> dict[str, Any]:
    """Embedded textual-inversion vectors are kept as they are (they are not low-rank updates); one token
    with different vectors in two inputs is refused rather than silently picking one."""
    import torch

    tokens: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for adapter, label in zip(adapters, labels):
        for token, vec in adapter.tokens.items():
            if token in tokens and not (tokens[token].shape == vec.shape and torch.equal(tokens[token], vec)):
                raise Incompatible(f"{owner[token]} and {label} both embed the token {token!r} with different "
                                   "vectors; one merged file cannot hold both")
            tokens.setdefault(token, vec)
            owner.setdefault(token, label)
    return tokens


def _promote(dtypes: list[Any]) -> Any:
    import torch

    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
