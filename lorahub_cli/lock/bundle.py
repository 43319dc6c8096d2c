"""Bundles: a plain tar with a lock and the adapters it names, for machines without network.

Layout (the writer's order; the reader insists on it)::

    lora.lock                        the lock (TOML), each entry with its size
    adapters/<sha256>.safetensors    the stored bytes of each entry
    adapters/<sha256>.json           its A1111 sidecar (trigger words, family), read back as sidecar facts

Member names are built from hashes only, so nothing a user named reaches a path. Reading is untrusted
input: ``read_bundle`` streams the tar once (no ``extractall``), refuses absolute names and ``..``
(``unsafe-path``), links, devices and folders (``unsafe-member``), any member the lock does not declare or
one larger than it declares (``size-mismatch``), and bytes whose sha256 is not their name
(``hash-mismatch``). Everything is checked into a staging folder before the first entry is stored, so a
bad bundle installs nothing.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from lorahub_cli.errors import (BadBundle, DamagedFile, HashMismatch, NotAFile, SizeMismatch, UnsafeMember, UnsafePath,
                                UsageError)
from lorahub_cli.lock.model import LockFile
from lorahub_cli.lock.toml import MAX_LOCK_BYTES, dumps, loads

if TYPE_CHECKING:
    from registry.api import Registry
    from registry.records import AdapterEntry

LOCK_MEMBER = "lora.lock"
MAX_SIDECAR_BYTES = 1_000_000
_MEMBER = re.compile(r"adapters/([0-9a-f]{64})\.(safetensors|json)")
_CHUNK = 1 << 20


# --- writing ---------------------------------------------------------------------------------------------
def write_bundle(out: Path, entries: Sequence["AdapterEntry"], lock: LockFile) -> Path:
    """``lock`` and each entry's stored bytes and A1111 sidecar, as a tar at ``out`` (published atomically)."""
    from lorahub_cli.export.sidecars import a1111_json
    from registry.publish import publish_file

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, LOCK_MEMBER, dumps(lock).encode("utf-8"))
            for e in entries:
                if not e.path or not Path(e.path).is_file():
                    raise NotAFile(f"the library's file for {e.name} is missing ({e.path or 'no file'})",
                                   hint="Run `lora doctor` to see what happened to it.")
                info = tarfile.TarInfo(f"adapters/{e.sha256}.safetensors")
                info.size, info.mode = e.size, 0o644
                with open(e.path, "rb") as fh:
                    reader = _Hashing(fh)
                    tar.addfile(info, reader)
                if reader.digest.hexdigest() != e.sha256:   # a damaged blob or a changed in-place file
                    raise DamagedFile(f"{e.name}'s file no longer hashes to {e.sha256[:12]}; nothing was written",
                                      hint="Run `lora doctor` to see what happened to it.")
                _add_bytes(tar, f"adapters/{e.sha256}.json",
                           a1111_json(name=e.name, sha256=e.sha256, family=e.family, trigger_words=e.trigger_words,
                                      base_model=e.base_model, preferred_weight=e.preferred_weight))

    return publish_file(out, write)


class _Hashing:
    """A file reader that hashes what it hands out (the bundle is written and verified in one pass)."""

    def __init__(self, fh) -> None:
        self.fh, self.digest = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.digest.update(data)
        return data


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


# --- reading ---------------------------------------------------------------------------------------------
@dataclass
class Unpacked:
    """A checked bundle in a staging folder: the lock, and for each sha256 its file (and sidecar beside it)."""

    lock: LockFile
    files: dict[str, Path]


def is_bundle(path: Path) -> bool:
    """A file that `add` reads as a bundle (a .tar: never an adapter file)."""
    return path.suffix.lower() == ".tar" and path.is_file()


@contextmanager
def read_bundle(path: Path, staging_dir: Path) -> Iterator[Unpacked]:
    """The bundle at ``path``, every member checked (see the module docstring), unpacked into a folder under
    ``staging_dir`` that is removed on the way out."""
    from registry.publish import temp_folder

    with temp_folder(staging_dir, name="bundle") as folder:
        yield _unpack(Path(path), folder)


