"""`check`: an adapter (a file or a library entry) against a base, from the file's header and the base's configs.

Flow: find the adapter's bytes (a path, or the library entry's blob / in-place file) -> ``inspect_file_full``
(header only, no hashing) -> the key normalisation conversion uses (``keys.map_modules``) -> ``coverage.assess``
against the base's canonical layer index. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from lorahub_cli.bases import Base, resolve_base
from lorahub_cli.compat.coverage import assess
from lorahub_cli.compat.index import base_index
from lorahub_cli.compat.keys import map_modules
from lorahub_cli.compat.model import CheckFailure, CheckResult, FamilyComparison
from lorahub_cli.errors import LoraError

BaseLike = Union[Base, str]


@dataclass(frozen=True)
class AdapterInput:
    """What to check: the bytes' path, the label to report, and what the library knows beyond the file."""

    label: str
    path: Path
    family: Optional[str] = None            # a library entry's effective family (a user override wins)
    family_evidence: Optional[str] = None
    base_model: Optional[str] = None
    tokens: tuple[str, ...] = ()            # an embedding entry's tokens (its file's stem, recorded at ingest)


def find_adapter(ref: str, *, registry=None) -> AdapterInput:
    """The adapter ``ref`` names, by the one precedence (``lorahub_cli.resolve``): a library name, then a
    sha256 prefix, then a file."""
    from lorahub_cli.resolve import resolve

    handle = resolve(ref, registry)
    entry = handle.entry
    if entry is None:
        return AdapterInput(label=ref, path=handle.path)
    evidence = ("set by you" if "family" in (entry.overrides or {}) else entry.family_evidence) or None
    return AdapterInput(label=entry.name, path=handle.path, family=entry.family, family_evidence=evidence,
                        base_model=entry.base_model, tokens=tuple(getattr(entry, "tokens", ()) or ()))


def check_input(adapter: AdapterInput, base: BaseLike) -> CheckResult:
    """The verdict for one adapter against ``base`` (a resolved Base, or anything ``resolve_base`` takes)."""
    from lorahub_cli.inspect import describe_raw
    from lorahub_cli.inspect.containers import read_container
    from lorahub_cli.inspect.embedding import looks_like_embedding

    base = base if isinstance(base, Base) else resolve_base(base)
    raw = read_container(adapter.path)
    if looks_like_embedding(raw):   # an embedding fits by the widths of the base's text encoders
        return _check_embedding(adapter, raw, base)
    index = base_index(base)
    report, _raw, layout = describe_raw(raw, adapter.path, hash=False)
    family = adapter.family or report.family
    evidence = adapter.family_evidence or report.family_evidence
    if base.family == "unknown":
        # a custom base (a folder whose configs match no published family): look names up in its own layers
        mapping = map_modules(layout, "unknown", base=Path(base.folder))
    else:
        # keys of an adapter whose family is unknown are read as the base's family would name them
        mapping = map_modules(layout, family if family != "unknown" else base.family)
    comparison = FamilyComparison(adapter=family, base=base.family, adapter_evidence=evidence)
    return assess(mapping, index, adapter=adapter.label, family=comparison,
                  base_model=adapter.base_model or report.base_model, tokens=layout.tokens, path=str(adapter.path))


def _check_embedding(adapter: AdapterInput, raw: Any, base: Base) -> CheckResult:
    from lorahub_cli.compat.model import ComponentCoverage, Unmatched
    from lorahub_cli.embeddings.fit import fit
    from lorahub_cli.inspect.embedding import describe_embedding, vectors_of

    report, _layout = describe_embedding(raw, adapter.path)
    answer = fit(vectors_of(raw), Path(base.folder), adapter.tokens or report.tokens)
    per: dict[str, ComponentCoverage] = {}
    unmatched = []
    for f in answer.fits:
        cov = per.setdefault(f.target or f.vectors.encoder, ComponentCoverage())
        cov.total += 1
        if f.target:
            cov.matched += 1
        else:
            unmatched.append(Unmatched(f.vectors.key, f.vectors.encoder, "shape-mismatch",
                                       f"vectors {f.vectors.width} wide; the base's text encoders are "
                                       + ", ".join(f"{e} {w}" for e, w in answer.base_widths.items())))
    notes = [f"token '{t}' is a word of the base's vocabulary: every '{t}' in a prompt would become the embedding; "
             f"use it as {new} (`-e NAME:{new}`)" for t, new in answer.collisions.items()]
    family = FamilyComparison(adapter=adapter.family or report.family, base=base.family,
                              adapter_evidence=adapter.family_evidence or report.family_evidence)
    return CheckResult(adapter=adapter.label, base=base.id, verdict=answer.verdict, summary=answer.summary(),
                       family=family, per_component=dict(sorted(per.items())), unmatched=unmatched, notes=notes, path=str(adapter.path))


def check(ref: str, base: BaseLike) -> CheckResult:
    """``check_input(find_adapter(ref), base)``."""
    return check_input(find_adapter(ref), base)


def check_many(refs: Iterable[str], base: BaseLike, *,
               registry: Any = None) -> Iterator[Union[CheckResult, CheckFailure]]:
    """Each adapter's verdict; one that cannot be checked is yielded as a CheckFailure, not raised.

    The base is resolved first (its failure, e.g. offline with nothing cached, is raised: nothing can be
    decided without it), and the library (``registry``, default: the one at $LORAHUB_HOME, opened here) is
    used for all refs (a name is looked up there before a file is, so every ref needs it) and closed afterwards.
    """
    from registry.api import Registry

    base = base if isinstance(base, Base) else resolve_base(base)
    base_index(base)
    with (registry if registry is not None else Registry()) as registry:
        for ref in refs:
            try:
                yield check_input(find_adapter(ref, registry=registry), base)
            except LoraError as err:
                yield CheckFailure(ref, err)
