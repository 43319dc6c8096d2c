"""`doctor` never loses data (issue 13 D3, M4, M6, H4): orphans are quarantined, not deleted; nothing moves when
the records look lost; `--rebuild` records the blobs again; an entry removed while doctor looks is no
finding; leftover downloads are found and only the ones no pull holds are removed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from lorahub_cli.ingest import ingest
from tests.registry.helpers import write_kohya_sd1


def problems(findings):
    return sorted((f.problem, f.fixed) for f in findings)


def _blob_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "blobs" / "sha256").rglob("*") if p.is_file())


def test_fix_moves_nothing_when_no_stored_blob_has_a_record(registry, src):
    """The records were emptied (not the schema): every blob looks orphaned, which means the records are
    damaged. The old doctor --fix deleted every stored adapter here."""
    for seed in (1, 2):
        ingest(write_kohya_sd1(src / f"a{seed}.safetensors", seed=seed), registry)
    blobs = {p: p.read_bytes() for p in _blob_files(registry.home)}
    from sqlalchemy import text

    with registry.db.write() as s:
        s.execute(text("DELETE FROM adapters"))
        s.execute(text("DELETE FROM blobs"))
    findings = registry.doctor(fix=True)
    assert problems(findings) == [("orphan-blob", False), ("orphan-blob", False)]
    assert all("--rebuild" in f.action for f in findings)
    assert {p: p.read_bytes() for p in _blob_files(registry.home)} == blobs
    assert not (registry.home / "quarantine").exists()


def test_quarantine_is_emptied_by_its_own_command(tmp_home, src, run_cli):
    assert run_cli("add", write_kohya_sd1(src / "a.safetensors", seed=1)).returncode == 0
    orphan = tmp_home / "blobs" / "sha256" / "ee" / ("e" * 64)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"12345")
    r = run_cli("doctor", "--fix", "--json")
    assert r.returncode == 0 and [(f["problem"], f["fixed"]) for f in r.json()] == [("orphan-blob", True)], r
    (moved,) = [p for p in (tmp_home / "quarantine").rglob("*") if p.is_file()]
    assert moved.read_bytes() == b"12345" and "quarantine" in r.json()[0]["action"]
    r = run_cli("doctor", "--empty-quarantine", "--json")
    assert r.returncode == 0, r
    assert [(f["problem"], f["path"], f["fixed"]) for f in r.json()] == [("quarantined", str(moved), True)]
    assert not (tmp_home / "quarantine").exists()
    r = run_cli("doctor", "--empty-quarantine", "--json")
    assert r.returncode == 0 and r.json() == [], r
    r = run_cli("doctor", "--fix", "--empty-quarantine", "--json")
    assert r.returncode == 2 and json.loads(r.stderr or r.stdout)["error"]["code"] == "usage", r
    r = run_cli("list", "--json")
    assert [e["name"] for e in r.json()] == ["a"]


def test_an_entry_removed_while_doctor_looks_at_it_is_no_finding(registry, src, monkeypatch):
    """M4: `rm` commits and unlinks the blob between doctor's snapshot and its look at the bytes (made
    deterministic by running the real `rm` from inside doctor's first look at a blob path)."""
    from registry.api import Registry
    from registry.store import BlobStore

    ingest(write_kohya_sd1(src / "a.safetensors", seed=1), registry)
    ingest(write_kohya_sd1(src / "b.safetensors", seed=2), registry)
    real_path_for = BlobStore.path_for
    state = {"done": False}

    def path_for(store, sha256):
        if not state["done"]:
            state["done"] = True
            with Registry(registry.url, home=registry.home) as other:
                other.remove(["a"])   # another process's `lora rm a`
        return real_path_for(store, sha256)

    monkeypatch.setattr(BlobStore, "path_for", path_for)
    findings = registry.doctor(fix=True)
    monkeypatch.setattr(BlobStore, "path_for", real_path_for)
    assert state["done"]
    assert findings == [], [f.to_dict() for f in findings]
    assert [s.name for s in registry.list()] == ["b"]


def test_leftover_downloads_are_reported_and_only_unheld_ones_removed(registry, src):
    """M6: the staging names come from lorahub_cli.sources.url itself, so a renaming there breaks this test."""
    import fcntl

    from lorahub_cli.sources.url import complete_path, staging_paths

    ingest(write_kohya_sd1(src / "a.safetensors", seed=1), registry)
    staging = registry.staging_dir
    staging.mkdir(parents=True, exist_ok=True)
    dead = staging_paths("http://127.0.0.1:1/dead.safetensors", staging)
    live = staging_paths("http://127.0.0.1:1/live.safetensors", staging)
    for paths in (dead, live):
        paths.part.write_bytes(b"half a file")
        paths.state.write_text(json.dumps({"url": "x"}))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    finished = Path(str(complete_path("http://127.0.0.1:1/x", staging)).replace(f".{os.getpid()}-",
                                                                                f".{int(gone.stdout)}-"))
    finished.write_bytes(b"a whole file whose pull died")
    running = complete_path("http://127.0.0.1:1/y", staging)   # this process: alive
    running.write_bytes(b"on its way in")
    fd = os.open(live.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)   # a pull is downloading `live` now
        findings = registry.doctor()
        assert sorted((f.problem, f.path) for f in findings) == sorted([("partial-download", str(dead.part)),
                                                                        ("partial-download", str(finished))])
        assert problems(registry.doctor(fix=True)) == [("partial-download", True)] * 2
        assert not dead.part.exists() and not dead.state.exists() and not finished.exists()
        assert live.part.exists() and live.state.exists() and running.exists()
    finally:
        os.close(fd)
    assert problems(registry.doctor()) == [("partial-download", False)]   # no longer held: a leftover now


