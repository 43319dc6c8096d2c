"""Adapters for a pipeline: which file each reference names, whether it fits the base, and its low-rank pairs.

A reference is a library name, then a unique sha256 prefix, then a file path (``lorahub_cli.resolve``, as in
every command; files outside the library work too and are recorded in the recipe with their sha256 and path). Each adapter is checked
against the base with the `lora check` engine first: incompatible stops the run (``Incompatible``, exit 1) with
the reason, partial continues with a warning and applies the modules that fit.

Files are read through the conversion code into the canonical form (any layout: kohya, peft, diffusers-old,
the legacy attn-procs that plain ``load_lora_weights`` silently ignores, cloneofsimo, ...), named on the
base's layers, so what is applied is exactly what `lora convert --to diffusers` would write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from lorahub_cli.errors import Incompatible, NotFound, UsageError

if TYPE_CHECKING:
    from lorahub_cli.bases import Base
    from lorahub_cli.canonical import CanonicalAdapter
    from lorahub_cli.compat.model import CheckResult

AdapterWeights = Union[Mapping[str, float], Sequence[Union[str, tuple[str, float]]], None]


@dataclass(frozen=True)
class AdapterSpec:
    ref: str
    weight: float = 1.0


@dataclass
class ResolvedAdapter:
    """One adapter to apply: what it was asked as, which bytes, and what the library knows of it."""

    ref: str
    name: str                       # library name, or the file's stem
    path: Path
    sha256: str
    weight: float
    in_library: bool
    family: Optional[str] = None    # the library's effective family (a user override wins); None for files
    family_evidence: Optional[str] = None
    base_model: Optional[str] = None
    tensor_sha256: Optional[str] = None  # the data section's sha256 (AutoV3, A1111's LoRA hash); None: not safetensors
    # where the bytes can be fetched again, as a lockfile lists them (`generate --from IMAGE --install`)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_recipe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sha256": self.sha256, "weight": self.weight}
        if self.tensor_sha256:
            out["tensor_sha256"] = self.tensor_sha256
        if self.sources:
            out["sources"] = [dict(s) for s in self.sources]
        if not self.in_library:
            out["path"] = str(self.path)
        return out


@dataclass
class LoadedAdapter:
    adapter: ResolvedAdapter
    pairs: "CanonicalAdapter"
    check: "CheckResult"
    warnings: list[str] = field(default_factory=list)


def parse_specs(adapters: AdapterWeights) -> list[AdapterSpec]:
    """{"name": 0.8}, ["name:0.8", "other"], [("name", 0.8)] or None -> specs (a weight defaults to 1)."""
    if adapters is None:
        return []
    from lorahub_cli.values import finite_weight, parse_weighted

    if isinstance(adapters, Mapping):
        return [AdapterSpec(str(k), finite_weight(str(k), _number(k, v))) for k, v in adapters.items()]
    if isinstance(adapters, str):
        raise UsageError("adapters: give a dict {name: weight} or a list of 'NAME[:WEIGHT]'")

    specs = []
    for item in adapters:
        if isinstance(item, str):
            specs.append(AdapterSpec(*parse_weighted(item)))
        else:
            ref, weight = item
            specs.append(AdapterSpec(str(ref), finite_weight(str(ref), _number(ref, weight))))
    return specs


def _number(ref: Any, weight: Any) -> float:
    try:
        return float(weight)
    except (TypeError, ValueError):
        raise UsageError(f"the weight of {ref} must be a finite number, got {weight!r}") from None


def resolve(spec: AdapterSpec, registry: Any) -> ResolvedAdapter:
    """The adapter ``spec.ref`` names, by the one precedence (``lorahub_cli.resolve``): a library name, then a
    sha256 prefix, then a file (a folder in the current directory never shadows a library entry)."""
    from lorahub_cli.inspect.hashing import sha256_file
    from lorahub_cli.resolve import resolve_weighted

    handle = resolve_weighted(spec.ref, registry)
    if handle.entry is not None:
        return _from_entry(handle.entry, spec.ref, spec.weight)
    from lorahub_cli.export.conventions import data_sha256

    path = handle.path
    return ResolvedAdapter(ref=spec.ref, name=path.stem, path=path.resolve(), sha256=sha256_file(path),
                           weight=spec.weight, in_library=False, tensor_sha256=data_sha256(path))


def recipe_sources(records: Sequence[Any]) -> list[dict[str, Any]]:
    """An entry's recorded sources that can fetch its bytes again, in a lockfile's shape and order (hub, civitai,
    url; ``lorahub_cli.lock`` reads them). A local path is left out: images travel, and it would show the
    sender's folders. (Written here rather than imported: the lock package sits above the pipeline.)"""
    out: list[dict[str, Any]] = []
    for r in records:
        original = {"sha256": r.original_sha256} if r.original_sha256 else {}
        if r.kind == "hub" and r.repo and r.filename and r.revision:
            out.append({"kind": "hub", "repo": r.repo, "file": r.filename, "commit": r.revision, **original})
        elif r.kind == "civitai" and r.revision and r.revision.isdigit():
            model = {"model": int(r.repo)} if r.repo and r.repo.isdigit() else {}
            out.append({"kind": "civitai", **model, "version": int(r.revision), **original})
        elif r.kind == "url" and r.url:
            out.append({"kind": "url", "url": r.url, **({"etag": r.etag} if r.etag else {}), **original})
    order = ("hub", "civitai", "url")
    return sorted([s for i, s in enumerate(out) if s not in out[:i]], key=lambda s: order.index(s["kind"]))


