"""`lora convert --to lora --rank/--sv-*`: the best rank-k LoRA of each LyCORIS layer, from its factors."""

from __future__ import annotations

import pytest
import torch

from lorahub_cli.convert import convert_file
from lorahub_cli.convert.load import read_source, to_canonical
from lorahub_cli.lycoris.lowrank import criterion
from tests.lycoris.forms import reference, write_file


@pytest.fixture(scope="module")
def lokr(tmp_path_factory):
    path = tmp_path_factory.mktemp("lokr") / "lokr.safetensors"
    return path, write_file(path, "lokr-both", rank=4, alpha=2.0, seed=3)


def test_lokr_to_lora_error_is_the_eckart_young_optimum(lokr, tmp_path):
    """Per layer: the written rank-8 LoRA is as close to the LoKr update as any rank-8 matrix can be."""
    path, truth = lokr
    result = convert_file(path, tmp_path / "out.safetensors", to="lora", resize=criterion(rank=8))
    assert result.target == "kohya" and result.resize["criterion"] == "rank 8"
    written = to_canonical(read_source(tmp_path / "out.safetensors"))[0]
    layers = {r["module"]: r for r in result.resize["layers"]}
    for key, (roles, alpha) in truth.items():
        dense = reference(roles, alpha)
        if min(dense.shape) > 1000:   # the 1280 x 5120 ff layer: its dense float64 spectrum costs the suite ~20 s
            continue
        gram = dense @ dense.t() if dense.shape[0] <= dense.shape[1] else dense.t() @ dense
        s = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt()   # the singular values, largest first
        optimum = float(s[8:].pow(2).sum().sqrt())
        pair = written.modules[key]
        assert pair.rank == min(8, int((s > s[0] * 1e-6).sum()))
        got = float((dense - pair.delta(torch.float64).reshape(dense.shape)).norm())
        assert got == pytest.approx(optimum, rel=1e-4, abs=1e-6 * float(s[0])), key
        assert layers[key]["error"] == pytest.approx(optimum, rel=1e-4, abs=1e-6 * float(s[0])), key


def test_sv_fro_keeps_the_asked_fraction(lokr, tmp_path):
    path, truth = lokr
    result = convert_file(path, tmp_path / "fro.safetensors", to="lora", resize=criterion(sv_fro=0.9))
    assert result.resize["layers"]   # the checks below hold for every layer, and there are layers
    for row in result.resize["layers"]:
        assert row["fro_retained"] >= 0.9 - 1e-9
        assert 1 <= row["rank_after"] <= row["rank_before"]


@pytest.mark.parametrize("args, flag", [(["--rank", "0"], "--rank"), (["--sv-fro", "1.5"], "--sv-fro"),
                                        (["--sv-fro", "0"], "--sv-fro"), (["--sv-ratio", "-2"], "--sv-ratio"),
                                        (["--sv-fro", "0.5", "--sv-ratio", "2"], "one of")])
def test_bad_criteria_are_usage_errors_and_write_nothing(run_cli, lokr, tmp_path, args, flag):
    path, _ = lokr
    out = tmp_path / "x.safetensors"
    res = run_cli("convert", str(path), "--to", "lora", "-o", str(out), *args, "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert flag in res.json()["error"]["message"]
    assert not out.exists()


def test_cli_reports_each_layer(run_cli, lokr, tmp_path):
    path, truth = lokr
    res = run_cli("convert", str(path), "--to", "lora", "--rank", "4", "-o", str(tmp_path / "o.safetensors"))
    assert res.returncode == 0, res.stderr
    assert "rank 4" in res.stdout and "largest relative error left" in res.stdout
