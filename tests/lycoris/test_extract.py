"""`lora extract`: a LoRA from two real (tiny) diffusers folders, layer by layer."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

PERTURBED = {"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": 2, "down_blocks.0.resnets.0.conv1": 3}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from tests.fixtures.pipelines import make_tiny_sd_pipeline

    root = tmp_path_factory.mktemp("extract")
    base = make_tiny_sd_pipeline(root / "base", seed=0)
    tuned = root / "tuned"
    shutil.copytree(base, tuned)
    weights = next((tuned / "unet").glob("*.safetensors"))
    state = load_file(str(weights))
    g = torch.Generator().manual_seed(3)
    truth = {}
    for name, r in PERTURBED.items():
        w = state[f"{name}.weight"]
        delta = (torch.randn(w.shape[0], r, generator=g) @ torch.randn(r, w[0].numel(), generator=g)) * 0.05
        state[f"{name}.weight"] = (w + delta.reshape(w.shape)).contiguous()
        truth[f"unet.{name}"] = delta
    save_file(state, str(weights))
    return base, tuned, truth


def test_extract_recovers_a_low_rank_fine_tune(pair, run_cli, tmp_path):
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.compat.on_base import base_tables, map_onto_base, pairs_from_keymap
    from lorahub_cli.convert.load import read_source

    base, tuned, truth = pair
    out = tmp_path / "extracted.safetensors"
    res = run_cli("extract", "--base", str(base), "--tuned", str(tuned), "-o", str(out), "--rank", "4",
                  "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    data = res.json()
    assert {r["module"] for r in data["layers"]} == set(truth)
    assert all("difference at most" in s["reason"] for s in data["skipped"])   # the untouched layers
    assert {r["module"]: r["rank_after"] for r in data["layers"]} == {k: 4 for k in truth}
    b = resolve_base(str(base))
    source = read_source(out)
    adapter = pairs_from_keymap(source, map_onto_base(source.layout, b), base_tables(b))
    for key, delta in truth.items():
        got = adapter.modules[key].delta(torch.float64).reshape(delta.shape)
        assert float((got - delta.double()).norm() / delta.norm()) < 1e-5, key


def test_models_of_different_architectures_are_incompatible(pair, run_cli, tmp_path):
    from tests.fixtures.pipelines import make_tiny_sdxl_pipeline

    base, _, _ = pair
    other = make_tiny_sdxl_pipeline(tmp_path / "sdxl", seed=0)
    out = tmp_path / "x.safetensors"
    res = run_cli("extract", "--base", str(base), "--tuned", str(other), "-o", str(out), "--json")
    assert res.returncode == 1 and res.json()["error"]["code"] == "incompatible"
    assert not out.exists()


def test_usage_errors(pair, run_cli, tmp_path):
    base, tuned, _ = pair
    for args in (["--rank", "0"], ["--sv-fro", "2"], ["--threshold", "-1"], ["--conv", "maybe"]):
        res = run_cli("extract", "--base", str(base), "--tuned", str(tuned), "-o", str(tmp_path / "y.safetensors"),
                      *args, "--json")
        assert res.returncode == 2, (args, res.stdout)
    assert not (tmp_path / "y.safetensors").exists()


def test_single_file_checkpoints_give_the_same_lora(pair, run_cli, tmp_path):
    """The same two models as single files in the original (LDM) layout, read through layer_sources."""
    from diffusers import StableDiffusionPipeline

    from lorahub_cli.checkpoints.original import to_original

    base, tuned, truth = pair
    files = []
    for folder in (base, tuned):
        pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
        tensors = to_original({c: getattr(pipe, c).state_dict() for c in ("unet", "vae", "text_encoder")}, "unknown")
        files.append(tmp_path / f"{folder.name}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(files[-1]))
    res = run_cli("extract", "--base", str(files[0]), "--tuned", str(files[1]), "-o", str(tmp_path / "x.safetensors"),
                  "--rank", "4", "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    assert {r["module"] for r in res.json()["layers"]} == set(truth)


def test_the_extracted_lora_is_a_library_entry_naming_both_models(pair, run_cli, tmp_path):
    """Without -o the LoRA goes into the library only: an entry whose base model is the base and whose source
    names the tuned model and the base; its bytes are the LoRA (the same layers come back out)."""
    from lorahub_cli.bases import resolve_base

    base, tuned, truth = pair
    res = run_cli("extract", "--base", str(base), "--tuned", str(tuned), "--rank", "4", "--name", "ft-lora",
                  "--device", "cpu", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    data = res.json()
    assert data["entry"]["name"] == "ft-lora" and data["entry"]["status"] == "added"
    shown = run_cli("show", "ft-lora", "--json").json()
    b, t = resolve_base(str(base)), resolve_base(str(tuned))
    assert shown["base_model"] == b.id, shown
    source = shown["sources"][0] if "sources" in shown else shown["source"]
    assert t.id in source["path"] and b.id in source["path"], source
    assert shown["sha256"] == data["entry"]["sha256"]
    res = run_cli("inspect", data["output"], "--json")   # the stored bytes
    assert res.returncode == 0 and res.json()[0]["n_modules"] == len(truth), res.stdout


def test_no_add_writes_only_the_file(pair, run_cli, tmp_path):
    base, tuned, _ = pair
    res = run_cli("extract", "--base", str(base), "--tuned", str(tuned), "--rank", "4", "--no-add", "--json")
    assert res.returncode == 2, res.stdout   # --no-add without -o: nothing would be kept
    out = tmp_path / "only-file.safetensors"
    res = run_cli("extract", "--base", str(base), "--tuned", str(tuned), "--rank", "4", "--no-add", "-o", str(out),
                  "--device", "cpu", "--json")
    assert res.returncode == 0 and out.exists() and "entry" not in res.json(), res.stdout
    listed = run_cli("list", "--json").json()
    assert not any(e.get("name") == "only-file" for e in (listed if isinstance(listed, list) else listed["entries"]))


@pytest.mark.parametrize("shape", [(320, 320, 3, 3), (1280, 320)])
def test_each_layer_is_the_eckart_young_optimum(shape):
    """The Gram-matrix route chooses the rank a float64 SVD would and leaves exactly the optimal error."""
    from lorahub_cli.lycoris.extract import _lowrank
    from lorahub_cli.lycoris.lowrank import Criterion, choose_rank

    g = torch.Generator().manual_seed(7)
    m = shape[0]
    n = int(torch.tensor(shape[1:]).prod())
    spectrum = torch.logspace(0, -4, min(m, n), dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(m, min(m, n), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, min(m, n), generator=g, dtype=torch.float64))
    diff = ((u * spectrum) @ v.t()).reshape(shape).float() * 1e-2
    s = torch.linalg.svdvals(diff.double().reshape(m, -1))
    for c in (Criterion("rank", 12, 12), Criterion("sv_fro", 0.99, 64)):
        pair, report = _lowrank("layer", diff, c)
        k = choose_rank(s, c)
        optimum = float(s[k:].pow(2).sum().sqrt())
        assert report.rank_after == k, (c, report.rank_after, k)
        assert abs(report.error - optimum) <= 1e-6 * float(s[0]), (c, report.error, optimum)
        got = (pair.up.double().reshape(m, -1) @ pair.down.double().reshape(k, -1))
        real = float((diff.double().reshape(m, -1) - got).norm())
        assert abs(real - optimum) <= 1e-5 * optimum, (c, real, optimum)
