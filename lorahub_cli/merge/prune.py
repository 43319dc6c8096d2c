"""TIES merging (Yadav et al. 2023, arXiv 2306.01708) of LoRA updates, per module, then the best rank-k fit.

Well defined for LoRAs only on the updates themselves, so each input's task vector here is its dense update
``t_i = w_i * alpha_i / r_i * up_i @ down_i`` (weights applied first, so a negative weight votes with its
sign flipped). Per module:
  1. trim: keep the ``k = max(1, round(density * numel))`` entries of each t_i largest in magnitude;
  2. elect: per entry, the sign of the sum of the trimmed values (a zero sum elects +);
  3. disjoint mean: per entry, the mean of the trimmed values that are non-zero and carry the elected sign
     (entries no input keeps stay 0).
The result is generally full rank, so it is then cut to the best rank-k approximation (dense SVD). PEFT's
``add_weighted_adapter(combination_type="ties")`` instead trims and averages the A and B factors
separately, which is not TIES on the updates (perf.md §3.1).

Cost: this builds every dense update (out x in per input), like kohya's svd_merge_lora; use it for what it
promises, not for speed.
"""

from __future__ import annotations

from typing import Any

from lorahub_cli.canonical import LoraPair
from lorahub_cli.merge.plan import ModulePlan
from lorahub_cli.merge.svd import Truncation, to_pair, truncate


def trim_count(numel: int, density: float) -> int:
    return max(1, min(numel, round(density * numel)))


def trim(task: Any, density: float) -> Any:
    """``task`` with all but its ``trim_count`` largest-magnitude entries set to zero."""
    import torch

    flat = task.reshape(-1)
    keep = torch.topk(flat.abs(), trim_count(flat.numel(), density), sorted=False).indices
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(task.shape)


def ties_dense(module: ModulePlan, density: float, compute_dtype: Any) -> Any:
    """The TIES-merged update of one module as a dense [out, in*kh*kw] matrix."""
    import torch

    total = None
    kept = []
    for term in module.terms:
        task = term.coef * (term.pair.up.reshape(module.rows, -1).to(compute_dtype)
                            @ term.pair.down.reshape(term.pair.rank, -1).to(compute_dtype))
        task = trim(task, density)
        kept.append(task)
        total = task.clone() if total is None else total.add_(task)
    elected = torch.where(total >= 0, 1.0, -1.0).to(compute_dtype)
    summed = torch.zeros_like(elected)
    count = torch.zeros_like(elected)
    for task in kept:
        agree = torch.sign(task) == elected
        summed.add_(torch.where(agree, task, 0.0))
        count.add_(agree.to(compute_dtype))
    return summed / count.clamp(min=1.0)


def ties_module(module: ModulePlan, rank: int, density: float, *, out_dtype: Any,
                compute_dtype: Any) -> tuple[LoraPair, Truncation]:
    import torch

    dense = ties_dense(module, density, compute_dtype)
    left, s, right_h = torch.linalg.svd(dense, full_matrices=False)
    up, down, cut = truncate(left, s, right_h, rank)
    return to_pair(up, down, module.shape, out_dtype), cut
