"""`lora add` of a pickle stores its bit-verified safetensors conversion and remembers the original's hash."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest

from tests.conftest import CliResult, run_in_process
from tests.fixtures.adapters import write_adapter


def lora(home: Path, *args) -> CliResult:
    """`lora ARGS` on ``home``, in this process (tests/conftest.py: the console script's code path)."""
    return run_in_process(args, env={"LORAHUB_HOME": str(home), "COLUMNS": "250"})


def test_add_a_pickle_stores_safetensors_with_the_same_tensors(tmp_path):
    import torch
    from safetensors.torch import load_file

    src = write_adapter(tmp_path / "old_lora.bin", "sd15", "attn-procs-bin", rank=4)
    home = tmp_path / "home"
    first = lora(home, "add", src, "--json")
    assert first.returncode == 0, first.stderr
    (row,) = json.loads(first.stdout)
    assert row["status"] == "added" and row["path"] == str(src)

    entry = json.loads(lora(home, "show", row["name"], "--json").stdout)
    assert entry["sources"][0]["original_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert entry["container"] == "safetensors" and entry["format"] == "attn-procs"
    stored = load_file(entry["path"])
    original = torch.load(src, weights_only=True)
    assert stored.keys() == original.keys()
    assert all(torch.equal(stored[k], original[k]) for k in original)
    assert "converted from a pickle" in lora(home, "show", row["name"]).stdout

    again = lora(home, "add", src, "--json")  # the same conversion gives the same bytes: a duplicate
    assert json.loads(again.stdout)[0]["status"] == "duplicate"
    assert not list((home / "staging").glob("convert-*"))


def test_an_unsafe_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.bin"
    bad.write_bytes(pickle.dumps({"lora.down.weight": Payload()}, protocol=2))
    home = tmp_path / "home"
    result = lora(home, "add", bad, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)[0]["error"]["code"] in {"unsafe-pickle", "not-an-adapter-file"}
    assert not marker.exists()
    assert json.loads(lora(home, "list", "--json").stdout) == []


@pytest.mark.parametrize("fmt", ["cloneofsimo-pt"])
def test_the_cloneofsimo_bare_list_goes_in(tmp_path, fmt):
    src = write_adapter(tmp_path / "lora_weight.pt", "sd15", fmt, rank=4)
    home = tmp_path / "home"
    result = lora(home, "add", src, "--json")
    assert result.returncode == 0, result.stderr
    entry = json.loads(lora(home, "show", json.loads(result.stdout)[0]["name"], "--json").stdout)
    assert entry["format"] == "cloneofsimo" and entry["family"] == "sd1"


def test_convert_a_library_entry_makes_a_linked_entry(tmp_path):
    src = write_adapter(tmp_path / "style.safetensors", "sd15", "kohya", rank=4, alpha=2.0)
    home = tmp_path / "home"
    assert lora(home, "add", src).returncode == 0
    result = lora(home, "convert", "style", "--to", "diffusers", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["entry"]["name"] == "style-diffusers" and out["entry"]["status"] == "added"
    entry = json.loads(lora(home, "show", "style-diffusers", "--json").stdout)
    original = json.loads(lora(home, "show", "style", "--json").stdout)
    assert entry["format"] == "diffusers" and entry["alpha"] == original["alpha"] == 2.0
    assert entry["sources"][0]["kind"] == "converted"
    assert entry["sources"][0]["original_sha256"] == original["sha256"]
    assert Path(out["dst"]).exists() and out["entry"]["path"] == out["dst"] == entry["path"]
    from safetensors import safe_open

    with safe_open(out["dst"], framework="np") as f:   # titled after the entry, not its blob's hash
        assert f.metadata()["modelspec.title"] == "style"

    again = lora(home, "convert", "style", "--name", "style-copy")   # the same bytes: said, not "added"
    assert again.returncode == 0, again.stderr
    assert "already in the library as style-diffusers" in again.stdout and "--name style-copy was not used" in again.stdout
    assert not list((home / "staging").glob("convert-*"))


def test_an_output_folder_is_a_usage_error_even_with_force(tmp_path):
    src = write_adapter(tmp_path / "style.safetensors", "sd15", "kohya", rank=4)
    (tmp_path / "out").mkdir()
    result = lora(tmp_path / "home", "convert", src, "-o", tmp_path / "out", "--force", "--json")
    assert result.returncode == 2 and json.loads(result.stdout)["error"]["code"] == "usage"
    assert list((tmp_path / "out").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "out", "style.safetensors"]


def test_a_library_entry_converted_with_o_writes_the_file_and_stores_the_same_bytes(tmp_path):
    src = write_adapter(tmp_path / "style.safetensors", "sd15", "kohya", rank=4)
    home = tmp_path / "home"
    assert lora(home, "add", src).returncode == 0
    out = tmp_path / "exported.safetensors"
    result = lora(home, "convert", "style", "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["dst"] == str(out) and got["entry"]["status"] == "added"
    stored = json.loads(lora(home, "show", got["entry"]["name"], "--json").stdout)
    assert stored["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    again = lora(home, "convert", "style", "-o", out, "--json")   # the user's file is not replaced silently
    assert again.returncode == 1 and json.loads(again.stdout)["error"]["code"] == "already-exists"
