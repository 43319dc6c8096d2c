"""What an adapter file is, from its bytes alone.

Flow: ``read_container`` (safetensors header or a weights-only pickle, traps refused with a specific code)
-> ``describe`` (key layout, network, components, ranks, family from shapes then metadata then cards)
-> ``hash_file`` (one streaming pass: whole-file sha256, data-only sha256, all-zero up weights).
Nothing here imports torch for a safetensors file, and nothing ever runs a pickle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Union

from lorahub_cli.errors import LoraError, NotFound
from lorahub_cli.inspect.model import AdapterReport, Hashes, Layout, RawFile

if TYPE_CHECKING:
    from lorahub_cli.inspect.checkpoint import CheckpointReport

ADAPTER_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
KnownHashes = Callable[[RawFile, list[str]], Optional[Hashes]]   # (raw, up keys) -> the hashes, if known


@dataclass
class InspectFailure:
    path: str
    error: LoraError

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error.to_dict()}


def inspect_file(path: Union[str, os.PathLike], *, hash: bool = True, embeddings: bool = False,
                 name: Optional[str] = None) -> AdapterReport:
    """Inspect one file; raises a LoraError subclass (with its stable code) when it is not a usable LoRA.
    ``embeddings``: a textual-inversion embedding is an answer too (``kind: embedding``), not the
    ``textual-inversion`` refusal that callers needing a LoRA get; ``name``: the file's real name where
    ``path`` is not it (an embedding's A1111 token is its file's stem)."""
    report, _raw, _layout = inspect_file_full(path, hash=hash, embeddings=embeddings, name=name)
    return report


def inspect_file_full(path: Union[str, os.PathLike], *, hash: bool = True, embeddings: bool = False,
                      name: Optional[str] = None, known: Optional[KnownHashes] = None,
                      raw: Optional[RawFile] = None) -> tuple[AdapterReport, RawFile, Layout]:
    """Like ``inspect_file``, also returning the container view and the key layout for later stages.
    ``known``: see ``describe_raw``; ``raw``: the container view of this very file, read already (a
    download's header parsed as it arrived: ``StreamHasher.raw_for``)."""
    from lorahub_cli.inspect.containers import read_container

    path = Path(path)
    raw = raw if raw is not None else read_container(path)
    return describe_raw(raw, path, hash=hash, embeddings=embeddings, name=name, known=known)


def describe_raw(raw: RawFile, path: Path, *, hash: bool = True, embeddings: bool = False,
                 name: Optional[str] = None, known: Optional[KnownHashes] = None,
                 ) -> tuple[AdapterReport, RawFile, Layout]:
    """``inspect_file_full`` for a container already read. ``known(raw, up_keys)``: the hashes of these very
    bytes computed already (a download hashed as it arrived: ``hashing.StreamHasher.hashes``), or None when
    they are not known for this file; then the file is read and hashed here."""
    from lorahub_cli.inspect.describe import describe
    from lorahub_cli.inspect.embedding import describe_embedding, looks_like_embedding

    if embeddings and looks_like_embedding(raw):
        report, layout = describe_embedding(raw, path, name=name)
    else:
        report, layout = describe(raw, path)
    if hash:
        from lorahub_cli.inspect.hashing import hash_file  # numpy: only when the data is read

        up_keys = [k for module in layout.modules for k in module.up_keys]
        hashes = known(raw, up_keys) if known is not None else None
        if hashes is None:
            hashes = hash_file(raw, zero_check_keys=up_keys)
        report.sha256 = hashes.sha256
        report.autov2 = hashes.autov2
        report.tensor_sha256 = hashes.tensor_sha256
        if hashes.nonfinite_keys:
            report.warnings.append(nonfinite_warning(hashes.nonfinite_keys))
        if hashes.zero_up_keys is not None and up_keys and len(hashes.zero_up_keys) == len(up_keys):
            report.warnings.append(
                f"every up/B weight is zero ({len(up_keys)} tensors): the adapter is untrained and changes nothing")
    return report, raw, layout


def inspect_any(path: Union[str, os.PathLike], *, hash: bool = True) -> Union[AdapterReport, "CheckpointReport"]:
    """An adapter's report, or a base checkpoint's (``kind: checkpoint``) when the keys hold a U-Net or
    transformer: `lora inspect` says what a base file is instead of refusing it as not-a-lora."""
    from lorahub_cli.inspect.checkpoint import identify, looks_like_checkpoint
    from lorahub_cli.inspect.containers import read_container

    path = Path(path)
    raw = read_container(path)
    if not looks_like_checkpoint(raw):
        return describe_raw(raw, path, hash=hash, embeddings=True)[0]
    report = identify(raw)
    if hash:   # whole-file sha256 / AutoV2, as Civitai lists a checkpoint (no per-tensor scans of GBs)
        from lorahub_cli.inspect.hashing import sha256_file

        report.sha256 = sha256_file(path)
        report.autov2 = report.sha256[:10]
    return report


def nonfinite_warning(keys: list[str]) -> str:
    """The warning for tensors holding NaN or infinities (starts with the code, ``non-finite``)."""
    shown = ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")
    return (f"non-finite: {len(keys)} tensor(s) hold NaN or infinite values ({shown}): the adapter is damaged or "
            "was saved after training diverged; generate, merge and fuse refuse it")


def iter_adapter_files(paths: Iterable[Union[str, os.PathLike]]) -> Iterator[Path]:
    """Files as given, and adapter-looking files found recursively in folders (sorted, stable).

    Names are yielded whatever they are (a FIFO or device named *.safetensors too): opening them through
    ``regular.open_regular`` refuses them with ``not-a-file``, one failure in a batch, never a hang."""
    for p in paths:
        yield from _files_under(Path(p))


def _files_under(p: Path) -> Iterator[Path]:
    if not _is_dir(p):
        yield p
        return
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(ADAPTER_SUFFIXES):
                yield Path(root) / name


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:   # a name too long for the file system: not a folder; opening it says why
        return False


def inspect_paths(paths: Iterable[Union[str, os.PathLike]], *, hash: bool = True
                  ) -> Iterator[Union[AdapterReport, InspectFailure]]:
    """Inspect every file under ``paths``; failures are yielded, not raised, so one bad file stops nothing.
    A folder holding no adapter file is a failure too (``not-found``), not an empty answer."""
    for given in paths:
        found = False
        for path in _files_under(Path(given)):
            found = True
            try:
                yield inspect_any(path, hash=hash)
            except LoraError as err:
                yield InspectFailure(str(path), err)
        if not found:
            yield InspectFailure(str(given), NotFound(
                f"no adapter files in {given} (looked for {', '.join(ADAPTER_SUFFIXES)} in it and its sub-folders)"))
