"""`lora merge` as a function: weighted inputs (files or library entries) -> a merged file or library entry.

    outcome = merge_files(["style.safetensors:0.8", "subject"], "combo", method="svd", rank=32)

Every input goes through the conversion code's reader (any supported layout, pickles read weights-only) into
the canonical form; the result is written in the diffusers layout, verified, and either renamed to the asked
``.safetensors`` path or added to the library under the asked name with a "merged" source naming its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from lorahub_cli.errors import AlreadyExists, UsageError
from lorahub_cli.merge.plan import MergeSource
from lorahub_cli.values import parse_weighted

DTYPES = {"auto": None, "fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
parse_input = parse_weighted   # "A:0.7" -> ("A", 0.7): the one parser, shared with generate's -a


@dataclass
class ResolvedInput:
    ref: str                    # as given (without the weight)
    name: str                   # the library name, or the file's name
    path: Path
    weight: float
    in_library: bool
    sha256: Optional[str] = None

    def to_dict(self) -> dict:
        return {"ref": self.ref, "name": self.name, "path": str(self.path), "weight": self.weight,
                "sha256": self.sha256, "in_library": self.in_library}


@dataclass
class MergeOutcome:
    output: str                 # the file written, or the library name
    path: str                   # where the bytes are (the file, or the library's blob)
    in_library: bool
    method: str
    rank: Optional[int]
    density: Optional[float]
    family: str
    inputs: list[ResolvedInput]
    n_modules: int
    ranks: list[int]            # distinct per-module ranks of the output
    sha256: Optional[str] = None
    truncation: Optional[dict] = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"output": self.output, "path": self.path, "in_library": self.in_library, "sha256": self.sha256,
                "method": self.method, "rank": self.rank, "density": self.density, "family": self.family,
                "n_modules": self.n_modules, "ranks": self.ranks, "truncation": self.truncation,
                "inputs": [i.to_dict() for i in self.inputs], "warnings": self.warnings}


def is_file_output(output: str) -> bool:
    return output.lower().endswith(".safetensors")


def merge_files(specs: Sequence[str], output: str, *, method: str = "stack", rank: Optional[int] = None,
                density: Optional[float] = None, dtype: str = "auto", force: bool = False,
                progress: Optional[Callable[[int], None]] = None, registry: Any = None,
                base: Optional[str] = None) -> MergeOutcome:
    """Merge the inputs ``specs`` ("REF[:WEIGHT]") into ``output`` (a .safetensors path, else a library name).

    ``registry`` defaults to the library at $LORAHUB_HOME, opened for this call and closed after it.
    ``base`` (as `lora check --base`) names the inputs' layers on that base: needed for adapters of a custom
    model, whose family is unknown (see ``merge.onto_base``).
    """
    from lorahub_cli.merge import check_method, merge
    from lorahub_cli.merge.record import read_merge_record

    if not specs:
        raise UsageError("nothing to merge: give at least one adapter")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use one of: {', '.join(DTYPES)}")
    check_method(method, rank, density)
    with _Library(registry) as lib:   # our own registry, when we open one, is closed after the merge
        to_file = is_file_output(output)
        if to_file:
            if Path(output).exists() and not force:
                raise AlreadyExists(f"{output} exists already", hint="Pass --force to replace it.")
        else:
            _check_library_name(output, lib)

        inputs = [resolve_input(*parse_input(spec), lib) for spec in specs]
        on_base = _resolve_base(base, lib)
        adapters = [_load(i, on_base) for i in inputs]
        merged = merge(adapters, [i.weight for i in inputs], method, rank, density=density,
                       sources=[MergeSource(i.name, i.sha256) for i in inputs], dtype=_torch_dtype(dtype),
                       progress=progress)
        record = read_merge_record(merged.metadata) or {}
        outcome = MergeOutcome(output=output, path=output, in_library=not to_file, method=method,
                               rank=record.get("rank"), density=record.get("density"), family=merged.family,
                               inputs=inputs, n_modules=len(merged.modules),
                               ranks=sorted({p.rank for p in merged.modules.values()}),
                               truncation=record.get("truncation"))
        if to_file:
            _write_file(merged, Path(output), force, outcome, on_base)
        else:
            _add_to_library(merged, output, lib, outcome, on_base)
        return outcome


def _resolve_base(ref: Optional[str], lib: "_Library") -> Any:
    """--base, with saved names looked up in the library's own home."""
    from lorahub_cli.bases import resolve_base

    return resolve_base(ref, home=lib.registry.home) if ref is not None else None


