"""Adapter + adapter -> adapter, on the canonical form (no files, no printing).

    merged = merge([style, subject], [0.8, 1.0])                          # exact: rank = sum of ranks
    small = merge([style, subject], [0.8, 1.0], method="svd", rank=32)    # best rank-32 approximation

Methods:
  stack  exact weighted sum of the updates, per module (stack.py)
  svd    its Eckart-Young optimal rank-k approximation, from the factors with QR + a small SVD (svd.py)
  ties   TIES merging of the dense updates (trim, elect sign, disjoint mean), then rank k (prune.py)
Modules present in only some inputs are kept (with their weight); text-encoder modules are merged like the
denoiser's. Weights may be negative; a zero weight drops that input from the arithmetic (it is still
recorded). Every result has alpha = rank per module (scale 1), so any loader applies it as computed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

from lorahub_cli.canonical import CanonicalAdapter
from lorahub_cli.errors import UsageError
from lorahub_cli.merge.plan import (METHODS, MergeSource, build_plan, check_family, check_finite_result,
                                    check_method)
from lorahub_cli.merge.record import MERGE_KEY, merge_metadata, read_merge_record

DEFAULT_DENSITY = 0.2   # the TIES paper's k = 20 %

__all__ = ["DEFAULT_DENSITY", "MERGE_KEY", "METHODS", "MergeSource", "check_family", "default_rank", "merge",
           "read_merge_record"]


def default_rank(adapters: Sequence[CanonicalAdapter]) -> int:
    """The largest rank of any module of any input (the compressed methods' default target)."""
    ranks = [pair.rank for a in adapters for pair in a.modules.values()]
    return max(ranks) if ranks else 1


def merge(adapters: Sequence[CanonicalAdapter], weights: Optional[Sequence[float]] = None, method: str = "stack",
          rank: Optional[int] = None, *, density: Optional[float] = None,
          sources: Optional[Sequence[MergeSource]] = None, dtype: Any = None, compute_dtype: Any = None,
          progress: Optional[Callable[[int], None]] = None) -> CanonicalAdapter:
    """Merge ``adapters`` with ``weights`` (default 1 each) by ``method``.

    ``rank`` (svd, ties; default: the largest input rank) caps each module's rank. ``density`` (ties;
    default 0.2) is the fraction of each update's entries kept. ``sources`` name the inputs in errors and
    in the output's metadata. ``dtype`` is the output dtype (default: the inputs' dtype, promoted if they
    differ); ``compute_dtype`` the arithmetic's (default float64). ``progress(n)`` is called as modules finish.
    Raises UsageError for bad arguments, Incompatible for inputs that cannot be merged, NonFinite for NaN/inf.
    """
    import torch

    from lorahub_cli.merge.prune import ties_module
    from lorahub_cli.merge.stack import stack_module
    from lorahub_cli.merge.svd import svd_module

    check_method(method, rank, density)
    weights = [1.0] * len(adapters) if weights is None else list(weights)
    sources = list(sources) if sources is not None else [MergeSource(f"input {i + 1}") for i in range(len(adapters))]
    if len(sources) != len(adapters):
        raise UsageError(f"{len(sources)} sources for {len(adapters)} adapters")
    plan = build_plan(adapters, weights, [s.name for s in sources], dtype)
    compute = compute_dtype if compute_dtype is not None else torch.float64
    target = rank if rank is not None else (default_rank(adapters) if method != "stack" else None)
    if method == "ties" and density is None:
        density = DEFAULT_DENSITY

    modules = {}
    cuts = {}
    with torch.no_grad(), _one_thread(method != "ties"):
        for module in plan.modules:
            if method == "stack":
                modules[module.key] = stack_module(module, out_dtype=plan.dtype, compute_dtype=compute)
            elif method == "svd":
                modules[module.key], cuts[module.key] = svd_module(module, target, out_dtype=plan.dtype,
                                                                   compute_dtype=compute)
            else:
                modules[module.key], cuts[module.key] = ties_module(module, target, density, out_dtype=plan.dtype,
                                                                    compute_dtype=compute)
            if progress is not None:
                progress(1)
    check_finite_result(modules, [s.name for s in sources], weights)
    metadata = merge_metadata(adapters, weights, sources, method=method, rank=target, density=density,
                              family=plan.family, cuts=cuts, ranks=[p.rank for p in modules.values()])
    return CanonicalAdapter(family=plan.family, modules=modules, tokens=plan.tokens, metadata=metadata)


@contextmanager
def _one_thread(enabled: bool) -> Iterator[None]:
    """stack and svd are thousands of small matmul / QR / SVD calls; torch's per-call thread fork/join costs
    more than the work, and on a busy machine far more (one merge: 0.6 s on one thread, 7 s on two, on a loaded
    2-core box). ties keeps the threads for its dense SVDs. The setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if enabled and before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
