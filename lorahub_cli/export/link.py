"""How an adapter's bytes appear in a UI folder: a hard link, a symlink or a copy.

``auto`` (the default) tries a hard link (no space used, survives the library moving), then a symlink (across
filesystems), then a copy (filesystems without either, e.g. FAT or some network shares), and remembers per
target folder what failed, so a 5,000-entry sync on another filesystem tries the hard link once, not 5,000
times. Every fallback is reported with its reason (``Linker.fallbacks``), so it is said aloud. An explicit
method never falls back: it fails with ``link-impossible``.

Every name goes through ``registry.publish``: the link or copy is made under a unique temp name in the target
folder and renamed into place, so a reader (or a kill -9) never sees half a file. Links are published with
``durable=False`` (the stored blob is already on disk; the caller fsyncs each folder once at the end).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lorahub_cli.errors import LinkImpossible, UsageError
from registry.publish import temp_file

METHODS = ("auto", "hardlink", "symlink", "copy")
_CHAIN = ("hardlink", "symlink", "copy")
# errors that mean "this filesystem cannot do that kind of link", not "this one file failed"
_UNSUPPORTED = {errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
_WHY = {errno.EXDEV: "the target is on another filesystem", errno.EPERM: "the filesystem refuses it",
        errno.EOPNOTSUPP: "the filesystem does not support it", errno.EMLINK: "the file has too many links",
        errno.ENOSYS: "the system does not support it"}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"unknown --link {method!r}", hint=f"Use one of: {', '.join(METHODS)}.")
    return method


@dataclass
class Linker:
    """Places files by one method (or ``auto``), remembering per device what does not work there."""

    method: str = "auto"
    fallbacks: list[str] = field(default_factory=list)   # one line per fallback, for the report
    _broken: dict[tuple[int, str], str] = field(default_factory=dict)
    _devices: dict[Path, int] = field(default_factory=dict)

    def place(self, src, dst: Path, *, replace: bool) -> str:
        """Make ``dst`` show ``src``'s bytes; returns the method used. ``replace=False`` never replaces an
        existing name (FileExistsError: the caller reports a collision)."""
        chain = _CHAIN if self.method == "auto" else (self.method,)
        device = self._devices.get(dst.parent)
        if device is None:
            device = self._devices[dst.parent] = _device(dst.parent)
        last: OSError | None = None
        for how in chain:
            if (device, how) in self._broken:
                continue
            try:
                _PLACERS[how](src, dst, replace)
                return how
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED or how == "copy":
                    raise
                why = _WHY.get(exc.errno, os.strerror(exc.errno or 0))
                self._broken[(device, how)] = why
                last = exc
                if self.method != "auto":
                    raise LinkImpossible(f"--link {how} is impossible in {dst.parent}: {why}") from None
                self.fallbacks.append(f"{how} impossible in {dst.parent} ({why}); "
                                      f"using {_CHAIN[_CHAIN.index(how) + 1]}")
        raise last if last is not None else LinkImpossible(f"no way to place {dst}")  # pragma: no cover

    def expected(self, src, dst: Path) -> bool:
        """``dst`` is what ``place`` would have made from ``src`` (a hard link to it, a symlink to it, or a
        copy of its bytes): used after a killed sync, to adopt the files it had already placed."""
        try:
            st = os.lstat(dst)
        except OSError:
            return False
        if os.path.islink(dst):
            return os.readlink(dst) == str(src)
        s = os.stat(src)
        if (st.st_ino, st.st_dev) == (s.st_ino, s.st_dev):
            return True
        return st.st_size == s.st_size and _same_bytes(src, dst)


def _device(folder: Path) -> int:
    for p in (folder, *folder.parents):
        try:
            return os.stat(p).st_dev
        except OSError:
            continue
    return -1


def _hardlink(src: Path, dst: Path, replace: bool) -> None:
    with temp_file(dst.parent, name=dst.name, create=False) as tmp:
        os.link(src, tmp.path)
        tmp.publish(dst, replace=replace, keep_mode=True, durable=False)


def _symlink(src: Path, dst: Path, replace: bool) -> None:
    with temp_file(dst.parent, name=dst.name, create=False) as tmp:
        os.symlink(src, tmp.path)
        tmp.publish(dst, replace=replace, keep_mode=True, durable=False)


def _copy(src: Path, dst: Path, replace: bool) -> None:
    with temp_file(dst.parent, name=dst.name) as tmp:
        shutil.copyfile(src, tmp.path)
        tmp.publish(dst, replace=replace)   # new bytes: fsynced before they get their name


_PLACERS = {"hardlink": _hardlink, "symlink": _symlink, "copy": _copy}


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True
