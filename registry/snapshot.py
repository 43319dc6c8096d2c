"""A read snapshot of the SQLite library with the stdlib driver (no SQLAlchemy import: ``lora list`` starts
fast), that also works where the home cannot be written.

A WAL database needs its ``-shm`` file beside it even to read. On a read-only mount, or in a folder this user
cannot write, the plain open fails; ``mode=ro`` then reads through a live writer's ``-wal``/``-shm`` files, and
when there are none, ``immutable=1`` reads the file as it is (nothing can be half-written in a WAL-less file
that nobody can write). Failures come back as ``DamagedLibrary`` / ``ReadOnly`` / ``DiskFull``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from registry.failures import damaged, from_sqlite_error
from registry.store import any_blob

TIMEOUT_S = 60


def open_snapshot(path: Path) -> tuple[sqlite3.Connection, Optional[str]]:
    """A connection inside one read transaction on ``path``, and the database's schema revision (None when it
    has no schema yet). The caller closes the connection."""
    path = Path(path)
    try:
        return _open(str(path), uri=False)
    except sqlite3.Error as err:
        if not _may_read_only(err):
            raise from_sqlite_error(err, path) or err
        first = err
    for target in _read_only_uris(path):
        try:
            return _open(target, uri=True)
        except sqlite3.Error:
            continue
    raise from_sqlite_error(first, path) or first


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A plain connection to ``path`` in a home this process cannot write (for SQLAlchemy's ``creator``):
    ``mode=ro``, else ``immutable=1``, whichever reads; writes through it fail as SQLite READONLY."""
    path = Path(path)
    last: Optional[sqlite3.Error] = None
    for target in _read_only_uris(path):
        conn = sqlite3.connect(target, timeout=TIMEOUT_S, uri=True, check_same_thread=False)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # an open fails only when it reads
            return conn
        except sqlite3.Error as err:
            conn.close()
            last = err
    assert last is not None
    raise last


def _read_only_uris(path: Path) -> list[str]:
    file_uri = "file:" + quote(str(path.absolute()), safe="/")  # quoted: `?` or `#` in a home stay in the path
    return [f"{file_uri}?{options}" for options in _read_only_options(path)]


def _open(target: str, *, uri: bool) -> tuple[sqlite3.Connection, Optional[str]]:
    conn = sqlite3.connect(target, timeout=TIMEOUT_S, isolation_level=None, uri=uri)
    try:
        conn.execute("BEGIN")  # one snapshot for the several queries of a call
        rows = conn.execute("SELECT name FROM sqlite_master WHERE name = 'alembic_version'").fetchall()
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone() if rows else None
        return conn, (revision[0] if revision is not None else None)
    except BaseException:
        conn.close()
        raise


def _may_read_only(err: sqlite3.Error) -> bool:
    """Failures a read-only open may avoid: no -shm/-wal could be made (read-only folder, or a full disk)."""
    text = str(err).lower()
    return any(s in text for s in ("unable to open", "readonly", "disk is full", "disk i/o error"))


def _read_only_options(path: Path) -> list[str]:
    options = ["mode=ro"]
    wal = Path(f"{path}-wal")
    if not wal.exists() or wal.stat().st_size == 0:  # immutable ignores a WAL: only when there is none
        options.append("immutable=1")
    return options


def refuse_lost_database(path: Path, objects: Path) -> None:
    """No database file at ``path``: a new library, unless the store already holds blobs (then it was lost,
    and reading it as empty would hide every adapter)."""
    if any_blob(objects):
        raise damaged(path, f"it is missing, but the store holds adapters ({objects})")


def refuse_damaged_file(path: Path, objects: Optional[Path]) -> None:
    """Look before SQLAlchemy touches the file (its connect hook switches it to WAL, a write): a database
    with no schema revision is new only if it has none of our tables and the store (``objects``) no blobs.
    Reads only; raises ``DamagedLibrary``."""
    if not path.exists():
        if objects is not None:
            refuse_lost_database(path, objects)
        return
    conn, revision = open_snapshot(path)
    try:
        if revision is not None:
            return
        ours = conn.execute("SELECT name FROM sqlite_master WHERE name IN ('adapters', 'blobs')").fetchall()
    finally:
        conn.close()
    if ours:
        raise damaged(path, "it has the library's tables but no schema revision")
    if objects is not None and any_blob(objects):
        raise damaged(path, f"it holds no records, but the store holds adapters ({objects})")