def _unpack(path: Path, folder: Path) -> Unpacked:
    try:
        tar = tarfile.open(path, "r:")   # plain tar only: no decompression bombs
    except (tarfile.TarError, OSError) as exc:
        raise BadBundle(f"{path} is not a tar file ({str(exc)[:120]})") from None
    lock: Optional[LockFile] = None
    sizes: dict[str, int] = {}
    files: dict[str, Path] = {}
    seen: set[str] = set()
    with tar:
        try:
            for member in tar:
                name = _safe_name(member.name, path)
                if not member.isreg():
                    raise UnsafeMember(f"{path}: member {name!r} is {_kind(member)}, not a file")
                if name in seen:
                    raise BadBundle(f"{path}: member {name!r} appears twice")
                seen.add(name)
                if lock is None:
                    if name != LOCK_MEMBER:
                        raise BadBundle(f"{path} does not start with {LOCK_MEMBER}")
                    lock = _read_lock(tar, member, path)
                    sizes = {e.sha256: e.size for e in lock.entries if e.size}
                    continue
                m = _MEMBER.fullmatch(name)
                if m is None or m[1] not in sizes:
                    raise BadBundle(f"{path}: member {name!r} is not named by the bundle's lock")
                sha, suffix = m[1], m[2]
                limit = sizes[sha] if suffix == "safetensors" else MAX_SIDECAR_BYTES
                if member.size > limit or (suffix == "safetensors" and member.size != limit):
                    raise SizeMismatch(f"{path}: {name} is {member.size} bytes; the lock declares "
                                       f"{limit if suffix == 'safetensors' else 'at most ' + str(limit)}")
                target = folder / f"{sha}.{suffix}"
                digest = _copy(tar, member, target, limit)
                if suffix == "safetensors":
                    if digest != sha:
                        raise HashMismatch(f"{path}: {name} holds bytes with sha256 {digest[:12]}; nothing was "
                                           "stored", hint="The bundle is damaged; write it again.")
                    files[sha] = target
        except tarfile.TarError as exc:
            raise BadBundle(f"{path} is damaged ({str(exc)[:120]})") from None
    if lock is None:
        raise BadBundle(f"{path} is empty")
    return Unpacked(lock=lock, files=files)


def _safe_name(name: str, path: Path) -> str:
    p = PurePosixPath(name)
    if name.startswith(("/", "\\")) or p.is_absolute() or ".." in p.parts or "\\" in name or "\x00" in name:
        raise UnsafePath(f"{path}: member name {name[:200]!r} leaves the bundle",
                         hint="Only bundles written by `lora export-bundle` are read; ask for the set again.")
    return str(p)


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symlink to {member.linkname[:200]!r}"
    if member.islnk():
        return f"a hard link to {member.linkname[:200]!r}"
    return "a folder" if member.isdir() else "a device, FIFO or other special member"


def _read_lock(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> LockFile:
    if member.size > MAX_LOCK_BYTES:
        raise SizeMismatch(f"{path}: its lock is {member.size} bytes (at most {MAX_LOCK_BYTES})")
    fh = tar.extractfile(member)
    raw = fh.read(MAX_LOCK_BYTES + 1) if fh is not None else b""
    try:
        lock = loads(raw.decode("utf-8"), f"{path}'s lock")
    except UnicodeDecodeError:
        raise BadBundle(f"{path}'s lock is not UTF-8 text") from None
    unsized = [e.name for e in lock.entries if not e.size]
    if unsized:
        raise BadBundle(f"{path}'s lock declares no size for {', '.join(unsized[:5])}")
    return lock


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, limit: int) -> str:
    """Stream one member to ``target``, never past ``limit`` bytes; its sha256."""
    fh = tar.extractfile(member)
    if fh is None:
        raise UnsafeMember(f"member {member.name!r} has no data")
    digest, done = hashlib.sha256(), 0
    with open(target, "xb") as out:
        while chunk := fh.read(min(_CHUNK, limit + 1 - done)):
            done += len(chunk)
            if done > limit:
                raise SizeMismatch(f"member {member.name!r} is larger than declared ({limit} bytes)")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def install_bundle(path: Path, registry: "Registry") -> list:
    """`lora add set.tar`: every entry of the bundle present or added (named after the lock, never renaming
    anything); the whole bundle is checked before the first entry is stored."""
    from lorahub_cli.export.sidecars import read_sidecar_facts
    from lorahub_cli.ingest import Fact, ingest
    from lorahub_cli.lock.install import FETCHED, PRESENT, Outcome
    from registry.records import SourceRecord

    held = {s.sha256: s for s in registry.list()}
    out = []
    with read_bundle(path, registry.staging_dir) as unpacked:
        missing = [e.name for e in unpacked.lock.entries if e.sha256 not in unpacked.files and e.sha256 not in held]
        if missing:
            raise BadBundle(f"{path} lacks the file of {', '.join(missing[:5])} named in its lock")
        for entry in unpacked.lock.entries:
            if entry.sha256 in held:
                out.append(Outcome(entry.name, entry.sha256, PRESENT, name=held[entry.sha256].name))
                continue
            file = unpacked.files[entry.sha256]
            facts, warnings = read_sidecar_facts(file)
            source = SourceRecord(kind="local", path=str(Path(path).resolve()))   # the bundle it came in
            added = ingest(file, registry, source=source, name_hint=entry.name, facts=[Fact(*f) for f in facts],
                           source_name=f"{entry.name}.safetensors", with_entry=False)
            out.append(Outcome(entry.name, entry.sha256, FETCHED, name=added.name, source=str(path),
                               warnings=[*added.warnings, *warnings]))
    return out


def bundle_entries(registry: "Registry", refs: Sequence[str]) -> tuple[list["AdapterEntry"], LockFile]:
    from lorahub_cli.lock.build import lock_entries

    if not refs:
        raise UsageError("name the adapters to bundle")
    lock = lock_entries(registry, refs)
    return [registry.get(e.sha256) for e in lock.entries], lock

