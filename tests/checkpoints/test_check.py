"""`lora check`, `lora list --compatible-with` and the generate pre-check against a single-file base give the same
verdicts and coverage as against the equivalent diffusers folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorahub_cli.archs import base_components, config_dir, module_table
from lorahub_cli.bases import resolve_base
from lorahub_cli.compat.engine import check
from tests.fixtures.adapters import FIXTURE_CACHE
from tests.pipeline.helpers import random_adapter, write_diffusers


def _same(a, b) -> dict:
    one, two = a.to_dict(), b.to_dict()
    one.pop("base"), two.pop("base")
    assert one == two
    return one


@pytest.mark.parametrize("alias", ["sd15", "sd21", "sdxl", "flux"])
def test_verdicts_equal_the_folders(home, adapters, base_folders, real_files, alias):
    """Every generated adapter (kohya, PEFT, LoCon, text-encoder-only, Flux BFL names) against a real-shaped
    checkpoint and against the same base as a folder of configs: identical results, mismatches included."""
    folder = base_folders.get(alias, config_dir(alias))
    on_file, on_folder = resolve_base(str(real_files[alias])), resolve_base(str(folder))
    verdicts = set()
    for name, path in adapters.items():
        result = _same(check(str(path), on_file), check(str(path), on_folder))
        verdicts.add(result["verdict"])
    assert len(verdicts) > 1   # the set holds both fitting and unfitting adapters for each base


def _tiny_adapters(folder: Path, root: Path) -> dict[str, Path]:
    tables = {c: module_table(folder, c, cache_dir=FIXTURE_CACHE) for c in base_components(folder)}
    shapes = {f"{c}.{n}": (l.out_features, l.in_features, *(l.kernel or ())) for c, t in tables.items()
              for n, l in t.items()}
    attn = [k for k in shapes if ".attn" in k and k.startswith("unet.")]
    te = [k for k in shapes if k.startswith("text_encoder.")]
    conv = [k for k in shapes if k.endswith("resnets.0.conv1")][:1]
    wrong = dict(shapes)
    wrong[attn[0]] = (shapes[attn[0]][0] + 8, shapes[attn[0]][1])   # one layer of another width
    root.mkdir(parents=True, exist_ok=True)
    return {"fits": write_diffusers(random_adapter(shapes, attn + te + conv, rank=4, alpha=8.0, seed=1),
                                    root / "fits.safetensors"),
            "wrong": write_diffusers(random_adapter(wrong, attn, rank=2, alpha=None, seed=2),
                                     root / "wrong.safetensors")}


@pytest.mark.parametrize("name", ["sd", "sdxl"])
def test_tiny_checkpoint_checks_like_its_folder(home, tiny, tmp_path, name):
    """A tiny pipeline and the same layers written as a single file in the original (LDM / OpenCLIP) layout."""
    on_file = resolve_base(str(tiny[name]["checkpoint"]))
    on_folder = resolve_base(str(tiny[name]["folder"]))
    assert on_file.family == on_folder.family and on_file.components == on_folder.components
    for component in on_folder.components:
        assert module_table(on_file.folder, component) == module_table(on_folder.folder, component)
    verdicts = {key: _same(check(str(p), on_file), check(str(p), on_folder))["verdict"]
                for key, p in _tiny_adapters(tiny[name]["folder"], tmp_path).items()}
    if name == "sd":   # a custom-sized SD base: its own tables decide (a tiny "sdxl" is read as the real SDXL)
        assert verdicts["fits"] != verdicts["wrong"]


def test_cli_check_and_list_compatible_with(home, run_cli, adapters, base_folders, real_files):
    """The commands' JSON against the file equals their JSON against the folder (the base's id aside)."""
    args = [str(adapters[n]) for n in ("sd15", "sd15-diffusers", "sdxl", "flux")]
    on_file = run_cli("check", *args, "--base", str(real_files["sd15"]), "--json")
    on_folder = run_cli("check", *args, "--base", str(base_folders["sd15"]), "--json")
    assert on_file.returncode == on_folder.returncode
    rows = [json.loads(out.stdout) for out in (on_file, on_folder)]
    for row in rows:
        for r in row:
            r.pop("base")
    assert rows[0] == rows[1] and {r["verdict"] for r in rows[0]} != {rows[0][0]["verdict"]}
    for name in ("sd15", "sdxl", "flux"):
        assert run_cli("add", str(adapters[name]), "--name", name, "--json").returncode == 0
    listed = [json.loads(run_cli("list", "--compatible-with", str(b), "--json").stdout)
              for b in (real_files["sdxl"], base_folders["sdxl"])]
    assert [r["name"] for r in listed[0]] == [r["name"] for r in listed[1]] == ["sdxl"]


def test_generate_precheck_refuses_like_the_folder(home, run_cli, adapters, real_files, base_folders):
    """An adapter for another family is refused before any weights load, with the folder's code and exit."""
    runs = [run_cli("generate", "a cat", "--base", str(b), "-a", str(adapters["sdxl"]), "--json")
            for b in (real_files["sd15"], base_folders["sd15"])]
    assert runs[0].returncode == runs[1].returncode != 0
    codes = [r.json()["error"]["code"] for r in runs]
    assert codes[0] == codes[1]


def test_sd3_verdicts_equal_the_configs(home, tmp_path):
    """A kohya SD3 LoRA (SAI joint-block names) against a transformer-only SD3 file and the sd3 configs."""
    from tests.checkpoints.conftest import alias_tables
    from tests.checkpoints.headers import checkpoint_keys, write_sparse
    from tests.fixtures.adapters import write_adapter

    path = write_sparse(tmp_path / "sd3.safetensors",
                        checkpoint_keys(alias_tables("sd3"), "sd3", vae=False, components=("transformer",)))
    lora = write_adapter(tmp_path / "sd3-lora.safetensors", "sd3", "kohya-sd3")
    sdxl = write_adapter(tmp_path / "xl-lora.safetensors", "sdxl", "kohya")
    on_file, on_folder = resolve_base(str(path)), resolve_base(str(config_dir("sd3")))
    verdicts = [_same(check(str(a), on_file), check(str(a), on_folder))["verdict"] for a in (lora, sdxl)]
    assert verdicts[0] != verdicts[1]
