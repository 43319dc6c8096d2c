"""`doctor`: finds every kind of inconsistency, and `fix` repairs exactly what is safe."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lorahub_cli.ingest import ingest
from tests.registry.helpers import write_kohya_sd1


def add(reg, path, **kw):
    return ingest(path, reg, **kw)


def problems(findings):
    return sorted((f.problem, f.fixed) for f in findings)


def test_a_consistent_library_has_no_findings(registry, src):
    add(registry, write_kohya_sd1(src / "a.safetensors", seed=1))
    add(registry, write_kohya_sd1(src / "b.safetensors", seed=2), in_place=True)
    assert registry.doctor() == []


def test_orphan_blobs_are_quarantined_stale_temps_and_orphan_records_removed(registry, src):
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
    (kept,) = [p for p in (registry.home / "quarantine").rglob("*") if p.is_file()]  # moved, not deleted
    assert kept.name == "f" * 64 and kept.read_bytes() == b"no record"
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


def test_a_lost_in_place_file_is_not_forgotten_when_every_copy_is_lost(registry, src):
    a = write_kohya_sd1(src / "a.safetensors", seed=1)
    shutil.copy(a, src / "a-copy.safetensors")
    add(registry, a, in_place=True)
    add(registry, src / "a-copy.safetensors", in_place=True)
    a.unlink()
    (src / "a-copy.safetensors").unlink()
    assert problems(registry.doctor(fix=True)) == [("missing-file", False), ("missing-file", False)]
    assert len(registry.get("a").files) == 2  # both paths kept: restoring either file heals the adapter


def test_hard_linked_blobs_are_ordinary_blobs_to_doctor(registry, src):
    cached = write_kohya_sd1(src / "hf-cache-blob.safetensors", seed=1)
    result = add(registry, cached, link=True)
    stored = registry.store.path_for(result.sha256)
    assert stored.stat().st_ino == cached.stat().st_ino
    assert registry.doctor() == []
    cached.unlink()  # the Hugging Face cache is cleaned: the library keeps its own name for the bytes
    assert registry.doctor() == []
    with open(stored, "r+b") as fh:  # bit rot shows through every name of the file
        fh.seek(100)
        fh.write(b"\xff\xff\xff\xff")
    assert problems(registry.doctor()) == [("hash-mismatch", False)]


def test_leftover_conversion_folders_are_stale_temp_files(registry, src):
    add(registry, write_kohya_sd1(src / "a.safetensors", seed=1))
    leftover = registry.staging_dir / "convert-abc123"
    leftover.mkdir(parents=True)
    (leftover / "old_lora.safetensors").write_bytes(b"half a conversion")
    findings = registry.doctor()
    assert problems(findings) == [("stale-temp", False)] and findings[0].path == str(leftover)
    assert problems(registry.doctor(fix=True)) == [("stale-temp", True)]
    assert not leftover.exists()
    assert registry.doctor() == []


def test_doctor_waits_for_a_conversion_in_progress(registry, src):
    import tempfile
    import threading

    from registry.store import staging_lock

    registry.staging_dir.mkdir(parents=True)
    found = []
    with staging_lock(registry.staging_dir, exclusive=False):  # what `stage` holds while it converts
        live = Path(tempfile.mkdtemp(prefix="convert-", dir=registry.staging_dir))
        doctor = threading.Thread(target=lambda: found.extend(registry.doctor(fix=True)))
        doctor.start()
        doctor.join(0.5)
        assert live.exists()  # not taken for a leftover and deleted under the conversion's feet
        shutil.rmtree(live)
    doctor.join(30)
    assert not doctor.is_alive() and found == []


def test_bit_rot_in_an_in_place_file_with_an_unchanged_stat_is_found(registry, src):
    path = write_kohya_sd1(src / "a.safetensors", seed=1)
    add(registry, path, in_place=True)
    before = os.stat(path)
    with open(path, "r+b") as fh:  # bit rot: same size, and the mtime is put back
        fh.seek(200)
        fh.write(b"\xff\xff\xff\xff")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert registry.unchanged(path, os.stat(path), registry.known_files()) is not None  # rescans trust the stat
    assert problems(registry.doctor(verify_hashes=False)) == []  # so does --no-hash
    (finding,) = registry.doctor()
    assert finding.problem == "changed-file" and "rescan skips it" in finding.action
    (finding,) = registry.doctor(fix=True)
    assert not finding.fixed and "forgot its size and mtime" in finding.action
    assert registry.unchanged(path, os.stat(path), registry.known_files()) is None  # the next rescan reads it


def test_no_hash_still_sees_an_in_place_file_whose_size_changed(registry, src):
    path = write_kohya_sd1(src / "a.safetensors", seed=1)
    add(registry, path, in_place=True)
    with open(path, "ab") as fh:
        fh.write(b"more")
    (finding,) = registry.doctor(verify_hashes=False)
    assert finding.problem == "changed-file" and "size changed" in finding.detail
