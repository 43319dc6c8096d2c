"""Publishing: the one way the project puts a file or a folder where someone will read it.

Every file lorahub writes goes through here: stored blobs, converted and merged adapters, PNGs, fused
pipelines, run folders and checkpoints, caches and small state files. One file is published in five steps:

  1. a unique temp name in the target's folder (the same filesystem, so the rename is atomic; unique, so two
     writers of one target never share a temp file);
  2. the bytes are written, then fsynced (they are on disk before their name is);
  3. chmod to the mode a plain ``open()`` gives under the umask (temp files are created private, 0600);
  4. rename over the target: a reader sees the old file or the new one, never a part of one;
  5. fsync the folder, so the rename itself survives a crash.

On any failure the temp file is removed and the target is left as it was. A full disk, a quota or a
file-size limit (ENOSPC, EDQUOT, EFBIG, also when a library wraps it) becomes ``DiskFull`` (``disk-full``).
A target is replaced only when it is a regular file or a symlink (the link itself, never what it points to);
a folder, device, FIFO or socket is refused with ``unsafe-output`` before anything is renamed.
(Whether the caller may replace a target at all, and which paths are off limits, is the caller's rule:
``lorahub_cli.targets``.)

A folder (a fused pipeline, a training checkpoint) is published the same way: every file in it fsynced, the
folder renamed into place, and an old folder at the target moved aside first and deleted only once the new
one is in place, so a failure leaves the old one, never neither.

This module is the only place that renames a temp file or folder over a published name; it imports nothing
from ``lorahub_cli`` (both the blob store below and the engine above use it).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from registry.errors import AlreadyExists, DiskFull, UnsafeOutput
from registry.failures import DISK_FULL_ERRNOS as _DISK_FULL
from registry.failures import disk_full as _disk_full
# Rust writers (safetensors) raise their own exception class with the OS error in the text
_WRAPPED_DISK_FULL = re.compile(r"\(os error (%s)\)" % "|".join(str(n) for n in sorted(_DISK_FULL)))
_NAME_ROOM = 80   # of the target's name kept in a temp name: a 255-byte name plus our affixes would not fit

Content = Union[bytes, str, Callable[[Path], None]]


def is_disk_full(exc: BaseException) -> bool:
    """A write that failed for lack of room: no space, over quota, or over the process's file-size limit."""
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL
    return bool(_WRAPPED_DISK_FULL.search(str(exc)))


def disk_full(exc: BaseException, what: Path) -> DiskFull:
    """The error for ``exc`` (one ``is_disk_full`` accepts), raised while writing ``what``."""
    return _disk_full(f"cannot write {what.name} in {what.parent}, nothing was kept")


def shareable_mode(full: int = 0o666) -> int:
    """``full`` (0o666 for a file, 0o777 for a folder) less the process umask: the mode a plain open() /
    mkdir() gives. tempfile makes private 0600 / 0700 entries, which would otherwise become the outputs'."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


# --- files -----------------------------------------------------------------------------------------------
class TempFile:
    """A private temp file that becomes a published name with ``publish``."""

    def __init__(self, path: Path):
        self.path = path
        self.published: Optional[Path] = None

    def publish(self, dst: Union[str, Path], *, replace: bool = True, keep_mode: bool = False,
                durable: bool = True) -> Path:
        """fsync, chmod, rename to ``dst``, fsync the folder. ``replace=False`` never replaces an existing name
        (FileExistsError, and the temp file stays, so the caller may try another name). ``keep_mode``: leave
        the mode alone (a hard link to a file that is not ours, such as a Hugging Face cache blob).
        ``durable=False``: skip both fsyncs, for a batch whose caller made the bytes durable first (hard links
        to stored blobs, or one ``sync_filesystem`` for many small files) and fsyncs each folder once after
        (``lora sync``: two fsyncs per file would cap it near 130 files/s on ext4)."""
        dst = Path(dst)
        try:
            if replace:   # a link never replaces anything
                refuse_unreplaceable(dst)
            if not keep_mode:
                os.chmod(self.path, shareable_mode())
            if durable:
                fsync_path(self.path)
            if replace:
                os.replace(self.path, dst)
            else:
                _link_new(self.path, dst)
            # renaming onto another link of the same file is a no-op that keeps the temp name; a link leaves it
            self.path.unlink(missing_ok=True)
            if durable:
                fsync_path(dst.parent)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(exc, dst) from None
            raise
        self.published = dst
        return dst


@contextmanager
def temp_file(folder: Union[str, Path], *, name: str = "", suffix: str = ".tmp",
              create: bool = True) -> Iterator[TempFile]:
    """A unique temp file in ``folder`` (made if needed), removed on the way out unless it was published.

    ``name`` is the target's name (part of it goes into the temp name, so a leftover says what it was);
    ``create=False`` only reserves a unique name (for ``os.link`` to fill). A write that fails for lack of
    room inside the block is raised as ``DiskFull``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f".{name[:_NAME_ROOM]}." if name else ".lorahub-"
        if create:
            fd, raw = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
            os.close(fd)
            path = Path(raw)
        else:
            path = folder / f"{prefix}{os.urandom(6).hex()}{suffix}"
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(exc, folder / name) from None
        raise
    tmp = TempFile(path)
    try:
        yield tmp
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise disk_full(exc, folder / (name or path.name)) from None
        raise
    finally:
        if tmp.published is None:
            path.unlink(missing_ok=True)


