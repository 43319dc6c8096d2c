"""Exact merge: one pair whose update is the weighted sum of the inputs' updates.

    up = [c_1 up_1 | c_2 up_2 | ...]   (columns)      down = [down_1 ; down_2 ; ...]   (rows)
    up @ down = sum_i c_i up_i @ down_i,   c_i = w_i * alpha_i / r_i

The coefficients are folded into ``up`` and alpha is the stacked rank, so the scale is 1 and any loader
that honours per-module alpha (or assumes alpha = rank) applies exactly this update. The rank is the sum of
the input ranks. kohya's ``--concat`` differs: it keeps the first alpha (dividing by the summed rank) and
squares each ratio (formats.md §1.1).
"""

from __future__ import annotations

from typing import Any

from lorahub_cli.canonical import LoraPair
from lorahub_cli.merge.plan import ModulePlan


def stack_module(module: ModulePlan, *, out_dtype: Any, compute_dtype: Any) -> LoraPair:
    import torch

    ups, downs = [], []
    for term in module.terms:
        # fold in the higher precision, round once to the output dtype
        ups.append((term.pair.up.to(compute_dtype) * term.coef).to(out_dtype))
        downs.append(term.pair.down.to(out_dtype))
    if len(module.shape) == 4:   # a 1x1 conv may come as linear (2-d) factors from some inputs
        ups = [u.reshape(u.shape[0], u.shape[1], 1, 1) for u in ups]
        downs = [d.reshape(d.shape[0], *module.shape[1:]) for d in downs]
    up = torch.cat(ups, dim=1).contiguous()
    down = torch.cat(downs, dim=0).contiguous()
    return LoraPair(down=down, up=up, alpha=float(down.shape[0]))
