"""Content-addressed blob store: ``<home>/blobs/sha256/<ab>/<sha256>``, identical content stored once.

A blob is published by ``registry.publish``: a temp file inside the store (same filesystem), fsynced, then
renamed over its final name; the rename is atomic and idempotent (same name = same bytes), so a crash leaves at worst a stale temp
file or an unrecorded blob, both of which ``doctor`` finds and removes.

Deleting a blob races with adding the same bytes again, so writers hold a shared lock from the blob write
through the database commit, and deleters (``rm``, ``doctor --fix``) re-check the database under the
exclusive lock before unlinking. Conversions (``lorahub_cli.normalise``) work in private ``convert-*`` folders of
the staging folder under its shared lock, so ``doctor`` can tell a live conversion from a crash's leftover.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterator, Optional

from registry.errors import HashMismatch, NotFound
from registry.faults import kill_point
from registry.failures import from_os_error, writable
from registry.publish import fsync_path, temp_file

CHUNK = 1 << 20
TEMP_SUFFIX = ".partial"
CONVERT_PREFIX = "convert-"  # a conversion's private folder in the staging folder


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, in one streaming pass."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def any_blob(objects: Path) -> bool:
    """Does the objects folder hold at least one file? (Stops at the first: cheap on a large store.)"""
    try:
        with os.scandir(objects) as subs:
            for sub in subs:
                if sub.is_dir(follow_symlinks=False):
                    with os.scandir(sub.path) as files:
                        if any(True for _ in files):
                            return True
    except FileNotFoundError:
        pass
    return False


@contextmanager
def file_lock(path: Path, *, exclusive: bool) -> Iterator[None]:
    """A cross-process lock on the file ``path`` (created if needed); a killed holder releases it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock; single-user use is still safe
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only home or a full disk: say which, not "internal"
        if path.parent.is_dir() and not writable(path.parent):
            # nothing can be written here, by us or by a writer we would wait for: a reader goes on (a
            # writer fails at its first write with ReadOnly); an existing lock file still locks read-only
            fd = _open_read_only(path)
            if fd is None:
                yield
                return
        else:
            raise from_os_error(err, f"cannot create the lock file {path}", path.parent) or err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_read_only(path: Path) -> Optional[int]:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def staging_lock(staging_dir: Path, *, exclusive: bool) -> ContextManager[None]:
    """Conversions hold it shared while their ``convert-*`` folder exists; ``doctor`` takes it exclusive."""
    return file_lock(Path(staging_dir) / ".lock", exclusive=exclusive)


@contextmanager
def work_folder(staging_dir: Path) -> Iterator[Path]:
    """A private ``convert-*`` folder in the staging folder for a conversion or merge on its way into the
    store, held under the staging lock (shared) and removed afterwards: ``doctor`` removes only the ones a
    crash left behind."""
    with staging_lock(staging_dir, exclusive=False):
        try:
            folder = Path(tempfile.mkdtemp(prefix=CONVERT_PREFIX, dir=staging_dir))   # concurrent work never collides
        except OSError as err:
            raise from_os_error(err, "cannot create a work folder", Path(staging_dir)) or err
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / "sha256"
        self.tmp = self.root / "tmp"

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")  # never let anything else become a path
        return self.objects / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put(self, src: Path, expected_sha256: Optional[str] = None, *, link: bool = False,
            durable: bool = True) -> tuple[str, int]:
        """Copy ``src`` into the store; returns (sha256, size). Raises HashMismatch if the bytes are not the
        ones expected (the file changed since it was inspected); the store is then unchanged.

        ``link=True`` (with ``expected_sha256``, already verified by the caller) hard-links an immutable file,
        such as a Hugging Face cache blob, instead of copying it: no second copy of the bytes and no second
        read. Where a link is impossible (another filesystem, no permission) it copies as usual. A store that
        cannot be written is ``ReadOnly`` (a full disk is ``DiskFull``, from the publish helper).

        ``durable=False`` publishes without the blob's and its folder's fsyncs: only for a batch whose caller
        makes the whole store durable once (``sync_filesystem``) before any record names these blobs
        (``Registry.add_many``)."""
        try:
            return self._put(Path(src), expected_sha256, link=link, durable=durable)
        except OSError as err:
            if Path(getattr(err, "filename", None) or "").resolve() == Path(src).resolve():
                raise  # the source's own problem, not the store's
            raise from_os_error(err, f"cannot write into the store {self.root}", self.root) or err

    def _put(self, src: Path, expected_sha256: Optional[str], *, link: bool, durable: bool) -> tuple[str, int]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        if link and expected_sha256 is not None:
            linked = self._link(Path(src), expected_sha256, durable)
            if linked is not None:
                return linked
        with temp_file(self.tmp, name="blob", suffix=TEMP_SUFFIX) as tmp:   # publish: fsync, rename, disk-full
            digest = hashlib.sha256()
            size = 0
            with open(src, "rb") as fin, open(tmp.path, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    fout.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    kill_point("copy")
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise HashMismatch(f"{src} changed while it was being added (sha256 {sha256[:12]}..., "
                                   f"expected {expected_sha256[:12]}...)", hint="Run the command again.")
            final = self.path_for(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.publish(final, durable=durable)
            return sha256, size

    def _link(self, src: Path, sha256: str, durable: bool) -> Optional[tuple[str, int]]:
        # a unique name (concurrent links never share it); the mode is the cache file's, which is not ours
        with temp_file(self.tmp, name=sha256, suffix=TEMP_SUFFIX, create=False) as tmp:
            try:
                os.link(src, tmp.path)
            except OSError:
                return None
            size = tmp.path.stat().st_size
            kill_point("copy")
            final = self.path_for(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.publish(final, keep_mode=True, durable=durable)
            return sha256, size

    def remove(self, sha256: str) -> bool:
        """Unlink a blob (caller holds the exclusive lock and has checked nothing refers to it)."""
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_path(path.parent)
        return True

    def is_intact(self, sha256: str, size: int) -> bool:
        """The stored bytes of ``sha256`` are there, ``size`` long, and hash to it (reads them all)."""
        path = self.path_for(sha256)
        try:
            if path.stat().st_size != size:
                return False
        except FileNotFoundError:
            return False
        return hash_file(path)[0] == sha256

    def verify(self, sha256: str) -> tuple[bool, Optional[int]]:
        """(bytes match their name, size on disk); raises NotFound when the blob is missing."""
        path = self.path_for(sha256)
        if not path.is_file():
            raise NotFound(f"blob {sha256} is missing from the store")
        actual, size = hash_file(path)
        return actual == sha256, size

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        """Every file under the objects folder, as (name, path); names that are not sha256 are included."""
        if not self.objects.is_dir():
            return
        for sub in sorted(self.objects.iterdir()):
            if sub.is_dir():
                for path in sorted(sub.iterdir()):
                    yield path.name, path

    def temp_files(self) -> list[Path]:
        return sorted(self.tmp.iterdir()) if self.tmp.is_dir() else []

    # --- locking ---------------------------------------------------------------------------------------
    def shared_lock(self) -> ContextManager[None]:
        return file_lock(self.root / ".lock", exclusive=False)

    def exclusive_lock(self) -> ContextManager[None]:
        return file_lock(self.root / ".lock", exclusive=True)
