"""A read-only home reads fine and refuses writes with `read-only` (issue 13 C3); a database that cannot grow
gives `disk-full` (C2), and the blob store cleans up after a full disk. Real mounts and real rlimits
(``tests.registry.limits``), real `lora` processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.registry.helpers import write_kohya_sd1
from tests.registry.limits import run_on_full_disk, run_read_only, run_with_file_size_limit

DATA = Path(__file__).parent / "data"


def _error(proc) -> dict:
    return json.loads(proc.stderr or proc.stdout)["error"]


@pytest.fixture
def library(tmp_home, src, run_cli):
    for name, seed in (("a", 1), ("b", 2)):
        assert run_cli("add", write_kohya_sd1(src / f"{name}.safetensors", seed=seed)).returncode == 0
    assert run_cli("tag", "a", "+keep").returncode == 0
    return tmp_home


def _files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def test_a_read_only_home_reads_and_refuses_writes(library, src):
    before = _files(library)
    r = run_read_only(library, "list", "--json")
    assert r.returncode == 0, r
    assert [(e["name"], e["tags"]) for e in json.loads(r.stdout)] == [("a", ["keep"]), ("b", [])]
    r = run_read_only(library, "show", "a", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "a", r
    r = run_read_only(library, "merge", "a:0.5", "b:0.5", "-o", src / "m.safetensors", "--json")
    assert r.returncode == 0 and (src / "m.safetensors").is_file(), r   # merging entries reads them only
    r = run_read_only(library, "doctor", "--json")   # the check reads (and hashes) only
    assert r.returncode == 0 and json.loads(r.stdout) == [], r
    for args in (["rm", "a"], ["tag", "a", "+x"], ["rename", "a", "c"], ["set", "a", "--base", "x/y"],
                 ["doctor", "--fix"]):
        r = run_read_only(library, *args, "--json")
        assert r.returncode == 3 and _error(r)["code"] == "read-only", (args, r)
    r = run_read_only(library, "add", write_kohya_sd1(src / "c.safetensors", seed=3), "--json")
    assert r.returncode != 0 and "read-only" in r.stdout + r.stderr and "internal" not in r.stdout + r.stderr, r
    assert _files(library) == before  # not even a -shm or -wal file, nor a lock file


def test_a_read_only_home_that_needs_a_migration_says_read_only(tmp_home):
    """No migration is tried where none can be written: an old database on a read-only home is `read-only`
    (with the reading commands' hint), not `internal: unable to open database file`."""
    tmp_home.mkdir()
    shutil.copy(DATA / "registry-0001_initial.db", tmp_home / "registry.db")
    r = run_read_only(tmp_home, "list", "--json")
    assert r.returncode == 3 and _error(r)["code"] == "read-only", r


@pytest.mark.parametrize("args", [["tag", "a", "+x"], ["rename", "a", "c"], ["set", "a", "--base", "x/y"]])
def test_a_database_that_cannot_grow_is_disk_full(library, args):
    r = run_with_file_size_limit(library, 1024, *args, "--json")
    assert r.returncode == 3 and _error(r)["code"] == "disk-full", r
    r = run_with_file_size_limit(library, 1024, "list", "--json")   # reading still works
    assert r.returncode == 0 and [e["name"] for e in json.loads(r.stdout)] == ["a", "b"], r


def test_a_full_disk_reads_and_refuses_database_writes_with_disk_full(library):
    r = run_on_full_disk(library, "list", "--json")
    assert r.returncode == 0 and [e["name"] for e in json.loads(r.stdout)] == ["a", "b"], r
    for args in (["tag", "a", "+x"], ["rename", "a", "c"], ["set", "a", "--base", "x/y"]):
        r = run_on_full_disk(library, *args, "--json")
        assert r.returncode == 3 and _error(r)["code"] == "disk-full", (args, r)


def test_store_put_on_a_full_disk_is_disk_full_and_leaves_no_temp_file(tmp_path):
    """The blob store under a real file-size limit: DiskFull, and nothing left in tmp/ or the objects."""
    import subprocess
    import sys

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 300_000)
    script = ("import resource, sys\n"
              "from registry.store import BlobStore\n"
              "from registry.errors import DiskFull\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
              "try:\n"
              f"    BlobStore({str(tmp_path / 'blobs')!r}).put({str(big)!r})\n"
              "except DiskFull as err:\n"
              "    print(err.code)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "disk-full", r
    left = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert left == [], left
