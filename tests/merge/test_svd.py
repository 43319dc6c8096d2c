"""`svd`: per module, the Eckart-Young optimal rank-k approximation of the weighted sum, found from factors."""

from __future__ import annotations

import json

import pytest
import torch

from lorahub_cli.merge import merge
from tests.merge.helpers import dense_sum, fixture_adapter, flat_delta, rel_err

# real SD1.5 layers of every kind: self- and cross-attention, a text-encoder projection, a 3x3 conv, a 1x1 conv
ONLY = ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
        "unet.down_blocks.0.resnets.0.conv1",
        "unet.down_blocks.0.attentions.0.proj_in"]
WEIGHTS = [0.8, 1.1, -0.6]


@pytest.fixture(scope="module")
def three():
    return [fixture_adapter("sd15", "locon", rank=8, alpha=4, seed=21, only=ONLY),
            fixture_adapter("sd15", "locon", rank=4, alpha=8, seed=22, only=ONLY),
            fixture_adapter("sd15", "locon", rank=2, alpha=1, seed=23, only=ONLY)]


@pytest.mark.parametrize("rank", [1, 6])
def test_error_is_the_optimal_truncation_error(three, rank):
    merged = merge(three, WEIGHTS, method="svd", rank=rank)
    assert set(merged.modules) == set(ONLY)
    for key in ONLY:
        target = dense_sum(three, WEIGHTS, key)
        s = torch.linalg.svdvals(target)
        optimal = float(torch.sqrt((s[rank:] ** 2).sum()))
        got = float(torch.linalg.norm(target - flat_delta(merged.modules[key])))
        assert optimal / float(torch.linalg.norm(target)) > 1e-3      # the cut really loses something
        assert abs(got - optimal) <= 1e-6 * optimal, key
        assert merged.modules[key].rank == rank and merged.modules[key].scale == 1.0
        # the kept singular values are the dense sum's largest ones
        kept = torch.linalg.svdvals(flat_delta(merged.modules[key]))[:rank]
        assert torch.allclose(kept, s[:rank], rtol=1e-10, atol=0)


def test_conv_output_keeps_the_kernel(three):
    merged = merge(three, WEIGHTS, method="svd", rank=5)
    conv = merged.modules["unet.down_blocks.0.resnets.0.conv1"]
    assert tuple(conv.down.shape) == (5, 320, 3, 3) and tuple(conv.up.shape) == (320, 5, 1, 1)


def test_rank_defaults_to_the_largest_input_rank(three):
    merged = merge(three, WEIGHTS, method="svd")
    assert {p.rank for p in merged.modules.values()} == {8}
    assert json.loads(merged.metadata["lorahub.merge"])["rank"] == 8


def test_rank_at_least_the_stacked_rank_is_exact(three):
    merged = merge(three, WEIGHTS, method="svd", rank=64)
    for key in ONLY:
        assert merged.modules[key].rank == 8 + 4 + 2       # never more than the sum can hold
        assert rel_err(flat_delta(merged.modules[key]), dense_sum(three, WEIGHTS, key)) < 1e-13
    assert json.loads(merged.metadata["lorahub.merge"])["truncation"]["relative_error"] < 1e-7


def test_one_adapter_at_its_own_rank_is_reproduced():
    a = fixture_adapter("sd15", "kohya", rank=8, alpha=3, seed=24)
    merged = merge([a], [1.0], method="svd", rank=8)
    assert set(merged.modules) == set(a.modules)
    for key, pair in a.modules.items():
        assert merged.modules[key].rank == 8
        assert rel_err(flat_delta(merged.modules[key]), flat_delta(pair)) < 1e-12


def test_recorded_truncation_error_matches_the_measured_one(three):
    merged = merge(three, WEIGHTS, method="svd", rank=3)
    record = json.loads(merged.metadata["lorahub.merge"])["truncation"]
    lost = total = 0.0
    worst = ("", 0.0)
    for key in ONLY:
        target = dense_sum(three, WEIGHTS, key)
        err = float(torch.linalg.norm(target - flat_delta(merged.modules[key])))
        lost, total = lost + err ** 2, total + float(torch.linalg.norm(target)) ** 2
        worst = max(worst, (key, err / float(torch.linalg.norm(target))), key=lambda kv: kv[1])
    assert record["relative_error"] == pytest.approx((lost / total) ** 0.5, rel=1e-6)
    assert record["worst_module"] == worst[0]
    assert record["worst_relative_error"] == pytest.approx(worst[1], rel=1e-6)


def test_float32_arithmetic_stays_close_to_float64(three):
    exact = merge(three, WEIGHTS, method="svd", rank=6)
    fast = merge(three, WEIGHTS, method="svd", rank=6, compute_dtype=torch.float32)
    for key in ONLY:
        assert rel_err(flat_delta(fast.modules[key]), flat_delta(exact.modules[key])) < 1e-4


def test_inputs_that_cancel_give_a_zero_update_and_no_error():
    a = fixture_adapter("sd15", "locon", rank=4, seed=25, only=ONLY)
    merged = merge([a, a], [0.5, -0.5], method="svd")
    for key in ONLY:
        pair = merged.modules[key]
        assert torch.isfinite(pair.up).all() and float(flat_delta(pair).abs().max()) < 1e-15
    assert json.loads(merged.metadata["lorahub.merge"])["truncation"]["relative_error"] == 0.0
