"""`lora export-bundle` and `lora add set.tar`: a portable set, and a reader that trusts nothing in the tar."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.hubserver import lora_safetensors


def _home(tmp_path: Path, name: str) -> dict:
    return {"LORAHUB_HOME": str(tmp_path / name)}


@pytest.fixture
def bundle(tmp_path, run_cli) -> Path:
    src = _home(tmp_path, "src")
    for stem, seed in (("alpha", 1), ("beta", 2)):
        (tmp_path / f"{stem}.safetensors").write_bytes(lora_safetensors(seed=seed))
    (tmp_path / "alpha.json").write_text(json.dumps({"activation text": "sks style"}))
    assert run_cli("add", tmp_path / "alpha.safetensors", tmp_path / "beta.safetensors", env=src).returncode == 0
    out = tmp_path / "set.tar"
    made = run_cli("export-bundle", "alpha", "beta", "-o", out, "--json", env=src)
    assert made.returncode == 0, made
    return out


def test_a_bundle_adds_its_adapters_with_their_sidecars_then_is_a_duplicate(bundle, tmp_path, run_cli):
    home = _home(tmp_path, "offline-box")
    got = run_cli("add", bundle, "--json", env=home)
    assert got.returncode == 0, got
    assert sorted((r["name"], r["status"]) for r in got.json()) == [("alpha", "added"), ("beta", "added")]
    assert run_cli("show", "alpha", "--json", env=home).json()["trigger_words"] == ["sks style"]
    again = run_cli("add", bundle, "--json", env=home)
    assert {r["status"] for r in again.json()} == {"duplicate"}
    assert not any((tmp_path / "offline-box" / "staging").iterdir())   # nothing left behind


def _members(good: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(good) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar]


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _renamed(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    new = tarfile.TarInfo(name)
    new.size, new.mode, new.type = info.size, info.mode, info.type
    return new


def _tampered(good: Path, how: str, out: Path) -> Path:
    (lock, lock_bytes), (adapter, data), *rest = _members(good)
    if how == "dotdot":
        return _write(out, [(lock, lock_bytes), (_renamed(adapter, "../" + adapter.name), data)])
    if how == "absolute":
        return _write(out, [(lock, lock_bytes), (_renamed(adapter, "/tmp/" + adapter.name), data)])
    if how == "symlink":
        link = tarfile.TarInfo(adapter.name)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return _write(out, [(lock, lock_bytes), (link, b"")])
    if how == "bigger":
        bigger = _renamed(adapter, adapter.name)
        bigger.size += 1
        return _write(out, [(lock, lock_bytes), (bigger, data + b"\0"), *rest])
    if how == "flipped":
        flipped = bytearray(data)
        flipped[-1] ^= 1
        return _write(out, [(lock, lock_bytes), (adapter, bytes(flipped)), *rest])
    if how == "version":
        text = lock_bytes.replace(b"version = 1", b"version = 7")
        new = _renamed(lock, lock.name)
        new.size = len(text)
        return _write(out, [(new, text), (adapter, data), *rest])
    raise AssertionError(how)


@pytest.mark.parametrize("how, code", [("dotdot", "unsafe-path"), ("absolute", "unsafe-path"),
                                       ("symlink", "unsafe-member"), ("bigger", "size-mismatch"),
                                       ("flipped", "hash-mismatch"), ("version", "unknown-lock-version")])
def test_a_tampered_bundle_is_refused_with_its_code_and_nothing_is_added(bundle, tmp_path, run_cli, how, code):
    bad = _tampered(bundle, how, tmp_path / f"{how}.tar")
    home = _home(tmp_path, "victim")
    got = run_cli("add", bad, "--json", env=home)
    assert got.returncode == 1
    (row,) = got.json()
    assert row["status"] == "failed" and row["error"]["code"] == code, row
    assert run_cli("list", "--json", env=home).json() == []
    assert not (tmp_path / "victim" / "staging").exists() or not any((tmp_path / "victim" / "staging").iterdir())
    assert not (tmp_path / "tmp").exists()