def resolve_input(ref: str, weight: float, lib: "_Library") -> ResolvedInput:
    """The adapter ``ref`` names, by the one precedence (``lorahub_cli.resolve``): a library name, then a
    sha256 prefix, then a file."""
    from lorahub_cli.resolve import resolve_weighted

    handle = resolve_weighted(ref, lib.registry)
    if handle.entry is None:
        return ResolvedInput(ref=ref, name=handle.path.name, path=handle.path, weight=weight, in_library=False)
    return ResolvedInput(ref=ref, name=handle.entry.name, path=handle.path, weight=weight, in_library=True,
                         sha256=handle.entry.sha256)


class _Library:
    """The caller's registry, or our own, opened on first use and closed with the ``with`` block."""

    def __init__(self, registry: Any = None):
        self._registry = registry
        self._own = registry is None

    def __enter__(self) -> "_Library":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._own and self._registry is not None:
            self._registry.close()
            self._registry = None

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from registry.api import Registry

            self._registry = Registry()
        return self._registry


def _check_library_name(name: str, lib: _Library) -> None:
    from registry.names import validate_name

    if "/" in name or "\\" in name:
        raise UsageError(f"-o {name}: give a path ending in .safetensors to write a file, or a library name "
                         "(no slashes) to add the result to the library")
    validate_name(name)
    if lib.registry.find(name) is None:
        return
    raise AlreadyExists(f"the library already has an adapter named {name!r}",
                        hint="Choose another -o name, or remove or rename the existing one.")


def _load(item: ResolvedInput, base: Any = None):
    from lorahub_cli.convert.load import read_source
    from lorahub_cli.merge.onto_base import read_onto_base

    source = read_source(item.path, sha256=item.sha256)   # a library input is checked against its recorded sha256
    item.sha256 = source.sha256
    return read_onto_base(source, base, item.name)


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPES[name]) if DTYPES[name] else None


def _write_file(merged: Any, dst: Path, force: bool, outcome: MergeOutcome, base: Any = None) -> None:
    from lorahub_cli.inspect.hashing import sha256_file
    from lorahub_cli.merge.save import save_merged

    outcome.warnings += save_merged(merged, dst, title=_title(dst.name), force=force, base=base)
    outcome.sha256 = sha256_file(dst)


def _add_to_library(merged: Any, name: str, lib: _Library, outcome: MergeOutcome, base: Any = None) -> None:
    """Write into a work folder of the library's staging folder, inspect, add (the store copies the bytes)."""
    from lorahub_cli.ingest import ingest
    from lorahub_cli.merge.save import save_merged
    from registry.records import SourceRecord
    from registry.store import work_folder

    registry = lib.registry
    with work_folder(registry.staging_dir) as staging:
        tmp = staging / f"{name}.safetensors"
        outcome.warnings += save_merged(merged, tmp, title=name, base=base)
        result = ingest(tmp, registry, name=name, source=SourceRecord(kind="merged", path=recipe(outcome)))
    entry = result.entry
    outcome.output = result.name or name
    outcome.sha256 = result.sha256
    outcome.path = (entry.path if entry is not None and entry.path else "") or outcome.path
    if result.status == "duplicate":
        outcome.warnings.append(f"the library already holds these exact bytes as {result.duplicate_of}; "
                                "no new entry was made")


def recipe(outcome: MergeOutcome) -> str:
    """The "merged" source line `lora show` prints: weights, names and short hashes of the inputs."""
    parts = [f"{i.weight:g} x {i.name}" + (f" ({i.sha256[:12]})" if i.sha256 else "") for i in outcome.inputs]
    how = outcome.method + (f" rank {outcome.rank}" if outcome.rank else "")
    return f"{' + '.join(parts)} [{how}]"


def _title(file_name: str) -> str:
    return file_name[: -len(".safetensors")] if file_name.lower().endswith(".safetensors") else file_name