def publish_file(dst: Union[str, Path], content: Content, *, replace: bool = True,
                 check: Optional[Callable[[Path], None]] = None, durable: bool = True) -> Path:
    """Write ``content`` (bytes, text as UTF-8, or a function that writes the temp path it is given) to ``dst``
    atomically. ``check(temp_path)`` may refuse the written file before it is published (raise).
    ``durable=False``: atomic but not fsynced (a hint that may be lost in a crash, such as a resume state)."""
    dst = Path(dst)
    with temp_file(dst.parent, name=dst.name) as tmp:
        if callable(content):
            content(tmp.path)
        else:
            with open(tmp.path, "wb") as fh:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        if check is not None:
            check(tmp.path)
        return tmp.publish(dst, replace=replace, durable=durable)


def refuse_unreplaceable(dst: Path) -> None:
    """Nothing but a regular file or a symlink may be renamed over: as root, a rename replaces a device node."""
    try:
        mode = os.lstat(dst).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return
    raise UnsafeOutput(f"{dst} is {describe_kind(mode)}; only a regular file is ever replaced")


def describe_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


def _link_new(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` unless that name exists (FileExistsError)."""
    try:
        os.link(src, dst)            # atomic, and refuses an existing name
    except FileExistsError:
        raise
    except OSError as exc:           # no hard links here (FAT, some network file systems): reserve, then rename
        if is_disk_full(exc):
            raise
        os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.replace(src, dst)


# --- folders ---------------------------------------------------------------------------------------------
@contextmanager
def temp_folder(parent: Union[str, Path], *, name: str = "") -> Iterator[Path]:
    """A unique, empty temp folder in ``parent`` (made if needed); removed on the way out unless it was
    published (``publish_folder`` renames it away)."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".{name[:_NAME_ROOM]}.tmp-" if name else ".lorahub.tmp-", dir=parent))
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(exc, parent / name) from None
        raise
    try:
        yield path
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise disk_full(exc, parent / (name or path.name)) from None
        raise
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def publish_folder(tmp: Union[str, Path], dst: Union[str, Path], *, replace: bool = False,
                   replaceable: Optional[Callable[[Path], None]] = None) -> Path:
    """Rename the finished folder ``tmp`` to ``dst`` (same parent folder), every file in it fsynced first.

    An existing ``dst`` is refused (AlreadyExists) unless ``replace``; then ``replaceable(dst)`` may refuse it
    (raise), and it is moved aside, and deleted only once ``tmp`` is in its place (put back if that fails).
    A folder or a symlink may be replaced (the link itself); a file, device, FIFO or socket never is."""
    tmp, dst = Path(tmp), Path(dst)
    try:
        _fsync_tree(tmp)
        os.chmod(tmp, shareable_mode(0o777))   # the folder keeps this mode when it is renamed into place
        aside = None
        if os.path.lexists(dst):
            if not replace:
                raise AlreadyExists(f"{dst} exists already", hint="Pass --force to replace it, or choose another -o.")
            mode = os.lstat(dst).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                raise UnsafeOutput(f"{dst} is {describe_kind(mode) if not stat.S_ISREG(mode) else 'a file'}, "
                                   "not a folder; it is not replaced by a folder")
            if replaceable is not None:
                replaceable(dst)
            aside = Path(tempfile.mkdtemp(prefix=f".{dst.name[:_NAME_ROOM]}.old-", dir=dst.parent))
            os.replace(dst, aside / "previous")
        try:
            os.replace(tmp, dst)
        except BaseException:
            if aside is not None:
                os.replace(aside / "previous", dst)
                shutil.rmtree(aside, ignore_errors=True)
            raise
        fsync_path(dst.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(exc, dst) from None
        raise
    if aside is not None:   # the new folder is in place: only now is the old one deleted
        shutil.rmtree(aside, ignore_errors=True)
    return dst


def _fsync_tree(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fsync_path(Path(path))
        fsync_path(Path(root))


def sync_filesystem(path: Union[str, Path]) -> None:
    """Flush every written file on the filesystem holding ``path`` (Linux ``syncfs``; elsewhere ``os.sync``):
    one call makes a batch of small temp files durable before ``publish(durable=False)`` names them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if getattr(libc, "syncfs", None) is not None and libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def fsync_path(path: Union[str, Path]) -> None:
    """fsync a file or a folder (a folder: its entries, so renames and new names in it survive a crash)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if os.path.isdir(path) and exc.errno in (errno.EACCES, errno.EISDIR, errno.EPERM):
            return   # some platforms cannot open a folder for fsync; the rename is still atomic
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:   # a file system that cannot sync (some FUSE, /proc): nothing more to do
            raise
    finally:
        os.close(fd)
