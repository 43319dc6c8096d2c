"""`lora grid` on the tiny SD pipeline: one base load, labelled grid, JSON sidecar, HTML contact sheet, and any
cell made again by `lora generate --from` bit for bit."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lorahub_cli.pipeline.grid import GridSpec, choose_axes, plan


def test_axes_are_the_two_that_vary_or_the_chosen_ones():
    spec = GridSpec(base="b", adapters=["a", "b"], weights=[0, 1], seeds=[1], prompts=["p"])
    assert choose_axes(spec) == ("adapters", "weights")
    spec.rows, spec.cols = "weights", "adapters"
    assert choose_axes(spec) == ("weights", "adapters")


@pytest.mark.parametrize("kw, message", [
    ({"seeds": [1, 2], "weights": [0, 1], "adapters": ["a", "b"]}, "seeds also vary"),
    ({"rows": "colours"}, "unknown grid axis"),
    ({"rows": "seeds", "cols": "seeds"}, "both seeds"),
    ({"prompts": []}, "give a prompt"),
])
def test_bad_axes_are_usage_errors(kw, message):
    from lorahub_cli.errors import UsageError

    spec = GridSpec(base="b", **{"adapters": ["a"], "seeds": [1], "prompts": ["p"], **kw})
    with pytest.raises(UsageError, match=message):
        plan(spec)


def test_cells_on_the_adapters_axis_have_one_adapter_each_and_weight_zero_is_the_bare_base():
    spec = GridSpec(base="b", adapters=["a", "b:0.7"], weights=[0, 0.5], seeds=[3], prompts=["p"])
    rows, cols, cells = plan(spec)
    assert (rows, cols) == ("adapters", "weights")
    assert [c.adapters for c in cells] == [{}, {"a": 0.5}, {}, {"b": 0.5}]
    # both axes taken by others: the adapters are stacked in every cell, each at its own weight
    rows, cols, stacked = plan(GridSpec(base="b", adapters=["a", "b:0.7"], seeds=[1, 2], prompts=["p", "q"],
                                        rows="seeds", cols="prompts"))
    assert all(c.adapters == {"a": 1.0, "b": 0.7} for c in stacked)
    assert [(c.seed, c.prompt) for c in stacked] == [(1, "p"), (1, "q"), (2, "p"), (2, "q")]


def test_grid_writes_image_sidecar_sheet_and_remakeable_cells(lib_env, run_cli, tmp_path):
    out = tmp_path / "g" / "grid.png"
    result = run_cli("grid", "--base", str(lib_env.base), "-a", "style", "-a", "detail", "--weights", "0,1",
                     "--seeds", "5", "--prompt", "lower newer", "--steps", "2", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    data = result.json()
    assert data["rows"] == {"axis": "adapters", "labels": ["style", "detail"]}
    assert data["cols"] == {"axis": "weights", "labels": ["weight 0", "weight 1"]}
    cell_w, cell_h = Image.open(data["cells"][0]["file"]).size
    grid = Image.open(out)
    assert grid.size == (160 + 2 * cell_w, 24 + 2 * cell_h)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert [(c["row"], c["col"]) for c in sidecar["cells"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    recipes = {(c["row"], c["col"]): c["recipe"] for c in sidecar["cells"]}
    assert recipes[(0, 0)]["adapters"] == [] and recipes[(1, 1)]["adapters"][0]["name"] == "detail"
    assert all(r["seed"] == 5 and r["prompt"] == "lower newer" for r in recipes.values())
    sheet = out.with_suffix(".html").read_text()
    assert sheet.count("<details>") == 4 and "lora generate --from" in sheet and "grid-cells/r01-c01.png" in sheet
    # weight 0 cells are the bare base: the same image on both rows
    assert Image.open(data["cells"][0]["file"]).tobytes() == Image.open(data["cells"][2]["file"]).tobytes()
    assert Image.open(data["cells"][1]["file"]).tobytes() != Image.open(data["cells"][3]["file"]).tobytes()
    # any cell is made again exactly from its PNG
    again = run_cli("generate", "--from", data["cells"][3]["file"], "-o", str(tmp_path / "again"), "--json")
    assert again.returncode == 0, again.stderr
    remade = Image.open(again.json()[0]["path"])
    assert remade.tobytes() == Image.open(data["cells"][3]["file"]).tobytes()
    # the grid is not replaced without --force
    refused = run_cli("grid", "--base", str(lib_env.base), "-a", "style", "--seeds", "5", "--prompt", "lower",
                      "--steps", "2", "-o", str(out), "--json")
    assert refused.returncode == 1 and refused.json()["error"]["code"] == "already-exists"
