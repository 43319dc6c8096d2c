"""`lora resize`: kohya's criteria from the factors, a new library entry linked to its source."""

from __future__ import annotations

import pytest
import torch

from lorahub_cli.lycoris.lowrank import Criterion, choose_rank, pair_svd
from tests.fixtures.adapters import write_adapter


def _kohya_rank(s: torch.Tensor, method: str, value: float, cap: int) -> int:
    """kohya's resize_lora.py rank_resize, written out again from its definition (dense singular values)."""
    if method == "sv_ratio":
        k = int(torch.sum(s > s[0] / value)) - 1
    elif method == "sv_cumulative":
        k = int(torch.searchsorted(torch.cumsum(s, 0) / s.sum(), value))
    else:
        k = int(torch.searchsorted(torch.cumsum(s ** 2, 0) / (s ** 2).sum(), value ** 2))
    k = max(0, min(k, len(s) - 1)) + 1
    return 1 if s[0] <= 1e-6 else min(k, cap)


@pytest.mark.parametrize("method, value", [("sv_fro", 0.9), ("sv_fro", 0.5), ("sv_ratio", 4.0),
                                           ("sv_cumulative", 0.7)])
def test_ranks_match_kohyas_dense_choice(method, value):
    g = torch.Generator().manual_seed(5)
    for out, inp, r in ((320, 768, 16), (640, 960, 32), (64, 576, 8)):
        decay = torch.logspace(0, -2, r, dtype=torch.float64)
        up = torch.randn(out, r, generator=g, dtype=torch.float64) * decay
        down = torch.randn(r, inp, generator=g, dtype=torch.float64)
        _, s, _ = pair_svd(up, down)
        dense = torch.linalg.svdvals(up @ down)
        assert torch.allclose(s, dense[:r], rtol=1e-9, atol=1e-12)
        assert choose_rank(s, Criterion(method, value, 64)) == _kohya_rank(dense, method, value, 64)


@pytest.fixture
def library_entry(tmp_home, run_cli, tmp_path):
    src = write_adapter(tmp_path / "style.safetensors", "sd15", "kohya", rank=8, alpha=4.0, components=["unet"])
    res = run_cli("add", str(src), "--name", "style", "--json")
    assert res.returncode == 0, res.stderr
    return src


def test_resize_makes_a_linked_entry_with_a_table(library_entry, run_cli):
    res = run_cli("resize", "style", "--sv-fro", "0.8", "--rank", "6", "--json")
    assert res.returncode == 0, res.stderr
    data = res.json()
    assert data["criterion"] == "sv-fro 0.8 (at most 6)"
    assert data["entry"]["name"] == "style-svfro0.8"
    assert data["size_after"] < data["size_before"]
    for row in data["layers"]:   # the asked fraction is kept, unless the cap stopped it first
        assert 1 <= row["rank_after"] <= 6 and (row["fro_retained"] >= 0.8 - 1e-9 or row["rank_after"] == 6)
    shown = run_cli("show", "style-svfro0.8", "--json").json()
    original = run_cli("show", "style", "--json").json()
    assert original["sha256"] in str(shown)   # provenance names the entry it was resized from
    human = run_cli("resize", "style", "--rank", "2", "--name", "style-r2")
    assert human.returncode == 0 and "size:" in human.stdout and "8 -> 2" in human.stdout


@pytest.mark.parametrize("args", [[], ["--rank", "0"], ["--sv-cumulative", "1.5"], ["--sv-fro", "-1"]])
def test_bad_criteria_are_usage_errors(library_entry, run_cli, args):
    res = run_cli("resize", "style", *args, "--json")
    assert res.returncode == 2, res.stdout
    assert res.json()["error"]["code"] == "usage"
    assert run_cli("list", "--json").json().__len__() == 1
