"""`ties`: TIES merging of the updates (trim, elect sign, disjoint mean), then the best rank-k approximation.

The reference below is written entry by entry in numpy from the paper's definitions, independently of the
engine's torch code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lorahub_cli.merge import merge
from lorahub_cli.merge.plan import build_plan
from lorahub_cli.merge.prune import ties_dense, trim_count
from tests.merge.helpers import fixture_adapter, flat_delta, rel_err

ONLY = ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
        "unet.down_blocks.0.resnets.0.conv1"]
WEIGHTS = [1.0, 0.7, -0.4]


def reference_ties(tasks: list[np.ndarray], density: float) -> np.ndarray:
    trimmed = []
    for t in tasks:
        k = max(1, round(density * t.size))
        threshold = np.sort(np.abs(t), axis=None)[-k]            # random floats: no equal magnitudes
        trimmed.append(np.where(np.abs(t) >= threshold, t, 0.0))
    stacked = np.stack(trimmed)
    elected = np.where(stacked.sum(axis=0) >= 0, 1.0, -1.0)
    agree = (stacked != 0) & (np.sign(stacked) == elected)
    count = agree.sum(axis=0)
    return np.where(count > 0, (stacked * agree).sum(axis=0) / np.maximum(count, 1), 0.0)


@pytest.fixture(scope="module")
def three():
    return [fixture_adapter("sd15", "locon", rank=4, alpha=2, seed=31, only=ONLY),
            fixture_adapter("sd15", "locon", rank=8, alpha=8, seed=32, only=ONLY),
            fixture_adapter("sd15", "locon", rank=2, seed=33, only=ONLY)]


def tasks_of(adapters, weights, key):
    return [w * flat_delta(a.modules[key]).numpy() for a, w in zip(adapters, weights)]


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_dense_ties_matches_the_definition(three, density):
    plan = build_plan(three, WEIGHTS, ["a", "b", "c"])
    for module in plan.modules:
        got = ties_dense(module, density, torch.float64).numpy()
        expected = reference_ties(tasks_of(three, WEIGHTS, module.key), density)
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-18)


def test_kept_entries_carry_the_elected_sign_and_come_from_trimmed_inputs(three):
    density = 0.1
    plan = build_plan(three, WEIGHTS, ["a", "b", "c"])
    for module in plan.modules:
        tasks = tasks_of(three, WEIGHTS, module.key)
        got = ties_dense(module, density, torch.float64).numpy()
        k = trim_count(tasks[0].size, density)
        kept_any = np.zeros(got.shape, dtype=bool)
        for t in tasks:
            kept_any |= np.abs(t) >= np.sort(np.abs(t), axis=None)[-k]
        assert not got[~kept_any].any()                 # nothing survives that every input trimmed away
        assert np.count_nonzero(got) <= 3 * k


def test_merged_factors_are_the_optimal_rank_cut_of_the_ties_update(three):
    rank, density = 5, 0.2
    merged = merge(three, WEIGHTS, method="ties", rank=rank, density=density)
    for key in ONLY:
        target = torch.from_numpy(reference_ties(tasks_of(three, WEIGHTS, key), density))
        s = torch.linalg.svdvals(target)
        optimal = float(torch.sqrt((s[rank:] ** 2).sum()))
        got = float(torch.linalg.norm(target - flat_delta(merged.modules[key])))
        assert abs(got - optimal) <= 1e-6 * optimal
    record = json.loads(merged.metadata["lorahub.merge"])
    assert (record["method"], record["rank"], record["density"]) == ("ties", rank, density)


def test_one_adapter_at_full_density_is_reproduced():
    a = fixture_adapter("sd15", "locon", rank=4, alpha=2, seed=34, only=ONLY)
    merged = merge([a], [1.0], method="ties", rank=4, density=1.0)
    for key in ONLY:
        assert merged.modules[key].rank == 4
        assert rel_err(flat_delta(merged.modules[key]), flat_delta(a.modules[key])) < 1e-12


def test_full_density_with_agreeing_signs_is_the_mean_of_updates():
    """Two scaled copies of one update agree everywhere: TIES gives their mean, not their sum."""
    a = fixture_adapter("sd15", "kohya", rank=4, seed=35, only=ONLY[:1])
    merged = merge([a, a], [1.0, 3.0], method="ties", rank=4, density=1.0)
    assert rel_err(flat_delta(merged.modules[ONLY[0]]), 2.0 * flat_delta(a.modules[ONLY[0]])) < 1e-12