def test_an_in_place_file_swapped_for_a_device_is_reported_not_read(tmp_home, src, run_cli, run_cli_subprocess):
    """H4: an in-place file replaced by a symlink to /dev/zero made doctor read forever (so doctor runs in a
    subprocess here: a regression fails on the timeout instead of hanging the suite)."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    path = write_kohya_sd1(src / "a.safetensors", seed=1)
    assert run_cli("add", "--in-place", path).returncode == 0
    path.unlink()
    path.symlink_to("/dev/zero")
    r = run_cli_subprocess("doctor", "--json", timeout=120)
    assert r.returncode == 1 and [f["problem"] for f in r.json()] == ["changed-file"], r
    assert "regular file" in r.json()[0]["detail"]


@pytest.mark.parametrize("how", ["truncated", "tables-without-revision"])
def test_rebuild_records_the_blobs_again_and_keeps_the_old_database(tmp_home, src, run_cli, how):
    write_kohya_sd1(src / "b.safetensors", seed=2, metadata={"modelspec.title": "Nice Style"})
    for path in (write_kohya_sd1(src / "a.safetensors", seed=1), src / "b.safetensors",
                 write_kohya_sd1(src / "c.safetensors", seed=3), write_kohya_sd1(src / "d.safetensors", seed=4)):
        assert run_cli("add", path).returncode == 0
    assert run_cli("rename", "c", "my-c").returncode == 0
    listed = {e["sha256"]: e["name"] for e in run_cli("list", "--json").json()}
    d_blob = next(p for p in _blob_files(tmp_home) if p.name == next(s for s, n in listed.items() if n == "d"))
    with open(d_blob, "r+b") as fh:   # a damaged blob: reported and kept, never recorded under its name
        fh.seek(-100, os.SEEK_END)   # in the tensor data: the header still reads
        fh.write(b"\xff\xff\xff\xff")
    db = tmp_home / "registry.db"
    if how == "truncated":
        db.write_bytes(b"")
    else:
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("DROP TABLE alembic_version")
            conn.commit()
    old = db.read_bytes()
    assert run_cli("list", "--json").returncode == 1   # damaged-library until rebuilt
    r = run_cli("doctor", "--rebuild", "--json")
    assert r.returncode == 1, r   # one blob could not be recorded
    out = r.json()
    assert Path(out["backup"]).read_bytes() == old and Path(out["backup"]).parent == tmp_home
    by_sha = {e["sha256"]: e for e in out["entries"]}
    assert by_sha[d_blob.name]["status"] == "skipped" and by_sha[d_blob.name]["error"]["code"] == "hash-mismatch"
    assert d_blob.exists()
    names = {e["sha256"]: e["name"] for e in run_cli("list", "--json").json()}
    if how == "truncated":   # names from the files' own metadata, else the hash
        expected = {s: ("Nice Style" if n == "b" else s[:12]) for s, n in listed.items() if n != "d"}
    else:                    # the old database could still be read: the user's names come back
        expected = {s: n for s, n in listed.items() if n != "d"}
    assert names == expected
    r = run_cli("doctor", "--json")
    assert [(f["problem"], f["sha256"]) for f in r.json()] == [("orphan-blob", d_blob.name)]


def test_rebuild_refuses_a_library_whose_records_read_fine(tmp_home, src, run_cli):
    assert run_cli("add", write_kohya_sd1(src / "a.safetensors", seed=1), "-t", "keep").returncode == 0
    before = (tmp_home / "registry.db").read_bytes()
    r = run_cli("doctor", "--rebuild", "--json")
    assert r.returncode == 2 and json.loads(r.stderr or r.stdout)["error"]["code"] == "usage", r
    assert (tmp_home / "registry.db").read_bytes() == before
    assert [p.name for p in tmp_home.iterdir() if "before-rebuild" in p.name] == []
    assert run_cli("list", "--json").json()[0]["tags"] == ["keep"]


def test_a_lone_download_lock_left_by_a_killed_pull_is_stale(registry):
    from lorahub_cli.sources.url import staging_paths

    registry.staging_dir.mkdir(parents=True)
    paths = staging_paths("http://127.0.0.1:1/killed-early.safetensors", registry.staging_dir)
    paths.lock.write_bytes(b"")
    assert [(f.problem, f.path) for f in registry.doctor()] == [("stale-temp", str(paths.lock))]
    assert paths.lock.exists()   # the check wrote nothing
    assert problems(registry.doctor(fix=True)) == [("stale-temp", True)]
    assert not paths.lock.exists() and registry.doctor() == []
