"""Batched adds (``ingest_many`` -> ``Registry.add_many``, what `lora install` stores with): one transaction and
one filesystem sync per batch, each item's own result or error, and the rule of ``add`` kept for the batch:
a process killed before the commit leaves only unrecorded blobs (doctor's orphan-blob), never a record
without its bytes; killed after it, every record with intact bytes. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from lorahub_cli.errors import AlreadyExists
from lorahub_cli.ingest import IngestItem, ingest, ingest_many
from registry.store import hash_file
from tests.registry.helpers import write_kohya_sd1
from tests.registry.test_reliability import assert_consistent

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _files(src, n: int, seed: int = 0):
    return [write_kohya_sd1(src / f"b{i}.safetensors", seed=seed + i) for i in range(n)]


def test_a_batch_is_stored_with_one_sync_and_recorded_in_one_transaction(registry, src, monkeypatch):
    from sqlalchemy import event

    import registry.publish as publish

    files = _files(src, 5)
    syncs = []
    real_sync = publish.sync_filesystem
    monkeypatch.setattr(publish, "sync_filesystem", lambda path: (syncs.append(path), real_sync(path)))
    commits = []
    event.listen(registry.db.engine, "commit", lambda conn: commits.append(1))
    results = ingest_many([IngestItem(p, name_hint=f"set-{i}") for i, p in enumerate(files)], registry)
    assert [r.status for r in results] == ["added"] * 5
    assert [r.name for r in results] == [f"set-{i}" for i in range(5)]
    assert [r.path for r in results] == [str(p) for p in files]
    assert len(syncs) == 1 and len(commits) == 1
    for r in results:
        assert registry.store.verify(r.sha256) == (True, os.path.getsize(r.path))
    assert_consistent(registry, set())


def test_each_item_gets_its_own_result_and_a_refused_one_leaves_nothing(registry, src):
    files = _files(src, 4)
    ingest(files[0], registry, name="taken")
    items = [IngestItem(files[1], name="taken"),            # the name is someone else's
             IngestItem(files[2], name_hint="fine"),
             IngestItem(files[0], name_hint="again"),       # bytes already in the library
             IngestItem(src / "missing.safetensors"),       # not there at all
             IngestItem(files[3], name_hint="fine")]        # the same hint: made unique in the transaction
    results = ingest_many(items, registry)
    assert isinstance(results[0], AlreadyExists) and results[0].code == "already-exists"
    assert (results[1].status, results[1].name) == ("added", "fine")
    assert (results[2].status, results[2].name) == ("duplicate", "taken")
    assert results[3].code == "not-found"
    assert (results[4].status, results[4].name) == ("added", "fine-2")
    assert sorted(s.name for s in registry.list()) == ["fine", "fine-2", "taken"]
    assert not registry.store.has(hash_file(files[1])[0])   # the refused item's blob was not kept
    assert_consistent(registry, set())


def test_the_same_bytes_twice_in_one_batch_are_one_entry(registry, src):
    (one,) = _files(src, 1)
    copy = src / "copy.safetensors"
    copy.write_bytes(one.read_bytes())
    results = ingest_many([IngestItem(one), IngestItem(copy)], registry)
    assert [r.status for r in results] == ["added", "duplicate"] and results[0].name == results[1].name
    assert len(registry.get(results[0].name).sources) == 2
    assert_consistent(registry, set())


def test_two_items_naming_one_name_refuse_the_second_and_never_wait_on_their_own_lock(registry, src):
    """The refused item's new blob is collected under the store's exclusive lock: taken while the batch still
    held its shared one, the process waited on itself for ever (and held off every other writer)."""
    import threading

    first, second = _files(src, 2)
    results = []
    worker = threading.Thread(target=lambda: results.extend(
        ingest_many([IngestItem(first, name="same"), IngestItem(second, name="same")], registry)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "ingest_many hung"
    assert results[0].status == "added" and isinstance(results[1], AlreadyExists)
    assert not registry.store.has(hash_file(second)[0])
    assert_consistent(registry, set())


def test_an_item_whose_file_goes_away_fails_alone(registry, src, monkeypatch):
    files = _files(src, 3)
    real_put = registry.store.put

    def put(path, *args, **kwargs):
        if path == files[1]:
            os.unlink(path)   # gone between its check and its store
        return real_put(path, *args, **kwargs)

    monkeypatch.setattr(registry.store, "put", put)
    results = ingest_many([IngestItem(p, name_hint=f"v{i}") for i, p in enumerate(files)], registry)
    assert results[1].code == "not-found" and [results[0].status, results[2].status] == ["added", "added"]
    assert sorted(s.name for s in registry.list()) == ["v0", "v2"]
    assert_consistent(registry, set())


_BATCH = """
import sys
from pathlib import Path
from lorahub_cli.ingest import IngestItem, ingest_many
from registry.api import Registry
with Registry(sys.argv[1] or None, home=sys.argv[2]) as reg:
    ingest_many([IngestItem(p) for p in sys.argv[3:]], reg)
"""


@pytest.mark.parametrize("point, leftover, recorded", [("before-commit", "orphan-blob", 0),
                                                       ("after-commit", None, 3)])
def test_a_batch_killed_at_either_side_of_its_commit_leaves_a_consistent_library(
        point, leftover, recorded, registry, db_url, tmp_home, src):
    files = _files(src, 3)
    ingest(write_kohya_sd1(src / "earlier.safetensors", seed=99), registry)   # a library with a record already
    env = {**os.environ, "LORAHUB_TEST_KILL_AT": point, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", _BATCH, db_url or "", str(tmp_home), *map(str, files)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(registry.list()) == 1 + recorded   # all of the batch or none of it
    findings = assert_consistent(registry, {leftover} if leftover else set())
    assert [f.problem for f in findings] == ([leftover] * 3 if leftover else [])
    if leftover:
        assert all(f.fixed for f in registry.doctor(fix=True))
    results = ingest_many([IngestItem(p) for p in files], registry)   # the rerun completes the batch
    assert [r.status for r in results] == (["added"] * 3 if not recorded else ["duplicate"] * 3)
    assert_consistent(registry, set())
