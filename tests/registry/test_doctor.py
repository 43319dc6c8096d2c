"""`doctor`: finds every kind of inconsistency, and `fix` repairs exactly what is safe."""

from __future__ import annotations

import os
import shutil

from lorahub_cli.inspect import inspect_file
from tests.registry.helpers import write_kohya_sd1


def add(reg, path, **kw):
    return reg.add(path, inspect_file(path), **kw)


def problems(findings):
    return sorted((f.problem, f.fixed) for f in findings)


def test_a_consistent_library_has_no_findings(registry, src):
    add(registry, write_kohya_sd1(src / "a.safetensors", seed=1))
    add(registry, write_kohya_sd1(src / "b.safetensors", seed=2), in_place=True)
    assert registry.doctor() == []


def test_orphan_blobs_stale_temps_and_orphan_records_are_removed(registry, src):
    add(registry, write_kohya_sd1(src / "a.safetensors", seed=1))
    store = registry.store
    orphan = store.objects / "ff" / ("f" * 64)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"no record")
    (store.tmp / "x.partial").write_bytes(b"half")
    from registry.models import Blob

    with registry.db.write() as s:
        s.add(Blob(sha256="d" * 64, size=3, stored=False))
    assert problems(registry.doctor()) == [("orphan-blob", False), ("orphan-record", False), ("stale-temp", False)]
    assert problems(registry.doctor(fix=True)) == [("orphan-blob", True), ("orphan-record", True),
                                                   ("stale-temp", True)]
    assert not orphan.exists() and store.temp_files() == []
    assert registry.doctor() == [] and [s.name for s in registry.list()] == ["a"]


def test_missing_in_place_files(registry, src):
    only = write_kohya_sd1(src / "only.safetensors", seed=1)
    kept = write_kohya_sd1(src / "kept.safetensors", seed=2)
    add(registry, only, in_place=True)
    add(registry, kept)
    shutil.copy(kept, src / "kept-copy.safetensors")
    add(registry, src / "kept-copy.safetensors", in_place=True)  # a duplicate: its path is remembered
    only.unlink()
    (src / "kept-copy.safetensors").unlink()
    findings = registry.doctor(fix=True)
    by_path = {os.path.basename(f.path): f for f in findings}
    assert problems(findings) == [("missing-file", False), ("missing-file", True)]
    assert "only copy" in by_path["only.safetensors"].action and by_path["only.safetensors"].name == "only"
    assert by_path["kept-copy.safetensors"].fixed
    assert registry.get("kept").files == []
    assert problems(registry.doctor()) == [("missing-file", False)]  # only the unfixable one is left


def test_corrupt_blob_is_restored_from_an_in_place_copy_or_reported(registry, src):
    a = write_kohya_sd1(src / "a.safetensors", seed=1)
    b = write_kohya_sd1(src / "b.safetensors", seed=2)
    add(registry, a)
    add(registry, a, in_place=True)
    add(registry, b)
    for name in ("a", "b"):
        with open(registry.get(name).path, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\xff\xff\xff\xff")  # bit rot, same size
    assert problems(registry.doctor(verify_hashes=False)) == []  # sizes only: not seen
    findings = registry.doctor(fix=True)
    assert problems(findings) == [("hash-mismatch", False), ("hash-mismatch", True)]
    assert open(registry.get("a").path, "rb").read() == a.read_bytes()
    os.unlink(registry.get("b").path)
    assert problems(registry.doctor(fix=True)) == [("missing-blob", False)]


def test_touched_and_changed_in_place_files(registry, src):
    path = write_kohya_sd1(src / "a.safetensors", seed=1)
    add(registry, path, in_place=True)
    os.utime(path, ns=(5, 5))  # same bytes, new mtime
    assert registry.doctor(fix=True) == []
    assert registry.unchanged(path, os.stat(path), registry.known_files()) is not None  # stat refreshed
    write_kohya_sd1(path, seed=2)
    assert problems(registry.doctor()) == [("changed-file", False)]
