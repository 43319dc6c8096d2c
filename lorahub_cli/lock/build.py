"""Build a ``LockFile``: from library entries (names or a tag), or from a recipe's adapters and base.

A library entry's recorded sources become the lock's, most precise first (``SOURCE_ORDER``): a Hub repo, file
and commit; a Civitai version; a URL with its ETag; the local path it was added from, as a last hint.
Sources that cannot fetch the bytes again (a merge, a conversion, a training run) are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence

from lorahub_cli.errors import BadLock, BadRecipe, NotFound, UsageError
from lorahub_cli.lock.model import SOURCE_ORDER, LockEntry, LockFile, LockSource, source_from_dict

if TYPE_CHECKING:
    from registry.api import Registry
    from registry.records import AdapterEntry, SourceRecord


def lock_sources(records: Iterable["SourceRecord"]) -> list[LockSource]:
    """The fetchable ones among an entry's recorded sources, in install's order of preference, once each."""
    out: list[LockSource] = []
    for r in records:
        s = _portable(r)
        if s is not None and s not in out:
            out.append(s)
    return sorted(out, key=lambda s: SOURCE_ORDER.index(s.kind))


def _portable(r: "SourceRecord") -> Optional[LockSource]:
    original = r.original_sha256
    if r.kind == "hub" and r.repo and r.filename and r.revision:
        return LockSource("hub", repo=r.repo, file=r.filename, commit=r.revision, sha256=original)
    if r.kind == "civitai" and r.revision and r.revision.isdigit():
        model = int(r.repo) if r.repo and r.repo.isdigit() else None
        return LockSource("civitai", model=model, version=int(r.revision), sha256=original)
    if r.kind == "url" and r.url:
        return LockSource("url", url=r.url, etag=r.etag, sha256=original)
    if r.kind == "local" and r.path and not r.path.lower().endswith(".tar"):   # a bundle it came in: no file
        return LockSource("path", path=r.path, sha256=original)
    return None


def entry_to_lock(entry: "AdapterEntry", weight: Optional[float] = None) -> LockEntry:
    return LockEntry(name=entry.name, sha256=entry.sha256, kind=entry.kind, family=entry.family,
                     base=entry.base_model, weight=weight, size=entry.size, sources=lock_sources(entry.sources))


def lock_entries(registry: "Registry", refs: Sequence[str] = (), tags: Sequence[str] = ()) -> LockFile:
    """A lock of the entries ``refs`` name (each by the one precedence) and those carrying every tag in
    ``tags``; in the order named, then by name. Nothing named: ``usage``; an unknown name: ``not-found``."""
    if not refs and not tags:
        raise UsageError("name the adapters to lock, or give --tag or --from")
    entries: dict[str, "AdapterEntry"] = {}
    for ref in refs:
        entry = registry.get(ref)
        entries.setdefault(entry.sha256, entry)
    if tags:
        found = registry.list(tags=list(tags))
        if not found:
            raise NotFound(f"no adapter is tagged {', '.join(tags)}", hint="See the tags in use with `lora list`.")
        for summary in found:
            if summary.sha256 not in entries:
                entries[summary.sha256] = registry.get(summary.name)
    return LockFile(entries=[entry_to_lock(e) for e in entries.values()])


def lock_recipe(adapters: Sequence[Mapping[str, Any]], registry: Optional["Registry"], *,
                base: Optional[str] = None, base_id: Optional[str] = None) -> LockFile:
    """A lock of a recipe's adapters ({"name", "sha256", "weight"[, "sources", "path"]}), with its weights and
    base. A recipe's own sources come first; an entry of this library holding the bytes adds its sources;
    a recipe's file path is the last hint. Without any, the entry still names its bytes (install reports
    ``no-source`` for it unless the library holds them)."""
    entries: list[LockEntry] = []
    for a in adapters:
        sha = a["sha256"]
        if any(e.sha256 == sha for e in entries):
            continue
        sources = _recipe_sources(a.get("sources") or [], a["name"])
        known = registry.find(sha) if registry is not None else None
        if known is not None and known.sha256 == sha:
            sources += [s for s in lock_sources(known.sources) if s not in sources]
        if a.get("path") and not any(s.kind == "path" and s.path == a["path"] for s in sources):
            sources.append(LockSource("path", path=a["path"]))
        entries.append(LockEntry(name=a["name"], sha256=sha, kind=a.get("kind", "lora"),
                                 family=known.family if known is not None and known.sha256 == sha else None,
                                 base=base_id or base, weight=float(a["weight"]) if "weight" in a else None,
                                 sources=sorted(sources, key=lambda s: SOURCE_ORDER.index(s.kind))))
    return LockFile(entries=entries, base=base, base_id=base_id)


def _recipe_sources(items: Sequence[Any], name: str) -> list[LockSource]:
    """A recipe adapter's sources, each checked as a lock's is (a bad one is the recipe's fault)."""
    try:
        return [s if isinstance(s, LockSource) else source_from_dict(s, f"{name}'s source {i + 1}")
                for i, s in enumerate(items)]
    except BadLock as err:
        raise BadRecipe(f"the recipe's {err.message}") from None
