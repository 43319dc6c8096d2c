"""Finite inputs and finite weights can still merge into NaN or infinity (issue 13 M2): `merge A:1e308 B:1e308`
wrote a file of infinities. The merged pairs are checked before anything is written; the refusal is
`non-finite` and leaves no file behind."""

from __future__ import annotations

import pytest
import torch

from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from lorahub_cli.errors import NonFinite
from lorahub_cli.merge import merge
from tests.fixtures.adapters import write_adapter
from tests.merge.test_plan import Q, small


@pytest.mark.parametrize("method", ["stack", "svd", "ties"])
def test_huge_weights_overflow_is_refused(method):
    with pytest.raises(NonFinite, match="too large") as err:
        merge([small(seed=1), small(seed=2)], [1e308, 1e308], method)
    assert err.value.code == "non-finite" and err.value.exit_code == 1


def test_a_sum_past_fp16_is_refused_when_fp16_is_asked():
    a = small(seed=3)
    with pytest.raises(NonFinite, match="float16"):
        merge([a], [1e6], dtype=torch.float16)
    assert merge([a], [1e6], dtype=torch.float32).modules   # the same merge fits in fp32


def test_finite_factors_whose_update_overflows_are_refused():
    # up and down are each representable; their product (what any loader computes) is not
    big = torch.full((4, 1), 1e30)
    pair = LoraPair(down=big.T.clone(), up=big.clone(), alpha=None)
    adapter = CanonicalAdapter(family="sd1", modules={Q: pair})
    with pytest.raises(NonFinite, match=Q):
        merge([adapter], [1.0], dtype=torch.float32)


def test_ordinary_merges_pass_the_check():
    merged = merge([small(seed=4), small(seed=5)], [0.7, -0.5], "svd", rank=4)
    assert all(bool(torch.isfinite(p.up).all()) for p in merged.modules.values())


def test_lora_merge_with_overflowing_weights_writes_nothing(run_cli, tmp_home, tmp_path):
    a = write_adapter(tmp_path / "a.safetensors", "sd15", "kohya", rank=2, alpha=1.0, seed=1, components=["unet"])
    b = write_adapter(tmp_path / "b.safetensors", "sd15", "kohya", rank=2, alpha=1.0, seed=2, components=["unet"])
    out = tmp_path / "out" / "merged.safetensors"
    out.parent.mkdir()
    res = run_cli("merge", f"{a}:1e308", f"{b}:1e308", "-o", out, "--json")
    assert res.returncode == 1 and '"non-finite"' in res.stdout + res.stderr, res
    assert list(out.parent.iterdir()) == []
