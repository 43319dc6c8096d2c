"""Check downloaded bytes against what the source promised, then inspect them; nothing is recorded here.

The client only checks sizes, so the sha256 is ours to check. Inspection hashes in the same pass it reads
(``inspect_file_full(hash=True)``), so verifying costs no extra read in the common case; a download of our
own (URL, Civitai) was hashed while it was written, so it is not read again at all. Only when the file is
refused by inspection do we hash it separately (unless its digest is known), to report a corrupted download
as ``hash-mismatch`` rather than as whatever the corruption happens to look like.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from lorahub_cli.errors import HashMismatch, LoraError
from lorahub_cli.inspect import inspect_file_full

if TYPE_CHECKING:
    from lorahub_cli.inspect.hashing import StreamHasher
    from lorahub_cli.inspect.model import AdapterReport

READ_CHUNK = 1 << 20
_CORRUPTED_HINT = "The download was corrupted on the way and has been removed; run the command again."


def git_blob_sha1_file(path: Path) -> str:
    """The git blob id of a file: what the Hub reports for files not stored in LFS."""
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_and_inspect(path: Path, *, what: str, expected_sha256: Optional[str] = None,
                       expected_blob_id: Optional[str] = None, said_by: str = "the Hub",
                       name: Optional[str] = None, streamed: Optional["StreamHasher"] = None,
                       ) -> tuple["AdapterReport", str]:
    """Inspect ``path`` (refusing traps with their code) and check it against the expected hash.

    Returns (report with sha256 set, container). Raises HashMismatch, or the inspection's LoraError.
    ``name``: the file's real name where ``path`` is a cache blob (an A1111 embedding's token is its stem).
    ``streamed``: our own download's bytes, hashed as they were written to ``path`` (``sources.url``): the
    check and inspection then use those digests and the header parsed on the way, and read nothing (they are
    trusted only for a file of exactly the size hashed; otherwise the file is read and hashed here as usual).
    An embedding is an entry too.
    """
    known = streamed.hashes if streamed is not None else None
    try:
        report, raw, _layout = inspect_file_full(path, hash=True, embeddings=True, name=name, known=known,
                                                 raw=streamed.raw_for(path) if streamed is not None else None)
    except LoraError as refused:
        # a corrupted download can look like any trap: say what really happened when we can tell
        streamed_sha = streamed.sha256_if_size(os.path.getsize(path)) if streamed is not None else None
        _check(path, what, expected_sha256, expected_blob_id, streamed_sha, said_by)
        raise refused
    report.sha256 = _check(path, what, expected_sha256, expected_blob_id, report.sha256, said_by)
    return report, raw.container


def _check(path: Path, what: str, expected_sha256: Optional[str], expected_blob_id: Optional[str],
           known_sha256: Optional[str], said_by: str = "the Hub") -> str:
    from lorahub_cli.inspect.hashing import sha256_file   # imports numpy: only when a hash is still needed

    actual = known_sha256 or sha256_file(path)
    if expected_sha256 and actual != expected_sha256.lower():
        raise HashMismatch(f"{what}: the downloaded bytes have sha256 {actual}, {said_by} says {expected_sha256}",
                           hint=_CORRUPTED_HINT)
    if expected_blob_id and not expected_sha256:
        blob = git_blob_sha1_file(path)
        if blob != expected_blob_id.lower():
            raise HashMismatch(f"{what}: the downloaded bytes have git blob id {blob}, the Hub says "
                               f"{expected_blob_id}", hint=_CORRUPTED_HINT)
    return actual
