"""Recipes carry each adapter's sources; `generate --from IMAGE --install` fetches what the library lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub_cli.errors import BadRecipe
from lorahub_cli.pipeline.recipe import Recipe, png_info, read_recipe
from tests.hubserver import lora_safetensors

WEIGHTS = "pytorch_lora_weights.safetensors"


def _recipe(adapters: list[dict]) -> Recipe:
    return Recipe(prompt="a cat", seed=1, steps=2, guidance=7.0, scheduler="euler", width=64, height=64,
                  base="no-such-base", base_id="o/no-such-base", adapters=adapters)


def _png(path: Path, recipe: Recipe) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(recipe))
    return path


def test_a_library_adapter_in_a_recipe_carries_its_hub_source(hub, hf_env, tmp_path):
    from lorahub_cli.pipeline.adapters import AdapterSpec, resolve
    from lorahub_cli.sources.pull import pull
    from registry.api import Registry

    hub.create_repo("o/detail", {WEIGHTS: lora_safetensors(seed=3)})
    with Registry(home=tmp_path / "lib") as registry:
        pulled = pull("o/detail", registry=registry)
        entry = resolve(AdapterSpec("detail", 0.5), registry).to_recipe()
    (source,) = entry["sources"]
    assert (source["kind"], source["repo"], source["commit"]) == ("hub", "o/detail", pulled.provenance.commit)
    back = read_recipe(_png(tmp_path / "r.png", _recipe([entry])))
    assert back.adapters[0]["sources"] == entry["sources"]


def test_a_recipe_with_a_bad_source_is_a_bad_recipe(tmp_path):
    bad = {"name": "x", "sha256": "a" * 64, "weight": 1.0, "sources": [{"kind": "url", "url": "file:///etc/passwd"}]}
    with pytest.raises(BadRecipe):
        _recipe([bad]).checked()


def test_generate_from_an_image_with_install_fetches_the_missing_adapter_first(hub, hf_env, tmp_path, run_cli):
    from lorahub_cli.sources.pull import pull
    from registry.api import Registry

    hub.create_repo("o/detail", {WEIGHTS: lora_safetensors(seed=4)})
    with Registry(home=tmp_path / "elsewhere") as other:
        pulled = pull("o/detail", registry=other)
    adapter = {"name": "detail", "sha256": pulled.sha256, "weight": 0.8,
               "sources": [{"kind": "hub", "repo": "o/detail", "file": WEIGHTS, "commit": pulled.provenance.commit}]}
    image = _png(tmp_path / "shared.png", _recipe([adapter]))
    home = {"LORAHUB_HOME": str(tmp_path / "new")}
    without = run_cli("generate", "--from", image, "-o", tmp_path / "out", "--json", env=home)
    assert without.returncode != 0 and run_cli("list", "--json", env=home).json() == []
    got = run_cli("generate", "--from", image, "--install", "-o", tmp_path / "out", "--json", env=home)
    # the base does not exist: generation fails after the install, which already brought the adapter in
    assert got.returncode != 0
    assert "fetched detail" in got.stderr
    assert [(a["name"], a["sha256"]) for a in run_cli("list", "--json", env=home).json()] == [("detail", pulled.sha256)]


def test_install_without_from_is_a_usage_error(run_cli):
    got = run_cli("generate", "a cat", "--base", "x", "--install", "--json")
    assert got.returncode == 2
