"""D4: stored bytes are checked while they are read. After one flipped byte in a stored adapter (or in an
in-place file changed since it was added), convert and merge refuse with hash-mismatch naming `lora doctor`,
and write nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lorahub_cli.convert.load import read_source
from lorahub_cli.errors import LoraError
from tests.fixtures.adapters import write_adapter

pytest.importorskip("torch")


def _flip_last_byte(path: Path) -> None:
    """One bit of the last tensor's data: the header still parses, the numbers are wrong."""
    os.chmod(path, 0o644)   # the store keeps blobs read-only
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_END)
        f.write(bytes([byte ^ 0x01]))


def _add(run_cli, path: Path, name: str, *extra: str) -> dict:
    result = run_cli("add", "--json", "--name", name, path, *extra)
    assert result.returncode == 0, result
    return run_cli("show", "--json", name).json()


def test_convert_of_a_damaged_stored_adapter_is_refused(tmp_path, tmp_home, run_cli):
    entry = _add(run_cli, write_adapter(tmp_path / "a.safetensors", "sd15", "kohya"), "a")
    _flip_last_byte(Path(entry["path"]))
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", "--json", "a", "--to", "diffusers", "-o", out)
    assert result.returncode == 1, result
    error = json.loads(result.stdout or result.stderr)["error"]   # errors: JSON on stderr, stdout empty
    assert error["code"] == "hash-mismatch"
    assert "lora doctor" in error["hint"]
    assert not out.exists()


def test_merge_of_a_changed_in_place_file_is_refused(tmp_path, tmp_home, run_cli):
    a = write_adapter(tmp_path / "a.safetensors", "sd15", "kohya")
    _add(run_cli, a, "a", "--in-place")
    _add(run_cli, write_adapter(tmp_path / "b.safetensors", "sd15", "kohya", seed=1), "b")
    _flip_last_byte(a)
    out = tmp_path / "merged.safetensors"
    result = run_cli("merge", "--json", "a", "b", "-o", out)
    assert result.returncode == 1, result
    assert "hash-mismatch" in result.stdout + result.stderr
    assert not out.exists()


def test_read_source_checks_the_recorded_hash(tmp_path):
    path = write_adapter(tmp_path / "a.safetensors", "sd15", "kohya")
    good = read_source(path)
    assert read_source(path, sha256=good.sha256).sha256 == good.sha256
    _flip_last_byte(path)
    with pytest.raises(LoraError) as err:
        read_source(path, sha256=good.sha256)
    assert err.value.code == "hash-mismatch"
