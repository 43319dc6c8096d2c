"""``doctor``: check that the records and the bytes agree, and repair what is safe to repair.

Safe repairs: delete stored bytes no record refers to and stale temp files (under the store's exclusive
lock, so no ``add`` is between writing a blob and committing its record) and conversion folders left in the
staging folder by a crash (under the staging lock: a conversion in progress is never taken for one), forget
an in-place path that is
gone when another copy of its bytes is kept, restore a lost or corrupt blob from an in-place copy with the
right hash, refresh the remembered stat of an in-place file whose bytes did not change, and drop content
records that no adapter uses. Adapters are never removed: when their bytes are gone the finding says so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional, Protocol

from sqlalchemy import delete, select

from registry.errors import NotFound
from registry.models import Adapter, Blob, File, utcnow
from registry.records import Finding
from registry.store import CONVERT_PREFIX, BlobStore, hash_file, staging_lock


class Registry(Protocol):
    """What doctor needs of ``registry.api.Registry`` (which calls it: a Protocol, so no import cycle)."""

    db: Any
    store: BlobStore
    staging_dir: Path


def run_doctor(reg: "Registry", *, fix: bool, verify_hashes: bool) -> list[Finding]:
    findings: list[Finding] = []
    db, store = reg.db, reg.store
    with db.read() as s:
        blobs = {b.id: (b.sha256, b.size, b.stored) for b in s.scalars(select(Blob))}
        names = {blob_id: name for blob_id, name in s.execute(select(Adapter.blob_id, Adapter.name))}
        files = [(f.id, f.blob_id, f.path, f.size, f.mtime_ns) for f in s.scalars(select(File).order_by(File.id))]

    # in-place files: still there, still the same bytes?
    stats: dict[int, os.stat_result] = {}
    for fid, _blob_id, path, _size, _mtime in files:
        try:
            stats[fid] = os.stat(path)
        except OSError:
            pass
    with_files = {blob_id for _fid, blob_id, *_ in files}
    live_copies: dict[int, list[str]] = {}  # blob id -> its in-place files that are still there
    for fid, blob_id, path, _size, _mtime in files:
        if fid in stats:
            live_copies.setdefault(blob_id, []).append(path)
    for fid, blob_id, path, size, mtime_ns in files:
        sha, _bsize, stored = blobs[blob_id]
        name = names.get(blob_id)
        if fid not in stats:
            others = stored or blob_id in live_copies
            f = Finding("missing-file", f"registered in place but no longer there: {path}", name, sha, path)
            if fix and others:
                with db.write() as w:
                    w.execute(delete(File).where(File.id == fid))
                f.fixed, f.action = True, "forgot the path (another copy of the bytes is kept)"
            elif not others:
                f.action = "it was the only copy: restore the file, or `lora rm` the adapter"
            findings.append(f)
            continue
        f = _check_in_place_file(db, fid, path, sha, name, (size, mtime_ns), stats[fid], fix=fix,
                                 verify_hashes=verify_hashes)
        if f is not None:
            findings.append(f)

    # stored blobs: present and intact?
    for blob_id, (sha, size, stored) in blobs.items():
        name = names.get(blob_id)
        if not stored:
            if name is not None and blob_id not in with_files:  # (a vanished file was reported above)
                findings.append(Finding("no-file", "no stored bytes and no in-place file left", name, sha,
                                        action="restore the file and `lora add` it again, or `lora rm` it"))
            continue
        path = store.path_for(sha)
        problem: Optional[str] = None
        if not path.is_file():
            problem, detail = "missing-blob", f"the stored bytes are missing: {path}"
        elif path.stat().st_size != size:
            problem, detail = "hash-mismatch", f"the stored bytes have the wrong size: {path}"
        elif verify_hashes:
            try:
                ok, _ = store.verify(sha)
            except NotFound:
                ok = False
            if not ok:
                problem, detail = "hash-mismatch", f"the stored bytes do not match their sha256: {path}"
        if problem is None:
            continue
        f = Finding(problem, detail, name, sha, str(path))
        if fix:
            _restore_from_copy(reg, f, sha, live_copies.get(blob_id, []))
        if not f.fixed and not f.action:
            f.action = "`lora add` the original file again (that restores the stored copy), or `lora rm` the adapter"
        findings.append(f)

    # content records no adapter uses (left by an interrupted removal)
    for blob_id, (sha, _size, stored) in blobs.items():
        if blob_id not in names:
            f = Finding("orphan-record", "a content record that no adapter uses", None, sha)
            if fix:
                with db.write() as w:
                    if w.scalar(select(Adapter.id).where(Adapter.blob_id == blob_id)) is None:
                        w.execute(delete(Blob).where(Blob.id == blob_id))
                        f.fixed, f.action = True, "deleted the record"
            findings.append(f)

    findings.extend(_scan_store(reg, fix=fix))
    findings.extend(_scan_staging(reg, fix=fix))
    return findings


def _check_in_place_file(db, fid: int, path: str, sha: str, name: Optional[str], remembered: tuple,
                         st: os.stat_result, *, fix: bool, verify_hashes: bool) -> Optional[Finding]:
    """Does an in-place file still hold its bytes? Re-hashed unless ``verify_hashes`` is off: an unchanged
    size and mtime do not rule out bit rot (rescans trust them for speed; doctor is the check that does not).
    With ``verify_hashes`` off only a changed size is certain to mean other bytes."""
    same_stat = (st.st_size, st.st_mtime_ns) == remembered
    if not verify_hashes:
        if remembered[0] is not None and st.st_size != remembered[0]:
            return Finding("changed-file", f"the file's size changed ({remembered[0]} -> {st.st_size} bytes)",
                           name, sha, path, action="run `lora add --in-place` on it again to record the new content")
        return None
    actual, _ = hash_file(Path(path))
    if actual == sha:
        if fix and not same_stat:  # same bytes, new stat: remember it so the next scan skips it again
            _remember_stat(db, fid, (st.st_size, st.st_mtime_ns))
        return None
    f = Finding("changed-file", f"the file now holds other bytes (sha256 {actual[:12]}...)", name, sha, path,
                action="run `lora add --in-place` on it again to record the new content")
    if same_stat:  # bit rot: a rescan would trust the stat and skip it
        if fix:
            _remember_stat(db, fid, (None, None))
            f.action = ("forgot its size and mtime (unchanged, so a rescan would have skipped it): run "
                        "`lora add --in-place` on it again to record the new content")
        else:
            f.action = ("its size and mtime did not change, so a rescan skips it: `lora doctor --fix`, then "
                        "`lora add --in-place` on it again to record the new content")
    return f


def _remember_stat(db, fid: int, stat: tuple) -> None:
    with db.write() as w:
        row = w.get(File, fid)
        if row is not None:
            row.size, row.mtime_ns = stat
            row.checked_at = utcnow()


def _restore_from_copy(reg: "Registry", f: Finding, sha: str, copies: list[str]) -> None:
    for path in copies:
        try:
            reg.store.put(Path(path), expected_sha256=sha)
        except Exception:
            continue  # that copy changed too; try the next
        f.fixed, f.action = True, f"restored the bytes from {path}"
        return


def _scan_store(reg: "Registry", *, fix: bool) -> list[Finding]:
    """Orphan blobs and stale temp files, judged under the exclusive lock: no add is half-way meanwhile."""
    findings = []
    store = reg.store
    if not store.root.is_dir():
        return findings
    with store.exclusive_lock():
        with reg.db.read() as s:
            stored = set(s.scalars(select(Blob.sha256).where(Blob.stored.is_(True))))
        for name, path in store.iter_blobs():
            if name in stored:
                continue
            f = Finding("orphan-blob", f"stored bytes that no record refers to ({path.stat().st_size} bytes)",
                        sha256=name, path=str(path))
            if fix:
                path.unlink(missing_ok=True)
                f.fixed, f.action = True, "deleted the file"
            findings.append(f)
        for path in store.temp_files():
            f = Finding("stale-temp", "a temp file left by an interrupted add", path=str(path))
            if fix:
                path.unlink(missing_ok=True)
                f.fixed, f.action = True, "deleted the file"
            findings.append(f)
    return findings


def _scan_staging(reg: "Registry", *, fix: bool) -> list[Finding]:
    """Conversion folders left by a crash, judged under the staging lock: no conversion is running meanwhile.
    (Its other files are resumable downloads, kept on purpose.)"""
    findings = []
    staging = reg.staging_dir
    if not staging.is_dir():
        return findings
    with staging_lock(staging, exclusive=True):
        for path in sorted(staging.glob(CONVERT_PREFIX + "*")):
            f = Finding("stale-temp", "a conversion folder left by an interrupted add", path=str(path))
            if fix:
                shutil.rmtree(path, ignore_errors=True)
                f.fixed, f.action = True, "deleted the folder"
            findings.append(f)
    return findings