def _from_entry(entry: Any, ref: str, weight: float) -> ResolvedAdapter:
    if not entry.path or not Path(entry.path).is_file():
        raise NotFound(f"the library's file for {entry.name} is missing ({entry.path or 'no file'})",
                       hint="Run `lora doctor` to see what happened to it.")
    evidence = "set by you" if "family" in (entry.overrides or {}) else (entry.family_evidence or None)
    return ResolvedAdapter(ref=ref, name=entry.name, path=Path(entry.path), sha256=entry.sha256, weight=weight,
                           in_library=True, family=entry.family, family_evidence=evidence,
                           base_model=entry.base_model, tensor_sha256=entry.tensor_sha256,
                           sources=recipe_sources(entry.sources or []))


def resolve_by_sha256(name: str, sha256: str, weight: float, registry: Any,
                      path: Optional[str] = None) -> ResolvedAdapter:
    """The adapter a recipe names: the library entry with exactly that sha256, else the recorded file if its
    bytes still hash to it; anything else is a clear error (never a silent substitute)."""
    from lorahub_cli.errors import HashMismatch
    from lorahub_cli.inspect.hashing import sha256_file

    try:
        entry = registry.get(sha256)
    except NotFound:
        entry = None
    if entry is not None and entry.sha256 == sha256:
        return _from_entry(entry, name, weight)
    if path and Path(path).is_file():
        if sha256_file(Path(path)) == sha256:
            from lorahub_cli.export.conventions import data_sha256

            return ResolvedAdapter(ref=path, name=Path(path).stem, path=Path(path), sha256=sha256, weight=weight,
                                   in_library=False, tensor_sha256=data_sha256(Path(path)))
        raise HashMismatch(f"adapter {name!r}: {path} no longer has the recipe's bytes (sha256 {sha256[:12]}...)",
                           hint="Add the original file to the library (`lora add`), then re-run.")
    raise NotFound(f"adapter {name!r} (sha256 {sha256[:12]}...) of the recipe is not in the library",
                   hint="Add the same file with `lora add` (or `lora pull`), then re-run.")


