"""``doctor``: check that the records and the bytes agree, and repair what is safe to repair.

Safe repairs: forget an in-place path that is gone when another copy of its bytes is kept, restore a lost or
corrupt blob from an in-place copy with the right hash, refresh the remembered stat of an in-place file whose
bytes did not change, drop content records that no adapter uses, delete stale temp files and the folders
and downloads that crashed conversions and pulls left in the staging folder. Adapters are never removed:
when their bytes are gone the finding says so.

Nothing stored is ever deleted here. Stored bytes that no record refers to (orphans) are moved to
``<home>/quarantine/<date>/`` (``lora doctor --empty-quarantine`` deletes them), under the store's exclusive
lock so no ``add`` is between writing a blob and committing its record. When *no* stored blob has a record the
records look lost, not the blobs (more than one blob and no entry at all): they are left where they are and
the finding points at ``--rebuild``.

Findings are taken from one snapshot of the records, and ``rm`` may remove an entry while doctor looks at its
bytes; so every problem about an entry is checked against the records again before it is reported (M4).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat as stat_mod
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

from sqlalchemy import delete, select

from registry.failures import from_os_error, read_only, writable
from registry.models import Adapter, Blob, File, utcnow
from registry.records import Finding
from registry.store import CONVERT_PREFIX, BlobStore, hash_file, staging_lock

QUARANTINE = "quarantine"
# The staging folder's download files, named by lorahub_cli.sources.url (see its docstring): the partial and
# its state under a per-URL lock, and each pull's own complete file with the pid that made it.
_PART, _PART_STATE, _URL_LOCK, _DOWNLOAD = ".part", ".part.json", ".lock", ".download"


class Registry(Protocol):
    """What doctor needs of ``registry.api.Registry`` (which calls it: a Protocol, so no import cycle)."""

    home: Path
    db: Any
    store: BlobStore
    staging_dir: Path


def run_doctor(reg: "Registry", *, fix: bool, verify_hashes: bool) -> list[Finding]:
    if fix and Path(reg.home).is_dir() and not writable(Path(reg.home)):
        raise read_only(Path(reg.home))  # repairs write; the check alone works on a read-only home
    findings: list[Finding] = []
    db, store = reg.db, reg.store
    with db.read() as s:  # one snapshot; each problem is re-checked against the records before it is reported
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
        if fid in stats and stat_mod.S_ISREG(stats[fid].st_mode):  # never restore from a device or FIFO
            live_copies.setdefault(blob_id, []).append(path)
    for fid, blob_id, path, size, mtime_ns in files:
        sha, _bsize, stored = blobs[blob_id]
        name = names.get(blob_id)
        f = None
        if fid in stats:
            f = _check_in_place_file(db, fid, path, sha, name, (size, mtime_ns), stats[fid], fix=fix,
                                     verify_hashes=verify_hashes)
        if f is None and fid in stats:
            continue
        if not _file_recorded(db, fid):
            continue  # forgotten meanwhile (`lora rm`): not a problem
        if f is None or f.problem == "missing-file":
            others = stored or any(p != path for p in live_copies.get(blob_id, []))
            f = _missing_file(db, fid, path, name, sha, others, fix=fix)
        findings.append(f)

    # stored blobs: present and intact?
    for blob_id, (sha, size, stored) in blobs.items():
        name = names.get(blob_id)
        if not stored:
            if name is not None and blob_id not in with_files and _entry_recorded(db, blob_id, stored=False):
                findings.append(Finding("no-file", "no stored bytes and no in-place file left", name, sha,
                                        action="restore the file and `lora add` it again, or `lora rm` it"))
            continue
        path = store.path_for(sha)
        problem, detail = _stored_problem(store, path, sha, size, verify_hashes)
        if problem is None or not _entry_recorded(db, blob_id, stored=True):
            continue  # intact, or removed meanwhile
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


def _missing_file(db, fid: int, path: str, name: Optional[str], sha: str, others: bool, *, fix: bool) -> Finding:
    f = Finding("missing-file", f"registered in place but no longer there: {path}", name, sha, path)
    if fix and others:
        with db.write() as w:
            w.execute(delete(File).where(File.id == fid))
        f.fixed, f.action = True, "forgot the path (another copy of the bytes is kept)"
    elif not others:
        f.action = "it was the only copy: restore the file, or `lora rm` the adapter"
    return f


def _stored_problem(store: BlobStore, path: Path, sha: str, size: int,
                    verify_hashes: bool) -> tuple[Optional[str], str]:
    """(problem, detail) for the stored bytes of ``sha``, or (None, "") when they are intact."""
    try:
        st = os.stat(path)
        if not stat_mod.S_ISREG(st.st_mode):
            return "hash-mismatch", f"the stored bytes are not a regular file: {path}"
        if st.st_size != size:
            return "hash-mismatch", f"the stored bytes have the wrong size: {path}"
        if verify_hashes and hash_file(path)[0] != sha:
            return "hash-mismatch", f"the stored bytes do not match their sha256: {path}"
    except FileNotFoundError:  # also when `rm` unlinks it while it is being hashed
        return "missing-blob", f"the stored bytes are missing: {path}"
    return None, ""


def _entry_recorded(db, blob_id: int, *, stored: bool) -> bool:
    """Is an adapter still recorded for these bytes, as stored (or not) as the snapshot said?"""
    with db.read() as s:
        row = s.execute(select(Blob.stored).join(Adapter, Adapter.blob_id == Blob.id)
                        .where(Blob.id == blob_id)).first()
    return row is not None and bool(row.stored) == stored


def _file_recorded(db, fid: int) -> bool:
    with db.read() as s:
        return s.get(File, fid) is not None


def _check_in_place_file(db, fid: int, path: str, sha: str, name: Optional[str], remembered: tuple,
                         st: os.stat_result, *, fix: bool, verify_hashes: bool) -> Optional[Finding]:
    """Does an in-place file still hold its bytes? Re-hashed unless ``verify_hashes`` is off: an unchanged
    size and mtime do not rule out bit rot (rescans trust them for speed; doctor is the check that does not).
    With ``verify_hashes`` off only a changed size is certain to mean other bytes. Only a regular file is read
    (a symlink to /dev/zero or a FIFO put in its place is reported, never read)."""
    again = "run `lora add --in-place` on it again to record the new content"
    if not stat_mod.S_ISREG(st.st_mode):
        return Finding("changed-file", "the path no longer holds a regular file (a device, FIFO or folder)",
                       name, sha, path, action=f"put the file back, or {again}")
    same_stat = (st.st_size, st.st_mtime_ns) == remembered
    if not verify_hashes:
        if remembered[0] is not None and st.st_size != remembered[0]:
            return Finding("changed-file", f"the file's size changed ({remembered[0]} -> {st.st_size} bytes)",
                           name, sha, path, action=again)
        return None
    try:
        actual = _hash_regular(Path(path))
    except FileNotFoundError:
        return Finding("missing-file", "", name, sha, path)  # gone since the stat: the caller reports it
    if actual is None:
        return Finding("changed-file", "the path no longer holds a regular file (a device, FIFO or folder)",
                       name, sha, path, action=f"put the file back, or {again}")
    if actual == sha:
        if fix and not same_stat:  # same bytes, new stat: remember it so the next scan skips it again
            _remember_stat(db, fid, (st.st_size, st.st_mtime_ns))
        return None
    f = Finding("changed-file", f"the file now holds other bytes (sha256 {actual[:12]}...)", name, sha, path,
                action=again)
    if same_stat:  # bit rot: a rescan would trust the stat and skip it
        if fix:
            _remember_stat(db, fid, (None, None))
            f.action = ("forgot its size and mtime (unchanged, so a rescan would have skipped it): run "
                        "`lora add --in-place` on it again to record the new content")
        else:
            f.action = ("its size and mtime did not change, so a rescan skips it: `lora doctor --fix`, then "
                        "`lora add --in-place` on it again to record the new content")
    return f


def _hash_regular(path: Path) -> Optional[str]:
    """sha256 of a regular file; None when what is there now is not one (swapped since the stat: O_NONBLOCK
    so a FIFO cannot hang the open, fstat so a device is never read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        if err.errno in (errno.ENXIO, errno.EISDIR):
            return None
        raise
    try:
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            return None
    finally:
        os.close(fd)
    return hash_file(path)[0]


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


# --- the store: orphans to quarantine -------------------------------------------------------------------
def _scan_store(reg: "Registry", *, fix: bool) -> list[Finding]:
    """Orphan blobs and stale temp files, judged under the exclusive lock: no add is half-way meanwhile."""
    findings = []
    store = reg.store
    if not store.root.is_dir():
        return findings
    with store.exclusive_lock():
        with reg.db.read() as s:
            stored = set(s.scalars(select(Blob.sha256).where(Blob.stored.is_(True))))
            any_entry = s.scalar(select(Adapter.id).limit(1)) is not None
        orphans = [(name, path) for name, path in store.iter_blobs() if name not in stored]
        # several blobs and no entry at all: the records look lost (one is what a first add killed before
        # its commit leaves, and --fix tidies that one away)
        records_lost = len(orphans) > 1 and not any_entry
        folder = quarantine_folder(reg.home)
        for name, path in orphans:
            f = Finding("orphan-blob", f"stored bytes that no record refers to ({_size(path)} bytes)",
                        sha256=name, path=str(path))
            if records_lost:
                f.action = ("left in place: no stored file has a record, so the records look damaged; "
                            "`lora doctor --rebuild` records them again")
            elif fix:
                moved = _quarantine(path, folder)
                f.fixed, f.action = True, f"moved to {moved} (`lora doctor --empty-quarantine` deletes it)"
            findings.append(f)
        for path in store.temp_files():
            f = Finding("stale-temp", "a temp file left by an interrupted add", path=str(path))
            if fix:
                path.unlink(missing_ok=True)
                f.fixed, f.action = True, "deleted the file (a partial copy)"
            findings.append(f)
    return findings


def quarantine_folder(home: Path) -> Path:
    """Today's quarantine folder (not created here)."""
    return Path(home) / QUARANTINE / datetime.now(timezone.utc).strftime("%Y-%m-%d")


def _quarantine(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` (same filesystem: a rename), never over another file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{path.name}.{n}"
    try:
        os.rename(path, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        shutil.move(str(path), str(target))  # the store on another disk (a symlinked folder): copy, then unlink
    return target


def empty_quarantine(home: Path) -> list[Finding]:
    """Delete everything in ``<home>/quarantine`` (what ``doctor --fix`` moved there); one finding per file."""
    root = Path(home) / QUARANTINE
    if not root.is_dir():
        return []
    findings = [Finding("quarantined", f"{_size(path)} bytes, quarantined by `lora doctor --fix`", sha256=None,
                        path=str(path), fixed=True, action="deleted the file")
                for path in sorted(p for p in root.rglob("*") if not p.is_dir())]
    try:
        shutil.rmtree(root)
    except OSError as err:  # a read-only home
        raise from_os_error(err, f"cannot empty {root}", root) or err
    return findings


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


# --- the staging folder: crashed conversions and downloads ----------------------------------------------
def _scan_staging(reg: "Registry", *, fix: bool) -> list[Finding]:
    """Conversion folders left by a crash, judged under the staging lock (no conversion is running
    meanwhile), and downloads no live pull holds (see ``_downloads``)."""
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
    findings.extend(_downloads(staging, fix=fix))
    return findings


def _downloads(staging: Path, *, fix: bool) -> list[Finding]:
    """Partial URL downloads whose per-URL lock nobody holds (a pull that died, or gave up for the network),
    and complete downloads whose pull process is gone. A held lock means a pull is running: left alone."""
    findings = []
    for part in sorted(staging.glob(f"url-*{_PART}")):
        key = part.name[: -len(_PART)]
        state = staging / f"{key}{_PART_STATE}"
        lock = staging / f"{key}{_URL_LOCK}"
        with _url_lock_if_free(lock) if fix else _peek_url_lock(lock) as free:
            if not free or not part.exists():
                continue  # a pull is using it (or just finished with it)
            f = Finding("partial-download", f"a partial download no pull is using ({_size(part)} bytes; the "
                                            "same pull resumes it)", path=str(part))
            if fix:
                part.unlink(missing_ok=True)
                state.unlink(missing_ok=True)
                f.fixed, f.action = True, "deleted it (pulling the URL again downloads it whole)"
            else:
                f.action = "pull the URL again to resume it, or `lora doctor --fix` to delete it"
            findings.append(f)
    for lock in sorted(staging.glob(f"url-*{_URL_LOCK}")):
        if (staging / (lock.name[: -len(_URL_LOCK)] + _PART)).exists():
            continue  # judged with its partial above
        with _url_lock_if_free(lock) if fix else _peek_url_lock(lock) as free:
            if free:
                findings.append(Finding("stale-temp", "a download's lock file left by a killed pull", path=str(lock),
                                        fixed=fix, action="deleted the file" if fix else None))
    for done in sorted(staging.glob(f"url-*{_DOWNLOAD}")):
        pid = _pid_of(done.name)
        if pid is None or _alive(pid):
            continue
        f = Finding("partial-download", f"a finished download whose pull (process {pid}) is gone", path=str(done))
        if fix:
            done.unlink(missing_ok=True)
            f.fixed, f.action = True, "deleted the file"
        findings.append(f)
    return findings


@contextmanager
def _url_lock_if_free(lock: Path) -> Iterator[bool]:
    """Take a download's lock without waiting, with the protocol of lorahub_cli.sources.url: its holder removes
    the lock file before unlocking, so a lock taken must still be the file at that path. Yields True while this
    process holds it (removing it on the way out, as a pull does), False when a pull holds it."""
    try:
        import fcntl
    except ImportError:  # no locks: a pull may be running; report nothing, delete nothing
        yield False
        return
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a read-only home: no pull can be writing there; nothing can be removed either
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            if not (os.path.exists(lock) and os.path.samestat(os.fstat(fd), os.stat(lock))):
                continue  # a pull removed the file we locked: look again
            try:
                yield True
            finally:
                lock.unlink(missing_ok=True)
            return
        finally:
            os.close(fd)
    yield False


@contextmanager
def _peek_url_lock(lock: Path) -> Iterator[bool]:
    """Is a download's lock free (no lock file at all, or one nobody holds)? Only looks: a check writes
    nothing, so it also works on a read-only home."""
    try:
        import fcntl
    except ImportError:  # no locks: a pull may be running
        yield False
        return
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        free = True
    except BlockingIOError:
        free = False
    finally:
        os.close(fd)
    yield free


def _pid_of(name: str) -> Optional[int]:
    """``url-<key>.<pid>-<random>.download`` -> pid."""
    parts = name.split(".")
    if len(parts) < 3:
        return None
    pid = parts[-2].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

