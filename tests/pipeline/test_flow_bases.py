"""Flow-matching bases (Flux, SD3) generate with their own Euler sampler: the default noise-prediction sampler
(DPM++ 2M) refuses the sigmas they pass, so before this every `lora generate` on a Flux base crashed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.pipelines import make_tiny_flux_pipeline, make_tiny_sd3_pipeline


@pytest.fixture(scope="module")
def flow_bases(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("flow")
    return {"flux": make_tiny_flux_pipeline(root / "flux"), "sd3": make_tiny_sd3_pipeline(root / "sd3")}


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_a_flow_base_generates_and_its_image_re_makes_itself(flow_bases, family, run_cli, tmp_path):
    first = run_cli("generate", "a cat", "--base", flow_bases[family], "--steps", 2, "--seed", 3,
                    "-o", tmp_path / "a", "--json")
    assert first.returncode == 0, first
    [shot] = first.json()
    assert shot["recipe"]["scheduler"] == "flow-euler"
    again = run_cli("generate", "--from", shot["path"], "-o", tmp_path / "b", "--json")
    assert again.returncode == 0, again
    [rerun] = again.json()
    with Image.open(shot["path"]) as a, Image.open(rerun["path"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    recipe = run_cli("recipe", shot["path"], "--json").json()
    assert recipe["scheduler"] == "flow-euler"


def test_a_sampler_of_the_other_kind_is_a_usage_error(flow_bases, world, run_cli, tmp_path):
    on_flux = run_cli("generate", "a cat", "--base", flow_bases["flux"], "--steps", 2, "--scheduler", "dpm",
                      "-o", tmp_path / "x", "--json")
    assert on_flux.returncode == 2
    error = json.loads(on_flux.stdout)["error"]
    assert error["code"] == "unknown-scheduler" and "flow-euler" in error["message"]
    on_sd = run_cli("generate", "a cat", "--base", world.base, "--steps", 2, "--scheduler", "flow-euler",
                    "-o", tmp_path / "y", "--json")
    assert on_sd.returncode == 2 and json.loads(on_sd.stdout)["error"]["code"] == "unknown-scheduler"
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
