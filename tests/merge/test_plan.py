"""What is refused before any arithmetic, with which error code, and what the output records."""

from __future__ import annotations

import json

import pytest
import torch

from lorahub_cli.errors import Incompatible, NonFinite, UsageError
from lorahub_cli.merge import MergeSource, check_family, merge
from tests.merge.helpers import fixture_adapter

Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def small(family="sd15", fmt="kohya", seed=0, **kw):
    return fixture_adapter(family, fmt, rank=2, seed=seed, targets="attn", only=kw.pop("only", [Q]), **kw)


def test_a_family_mix_names_the_odd_one_out():
    sd15a, sd15b = small(seed=1), small(seed=2)
    xl = fixture_adapter("sdxl", "kohya", rank=2, seed=3, only=[])
    with pytest.raises(Incompatible) as err:
        merge([sd15a, xl, sd15b], sources=[MergeSource("style"), MergeSource("xl-subject"), MergeSource("face")])
    assert err.value.code == "incompatible"
    assert err.value.message.startswith("xl-subject is a sdxl adapter, but style and face are sd1")


def test_unknown_family_joins_a_known_one():
    assert check_family(["unknown", "sd1", "sd1"], ["a", "b", "c"]) == "sd1"
    assert check_family(["unknown"], ["a"]) == "unknown"
    with pytest.raises(Incompatible, match=r"^b is a sd2 adapter, but a is sd1"):
        check_family(["sd1", "sd2", "unknown"], ["a", "b", "c"])


def test_same_module_with_different_shapes_is_incompatible():
    a = small(seed=4)
    b = small(seed=5)
    b.modules[Q].down = torch.zeros(2, 640)
    with pytest.raises(Incompatible, match=r"module unet\..*to_q updates a weight of shape \(320, 320\) in x but "
                                           r"\(320, 640\) in y"):
        merge([a, b], sources=[MergeSource("x"), MergeSource("y")])


def test_conv_kernels_must_agree():
    key = "unet.down_blocks.0.resnets.0.conv1"
    a = fixture_adapter("sd15", "locon", rank=2, seed=6, only=[key])
    b = fixture_adapter("sd15", "locon", rank=2, seed=7, only=[key])
    b.modules[key].down = b.modules[key].down[:, :, :1, :1].contiguous()
    with pytest.raises(Incompatible, match="has a 3x3 conv kernel in input 1 but 1x1 in input 2"):
        merge([a, b])


def test_factors_that_are_not_a_pair_are_refused():
    a = small(seed=8)
    a.modules[Q].up = torch.zeros(320, 3)
    with pytest.raises(Incompatible, match="not a LoRA pair"):
        merge([a])


def test_nan_weights_are_refused():
    a = small(seed=9)
    a.modules[Q].up[0, 0] = float("nan")
    with pytest.raises(NonFinite) as err:
        merge([a, small(seed=10)], method="svd")
    assert err.value.code == "non-finite" and "input 1" in err.value.message


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="average"), "unknown merge method"),
    (dict(method="stack", rank=4), "--rank applies to the svd and ties methods"),
    (dict(method="svd", rank=0), "positive integer"),
    (dict(method="svd", density=0.5), "--density applies to the ties method"),
    (dict(method="ties", density=0.0), r"density must be in \(0, 1\]"),
    (dict(method="ties", density=float("nan")), r"density must be in \(0, 1\]"),
    (dict(weights=[1.0]), "1 weights for 2 adapters"),
    (dict(weights=[1.0, float("inf")]), "finite number"),
    (dict(weights=[0.0, 0.0]), "every input has weight 0"),
])
def test_bad_arguments_are_usage_errors(kwargs, match):
    with pytest.raises(UsageError, match=match) as err:
        merge([small(seed=11), small(seed=12)], **kwargs)
    assert err.value.exit_code == 2


def test_nothing_to_merge_is_a_usage_error():
    with pytest.raises(UsageError, match="nothing to merge"):
        merge([])


def test_a_token_with_two_vectors_is_refused():
    a, b = small(seed=13), small(seed=14)
    a.tokens["<s1>"], b.tokens["<s1>"] = torch.zeros(768), torch.ones(768)
    with pytest.raises(Incompatible, match="<s1>"):
        merge([a, b])


def test_metadata_records_inputs_method_rank_and_family():
    a, b = small(seed=15), small(seed=16)
    a.metadata["modelspec.architecture"] = b.metadata["modelspec.architecture"] = "stable-diffusion-v1-inpainting/lora"
    merged = merge([a, b], [0.5, -1.0], method="svd", rank=2,
                   sources=[MergeSource("style", "ab" * 32), MergeSource("subject", "cd" * 32)])
    record = json.loads(merged.metadata["lorahub.merge"])
    assert record["method"] == "svd" and record["rank"] == 2 and record["family"] == "sd1"
    assert record["ranks"] == sorted({p.rank for p in merged.modules.values()})
    assert record["inputs"] == [{"name": "style", "sha256": "ab" * 32, "weight": 0.5},
                                {"name": "subject", "sha256": "cd" * 32, "weight": -1.0}]
    assert merged.metadata["modelspec.merged_from"] == "style, subject"
    assert merged.metadata["lorahub.family"] == merged.family == "sd1"
    assert merged.metadata["modelspec.architecture"] == "stable-diffusion-v1-inpainting/lora"   # stated by both
    b.metadata.pop("modelspec.architecture")
    assert merge([a, b]).metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"      # the family's
