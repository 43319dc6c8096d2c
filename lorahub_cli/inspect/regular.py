"""Opening input files: only regular files, never a FIFO, device or socket (they hang a reader or never end).

``open_regular`` is the one way the project opens a file it did not write: it stats the path (following
symlinks), refuses what is not a regular file, opens with O_NONBLOCK (a path swapped for a FIFO between the
stat and the open cannot block the open) and checks the opened descriptor again with fstat, so what is read
is what was checked. ``regular_size`` is the same check without keeping the file open.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Union

from lorahub_cli.errors import NotAFile, NotAnAdapterFile, NotFound

PathLike = Union[str, os.PathLike]
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: PathLike, buffering: int = -1) -> BinaryIO:
    """``path`` opened for binary reading; raises NotFound, NotAFile (devices, FIFOs, sockets) or
    NotAnAdapterFile (a folder, permission denied) with the path in the message."""
    _check(_stat(path, os.stat), path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise _open_error(err, path) from None
    try:
        _check(os.fstat(fd), path)   # the path may have been replaced since the stat
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def regular_size(path: PathLike) -> int:
    """The size of the regular file at ``path`` (same refusals as ``open_regular``)."""
    return _check(_stat(path, os.stat), path).st_size


def is_regular(path: PathLike) -> bool:
    """Whether ``path`` is (or links to) a regular file; False for anything unreadable, including names too long."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _stat(path: PathLike, how) -> os.stat_result:
    try:
        return how(path)
    except (OSError, ValueError) as err:
        raise _open_error(err, path) from None


def _check(st: os.stat_result, path: PathLike) -> os.stat_result:
    if stat.S_ISREG(st.st_mode):
        return st
    if stat.S_ISDIR(st.st_mode):   # the code a folder has always had
        raise NotAnAdapterFile(f"{path} is a folder, not a file")
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
    raise NotAFile(f"{path} is {kind}, not a regular file; lora reads only regular files")


def _open_error(err: Exception, path: PathLike) -> Exception:
    code = getattr(err, "errno", None)
    if code in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"no such file: {path}")
    if code in (errno.EACCES, errno.EPERM):
        return NotAnAdapterFile(f"{path} cannot be read (permission denied)", hint="Check the file's permissions.")
    if code == errno.EISDIR:
        return NotAnAdapterFile(f"{path} is a folder, not a file")
    if code == errno.ENAMETOOLONG:
        return NotFound(f"the file name is too long for this file system: {Path(path).name[:60]}…")
    if code == errno.ELOOP:
        return NotAFile(f"{path} is a symbolic link loop")
    return NotAnAdapterFile(f"{path} cannot be read ({os.strerror(code) if code else err})")