# --- check against the base --------------------------------------------------------------------------
def check(adapter: ResolvedAdapter, base: "Base") -> "CheckResult":
    """The `lora check` verdict (a custom base of no known family is read on its own layers by compat too)."""
    from lorahub_cli.compat.engine import AdapterInput, check_input

    item = AdapterInput(label=adapter.name, path=adapter.path, family=adapter.family,
                        family_evidence=adapter.family_evidence, base_model=adapter.base_model)
    return check_input(item, base)


def require_usable(result: "CheckResult") -> Optional[str]:
    """Raise ``Incompatible`` for an incompatible verdict; the warning text for a partial one, else None."""
    from lorahub_cli.compat.model import INCOMPATIBLE, PARTIAL

    if result.verdict == INCOMPATIBLE:
        first = result.unmatched[0] if result.unmatched else None
        example = f" (e.g. {first.key}: {first.detail})" if first and first.detail else ""
        raise Incompatible(f"adapter {result.adapter!r} does not fit base {result.base}: {result.summary}{example}",
                           hint=f"See `lora check {result.adapter} --base <base>` for every module.")
    if result.verdict == PARTIAL:
        return (f"adapter {result.adapter!r} fits base {result.base} only in part: {result.summary}; "
                f"{result.matched} of {result.total} modules are applied")
    return None


# --- low-rank pairs -----------------------------------------------------------------------------------
def load_pairs(adapter: ResolvedAdapter, base: "Base") -> "CanonicalAdapter":
    """The adapter's pairs named on ``base``'s layers: through the adapter's family's architecture (kohya, SAI
    and positional names resolve as trained; the base's family when the adapter's is unknown), or on the
    base's own tables when the base is of no known family."""
    from lorahub_cli.convert.keymap import canonical_tables, map_layout
    from lorahub_cli.convert.load import read_source
    from lorahub_cli.compat.on_base import base_tables, map_onto_base, pairs_from_keymap

    source = read_source(adapter.path, sha256=adapter.sha256)   # bytes that changed since recorded: refused
    if base.family == "unknown":   # as check() does: the base's own layers
        pairs = pairs_from_keymap(source, map_onto_base(source.layout, base), base_tables(base))
    else:
        family = adapter.family or source.report.family
        if family in (None, "unknown"):
            family = base.family
        pairs = pairs_from_keymap(source, map_layout(source.layout, family), canonical_tables(family))
    return require_finite(adapter.name, pairs)


def require_finite(name: str, pairs: "CanonicalAdapter") -> "CanonicalAdapter":
    """Refuse an adapter with NaN or infinite factors before it touches a pipeline: merged into the weights
    it turns every image black (and `generate` used to save that black PNG with exit 0)."""
    import torch

    from lorahub_cli.errors import NonFinite

    for key, pair in pairs.modules.items():
        for role, t in (("up", pair.up), ("down", pair.down)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise NonFinite(f"adapter {name!r}: module {key} has NaN or infinite values in its {role} weight",
                                hint=f"The file is damaged or was saved after training diverged; `lora inspect` "
                                     "shows it. Nothing was generated or written.")
    return pairs


def prepare(resolved: Sequence[ResolvedAdapter], base: "Base") -> list[LoadedAdapter]:
    """Check every adapter against ``base`` (all before any is read: fail early), then read their pairs."""
    seen: dict[str, str] = {}
    for r in resolved:   # by content: two files both called pytorch_lora_weights are fine, one file twice is not
        if r.sha256 in seen:
            what = "is given twice" if seen[r.sha256] == r.ref else f"is the same file as {seen[r.sha256]!r}"
            raise UsageError(f"adapter {r.ref!r} {what}; give each adapter once, with one weight")
        seen[r.sha256] = r.ref
    checked = []
    for r in resolved:
        result = check(r, base)
        warning = require_usable(result)
        checked.append((r, result, [warning] if warning else []))
    return [LoadedAdapter(r, load_pairs(r, base), result, warnings) for r, result, warnings in checked]
