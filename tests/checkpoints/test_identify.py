"""A single-file base checkpoint identified from its header alone: family, variants, components, module tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lorahub_cli.archs import module_table
from lorahub_cli.bases import resolve_base
from lorahub_cli.inspect import inspect_any
from lorahub_cli.inspect.checkpoint import identify
from lorahub_cli.inspect.containers import read_container
from tests.checkpoints.conftest import FAMILIES, alias_tables
from tests.checkpoints.headers import checkpoint_keys, write_sparse

COMPONENTS = {"sd15": ["unet", "text_encoder", "vae"], "sd21": ["unet", "text_encoder", "vae"],
              "sdxl": ["unet", "text_encoder", "text_encoder_2", "vae"], "flux": ["transformer"]}


@pytest.mark.parametrize("alias", list(FAMILIES))
def test_real_shaped_file_is_identified_from_its_header(real_files, alias):
    path = real_files[alias]
    assert os.path.getsize(path) > 1 << 30           # GBs long ...
    assert os.stat(path).st_blocks * 512 < 64 << 20   # ... but only its header is on disk (a hole otherwise)
    report = identify(read_container(path))
    assert (report.family, report.components, report.kind) == (FAMILIES[alias], COMPONENTS[alias], "checkpoint")
    assert report.variants == (["dev"] if alias == "flux" else [])
    assert report.fp8 is False and report.dtype == "F16"


@pytest.mark.parametrize("alias", list(FAMILIES))
def test_module_tables_from_the_header_equal_the_configs(home, real_files, alias):
    """The tables read from LDM / OpenCLIP / BFL names equal those diffusers builds from the published configs
    (SD2: OpenCLIP-H's last layer is left out, as the pipeline never runs it)."""
    base = resolve_base(str(real_files[alias]))
    want = alias_tables(alias)
    assert (base.kind, base.family, base.checkpoint) == ("checkpoint", FAMILIES[alias], str(real_files[alias]))
    assert set(base.components) == set(want)
    for component in want:
        assert module_table(base.folder, component) == want[component], component


def test_variants_from_keys_and_shapes(tmp_path):
    tables = alias_tables("sd15")
    keys = checkpoint_keys(tables, "sd1")
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    inpaint = write_sparse(tmp_path / "inpaint.safetensors", {**keys, conv_in: (320, 9, 3, 3)})
    assert identify(read_container(inpaint)).variants == ["inpainting"]
    vpred = write_sparse(tmp_path / "v.safetensors", {**checkpoint_keys(alias_tables("sd21"), "sd2"), "v_pred": ()})
    report = identify(read_container(vpred))
    assert (report.family, report.variants) == ("sd2", ["v-prediction"])
    fp8 = write_sparse(tmp_path / "fp8.safetensors", keys, dtype="F8_E4M3")
    report = identify(read_container(fp8))
    assert (report.fp8, report.dtype, report.variants) == (True, "F8_E4M3", ["fp8"])
    flux = alias_tables("flux")
    schnell = {k: v for k, v in checkpoint_keys(flux, "flux", vae=False, components=("transformer",)).items()
               if ".guidance_in." not in k}
    report = identify(read_container(write_sparse(tmp_path / "schnell.safetensors", schnell)))
    assert (report.family, report.variants) == ("flux", ["schnell"])


def test_sdxl_refiner(tmp_path):
    """The refiner holds OpenCLIP-bigG alone, as embedder 0."""
    tables = alias_tables("sdxl")
    keys = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
            for k, v in checkpoint_keys(tables, "sdxl", components=("unet", "text_encoder_2")).items()}
    report = identify(read_container(write_sparse(tmp_path / "refiner.safetensors", keys)))
    assert (report.family, report.variants, report.components) == ("sdxl", ["refiner"],
                                                                   ["unet", "text_encoder_2", "vae"])


def test_inspect_reports_kind_checkpoint(run_cli, real_files):
    """`lora inspect` says what a base file is (exit 0) instead of refusing it as not-a-lora."""
    result = run_cli("inspect", str(real_files["sdxl"]), "--json", "--no-hash")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["kind"], row["family"], row["architecture"]) == ("checkpoint", "sdxl", "ldm-unet")
    human = run_cli("inspect", str(real_files["flux"]), "--no-hash")
    assert human.returncode == 0 and "base checkpoint" in human.stdout and "dev" in human.stdout


def test_hash_is_the_whole_file_sha256(tmp_path):
    import hashlib

    path = write_sparse(tmp_path / "small.safetensors", checkpoint_keys(alias_tables("sd15"), "sd1"))
    report = inspect_any(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert (report.sha256, report.autov2) == (digest, digest[:10])


def test_base_add_and_list_show_the_checkpoint(home, run_cli, real_files):
    added = run_cli("base", "add", str(real_files["sd15"]), "--name", "rv", "--json")
    assert added.returncode == 0, added.stderr
    [row] = json.loads(run_cli("base", "list", "--json").stdout)
    assert (row["name"], row["kind"], row["family"], row["id"]) == ("rv", "checkpoint", "sd1",
                                                                    str(real_files["sd15"]))
    assert row["components"] == ["text_encoder", "unet"]   # model_index.json order, as for a folder
    assert "checkpoint" in run_cli("base", "list").stdout
    # the saved name resolves to the same file and tables
    base = resolve_base("rv")
    assert (base.kind, base.checkpoint, base.family) == ("checkpoint", str(real_files["sd15"]), "sd1")


def test_base_list_shows_the_variants(home, run_cli, tmp_path):
    keys = checkpoint_keys(alias_tables("sd15"), "sd1")
    keys["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    path = write_sparse(tmp_path / "inpaint.safetensors", keys)
    assert run_cli("base", "add", str(path), "--name", "inpaint").returncode == 0
    assert "sd1 (inpainting)" in run_cli("base", "list").stdout
    assert run_cli("base", "list", "--json").json()[0]["variants"] == ["inpainting"]


def test_sd3_transformer_tables_from_the_header(home, tmp_path):
    """An SD3-medium transformer in SAI's MMDiT names (fused qkv; the last context block without its MLP): the
    transformer's table equals the published config's, the text encoders come from the sd3 configs."""
    want = alias_tables("sd3")
    path = write_sparse(tmp_path / "sd3.safetensors",
                        checkpoint_keys(want, "sd3", vae=False, components=("transformer",)))
    report = identify(read_container(path))
    assert (report.family, report.components, report.architecture) == ("sd3", ["transformer"], "sd3")
    base = resolve_base(str(path))
    assert base.components == ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer")
    for component in want:
        assert module_table(base.folder, component) == want[component], component


def test_inspect_and_check_of_a_checkpoint_import_no_torch(home, run_cli_subprocess, real_files, adapters):
    """Header-only all the way: `lora inspect FILE` and `lora check ADAPTER --base FILE` (warm tables) in a fresh
    process never import torch, diffusers or transformers."""
    import subprocess
    import sys

    assert run_cli_subprocess("check", str(adapters["sd15"]), "--base", str(real_files["sd15"])).returncode == 0
    probe = ("import json, sys\nfrom lorahub_cli.__main__ import main\n"
             "for args in (['inspect', sys.argv[1], '--json', '--no-hash'],\n"
             "             ['check', sys.argv[2], '--base', sys.argv[1], '--json']):\n"
             "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
             "print(json.dumps([m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]),"
             " file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(real_files["sd15"]), str(adapters["sd15"])],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []
