"""`stack`: the merged update of every module is exactly sum_i w_i * scale_i * up_i @ down_i."""

from __future__ import annotations

import json

import pytest
import torch

from lorahub_cli.merge import merge
from tests.merge.helpers import dense_sum, fixture_adapter, flat_delta, rel_err

WEIGHTS = [0.7, -0.5, 1.2]


@pytest.fixture(scope="module")
def three():
    """SD1.5 adapters of different ranks and alphas; the third adapts only the U-Net (diffusers-old era)."""
    return [fixture_adapter("sd15", "kohya", rank=8, alpha=3, seed=1),
            fixture_adapter("sd15", "diffusers", rank=4, alpha=8, seed=2),
            fixture_adapter("sd15", "diffusers-old", rank=2, seed=3, components=["unet"])]


def test_every_module_equals_the_weighted_sum_of_updates(three):
    merged = merge(three, WEIGHTS)
    assert set(merged.modules) == set().union(*(a.modules for a in three))
    worst = max(rel_err(flat_delta(pair), dense_sum(three, WEIGHTS, key)) for key, pair in merged.modules.items())
    assert worst < 1e-14


def test_rank_is_the_sum_of_ranks_and_alphas_are_folded_in(three):
    merged = merge(three, WEIGHTS)
    for key, pair in merged.modules.items():
        expected = sum(a.modules[key].rank for a in three if key in a.modules)
        assert pair.rank == expected
        assert pair.alpha == expected and pair.scale == 1.0


def test_metadata_records_the_resulting_ranks(three):
    merged = merge(three, WEIGHTS)
    record = json.loads(merged.metadata["lorahub.merge"])
    ranks = sorted({p.rank for p in merged.modules.values()})
    assert record["ranks"] == ranks and record["rank"] == ranks[-1] == 8 + 4 + 2   # not null: the largest rank


def test_modules_of_only_some_inputs_are_kept_with_their_weight(three):
    merged = merge(three, WEIGHTS)
    te_key = "text_encoder.text_model.encoder.layers.3.self_attn.q_proj"
    assert te_key not in three[2].modules and te_key in merged.modules       # the third has no text encoder
    expected = WEIGHTS[0] * flat_delta(three[0].modules[te_key]) + WEIGHTS[1] * flat_delta(three[1].modules[te_key])
    assert rel_err(flat_delta(merged.modules[te_key]), expected) < 1e-14
    assert merged.modules[te_key].rank == 8 + 4


def test_one_adapter_with_weight_one_is_reproduced():
    a = fixture_adapter("sd15", "kohya", rank=8, alpha=3, seed=4)
    merged = merge([a], [1.0])
    assert set(merged.modules) == set(a.modules)
    for key, pair in a.modules.items():
        out = merged.modules[key]
        assert out.rank == pair.rank
        assert torch.equal(out.down, pair.down)
        assert rel_err(flat_delta(out), flat_delta(pair)) < 1e-15


def test_conv_modules_stack_with_their_kernels():
    only = ["unet.down_blocks.0.resnets.0.conv1", "unet.down_blocks.0.attentions.0.proj_in"]
    a = fixture_adapter("sd15", "locon", rank=4, alpha=2, seed=5, only=only)
    b = fixture_adapter("sd15", "locon", rank=6, alpha=6, seed=6, only=only)
    merged = merge([a, b], [1.5, 0.25])
    conv = merged.modules["unet.down_blocks.0.resnets.0.conv1"]
    assert tuple(conv.down.shape) == (10, 320, 3, 3) and tuple(conv.up.shape) == (320, 10, 1, 1)
    for key in only:
        assert rel_err(flat_delta(merged.modules[key]), dense_sum([a, b], [1.5, 0.25], key)) < 1e-14


def test_linear_and_1x1_conv_factors_of_one_layer_stack_as_a_conv():
    key = "unet.down_blocks.0.attentions.0.proj_in"
    a = fixture_adapter("sd15", "locon", rank=4, seed=7, only=[key])
    b = fixture_adapter("sd15", "locon", rank=2, seed=8, only=[key])
    pb = b.modules[key]
    pb.up, pb.down = pb.up.reshape(320, 2), pb.down.reshape(2, 320)      # some trainers store 1x1 convs 2-d
    merged = merge([a, b], [1.0, 2.0])
    out = merged.modules[key]
    assert tuple(out.up.shape) == (320, 6, 1, 1) and tuple(out.down.shape) == (6, 320, 1, 1)
    assert rel_err(flat_delta(out), dense_sum([a, b], [1.0, 2.0], key)) < 1e-14


def test_output_dtype_follows_the_inputs_and_can_be_chosen():
    only = ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    half = fixture_adapter("sd15", "kohya", rank=4, seed=9, dtype="float16", only=only)
    full = fixture_adapter("sd15", "diffusers", rank=4, seed=10, dtype="float32", only=only)
    assert merge([half, half]).modules[only[0]].up.dtype == torch.float16
    assert merge([half, full]).modules[only[0]].up.dtype == torch.float32
    out = merge([half, full], dtype=torch.bfloat16).modules[only[0]]
    assert out.up.dtype == out.down.dtype == torch.bfloat16


def test_zero_weight_drops_an_input_but_records_it():
    a = fixture_adapter("sd15", "kohya", rank=4, seed=11, components=["unet"])
    b = fixture_adapter("sd15", "diffusers", rank=4, seed=12)
    merged = merge([a, b], [1.0, 0.0])
    assert not any(k.startswith("text_encoder.") for k in merged.modules)    # only b adapted the text encoder
    assert all(p.rank == 4 for p in merged.modules.values())
    assert '"weight": 0.0' in merged.metadata["lorahub.merge"]


def test_embedded_tokens_are_kept():
    a = fixture_adapter("sd15", "kohya", rank=2, seed=13, only=[])
    b = fixture_adapter("sd15", "kohya", rank=2, seed=14, only=[])
    a.tokens["<s1>"] = torch.ones(768)
    b.tokens["<s2>"] = torch.zeros(768)
    b.tokens["<s1>"] = torch.ones(768)          # the same vector twice is fine
    merged = merge([a, b])
    assert set(merged.tokens) == {"<s1>", "<s2>"}
