"""The "normalise" arrow of the data flow: what goes into the store is always a safetensors file.

A pickle (.bin/.pt/.ckpt) is read with torch's weights-only loader, written as a bit-verified safetensors
file with the same keys into a private ``convert-*`` folder of the staging folder, and inspected again; the
original bytes' sha256 is kept for provenance. The staging lock is held (shared) while that folder exists,
so ``lora doctor --fix`` removes only the folders a crash left behind. A safetensors file passes through
untouched. ``lorahub_cli.ingest`` is its one caller: every way into the library normalises the same way.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import TextualInversion
from lorahub_cli.inspect.model import AdapterReport


@dataclass
class Staged:
    path: Path                            # the safetensors file to store
    report: AdapterReport                 # inspection of that file
    original_sha256: Optional[str] = None  # set when ``path`` was converted from a pickle
    warnings: list[str] = field(default_factory=list)
    # the pickle as given (converted only): its card and sidecar facts still hold for the converted copy,
    # which was inspected where no sidecar sits beside it; ingest merges both
    original: Optional[AdapterReport] = None
    _work: Optional[ExitStack] = None     # the work folder and the staging lock, until ``cleanup``

    @property
    def converted(self) -> bool:
        return self.original_sha256 is not None

    def cleanup(self) -> None:
        if self._work is not None:
            self._work.close()


def looks_pickled(path: Path) -> bool:
    """A torch zip archive or a raw pickle, and not a safetensors file (whose 8-byte header length may start
    with 0x80): decided from 9 bytes, before anything imports torch."""
    from lorahub_cli.inspect.containers import is_pickle_head
    from lorahub_cli.inspect.regular import open_regular

    with open_regular(path) as fh:   # a FIFO or device is refused (not-a-file), never waited on
        head = fh.read(9)
        size = os.fstat(fh.fileno()).st_size
    return head.startswith(b"PK\x03\x04") or is_pickle_head(head, size)


def stage(path: Path, staging_dir: Path, *, report: Optional[AdapterReport] = None,
          source_name: Optional[str] = None) -> Staged:
    """``path`` ready for the store: itself when it is safetensors, else its verified safetensors conversion.
    ``source_name``: the file's real name where ``path`` is not it (a Hub cache blob is named by its hash)."""
    from lorahub_cli.inspect import inspect_file

    path = Path(path)
    if not looks_pickled(path):   # embeddings are entries too (kind: embedding), named by the file's stem
        return Staged(path, report if report is not None else inspect_file(path, embeddings=True, name=source_name))
    from lorahub_cli.convert.api import to_safetensors_for_store
    from registry.store import work_folder

    work = ExitStack()
    try:
        folder = work.enter_context(work_folder(staging_dir))
        try:
            # the conversion reads the pickle once and refuses traps (unsafe-pickle, not-a-lora, ...) with their codes
            result = to_safetensors_for_store(path, folder, source_name=source_name)
        except TextualInversion:   # a pickled embedding: its own verified conversion (a LoRA's never tries it)
            return _stage_embedding(path, folder, work, report, source_name)
        converted = inspect_file(result.dst)
    except BaseException:
        work.close()
        raise
    warnings = [f"converted from a pickle ({result.source_format}, sha256 {result.source_sha256[:12]}) "
                "to safetensors; every tensor verified bit for bit", *result.warnings]
    original = report if report is not None else result.source_report
    return Staged(result.dst, converted, result.source_sha256, warnings, original=original, _work=work)


def _stage_embedding(path: Path, folder: Path, work: ExitStack, report: Optional[AdapterReport],
                     source_name: Optional[str]) -> Staged:
    from lorahub_cli.embeddings.store import embedding_to_safetensors
    from lorahub_cli.inspect import inspect_file

    result = embedding_to_safetensors(path, folder, source_name=source_name)
    converted = inspect_file(result.dst, embeddings=True, name=source_name or path.name)
    warnings = [f"converted from a pickle (sha256 {result.source_sha256[:12]}) to a safetensors embedding; "
                "every tensor verified bit for bit"]
    original = report if report is not None else result.source_report
    return Staged(result.dst, converted, result.source_sha256, warnings, original=original, _work=work)
