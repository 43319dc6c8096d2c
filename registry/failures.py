"""What a failure of the database or the disk means for the user: one translation, used by every layer that
touches them (the stdlib read path, SQLAlchemy's error hook in ``db``, the blob store).

- the disk or a size limit stops a write (ENOSPC, EFBIG, EDQUOT, SQLite "database or disk is full") ->
  ``DiskFull``;
- the home cannot be written (a read-only mount, another user's folder, SQLite "readonly") -> ``ReadOnly``;
- the file is not a database, or a damaged one (SQLite NOTADB / CORRUPT) -> ``DamagedLibrary``.

Anything else is left alone (None): the caller re-raises the original, which says more than a guess would.
Stdlib only, so the fast read path can use it without importing SQLAlchemy.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Optional

from registry.errors import DamagedLibrary, DiskFull, LoraError, ReadOnly

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_LOW_SPACE = 1 << 20  # below this a failed write is taken for a full disk


def disk_full(what: str) -> DiskFull:
    return DiskFull(f"{what}: the disk is full, or a size limit (quota, ulimit -f) was reached")


def read_only(folder: Path) -> ReadOnly:
    return ReadOnly(f"cannot write in {folder}: the library is read-only here (a read-only mount, or a folder "
                    "this user cannot write)")


def damaged(path, why: str) -> DamagedLibrary:
    return DamagedLibrary(f"the library database {path} is damaged: {why}")


def from_os_error(err: OSError, what: str, folder: Path) -> Optional[LoraError]:
    """``err`` raised while writing ``what`` under ``folder`` (one of ours)."""
    if err.errno in DISK_FULL_ERRNOS:
        return disk_full(what)
    if err.errno == errno.EROFS or (err.errno in READ_ONLY_ERRNOS and not writable(folder)):
        return read_only(folder)
    return None


def from_sqlite_error(err: BaseException, path: Optional[Path]) -> Optional[LoraError]:
    """A stdlib ``sqlite3`` error on the library file ``path`` (None: not a file we know, e.g. in memory)."""
    name = getattr(err, "sqlite_errorname", None) or _name_from_text(str(err))  # 3.10 has no sqlite_errorname
    where = path if path is not None else Path("(in memory)")
    if name == "SQLITE_FULL":
        return disk_full(f"cannot write the library database {where}")
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return damaged(where, str(err))
    if path is None:
        return None
    if name.startswith("SQLITE_READONLY"):
        return read_only(path.parent)
    if name.startswith("SQLITE_CANTOPEN") and path.parent.is_dir() and not writable(path.parent):
        return read_only(path.parent)  # WAL needs its -shm file beside the database
    if name.startswith("SQLITE_IOERR") and cannot_grow(path.parent):
        return disk_full(f"cannot write the library database {path}")
    return None


def from_postgres_error(err: BaseException) -> Optional[LoraError]:
    state = getattr(err, "sqlstate", None)
    if state in ("53100", "53400"):  # disk_full, configuration_limit_exceeded (temp_file_limit)
        return disk_full("the library database server cannot store more")
    if state == "25006":  # read_only_sql_transaction (a hot standby, default_transaction_read_only)
        return ReadOnly("the library database server accepts reads only")
    return None


def writable(folder: Path) -> bool:
    """Can this process create files in ``folder``? (``access`` also says no for root on a read-only mount.)"""
    return os.access(folder, os.W_OK | os.X_OK)


def cannot_grow(folder: Path) -> bool:
    """Is a failed write in ``folder`` explained by a full disk or a file-size limit?"""
    try:
        import resource

        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return True
    except (ImportError, ValueError, OSError):
        pass
    try:
        return shutil.disk_usage(folder).free < _LOW_SPACE
    except OSError:
        return False


def _name_from_text(text: str) -> str:
    text = text.lower()
    for needle, name in (("database or disk is full", "SQLITE_FULL"), ("file is not a database", "SQLITE_NOTADB"),
                         ("malformed", "SQLITE_CORRUPT"), ("readonly database", "SQLITE_READONLY"),
                         ("unable to open database file", "SQLITE_CANTOPEN"), ("disk i/o error", "SQLITE_IOERR")):
        if needle in text:
            return name
    return ""
