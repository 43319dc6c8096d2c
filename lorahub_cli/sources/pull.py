"""`lora pull` as a function: fetch a source, then record it in the library with its provenance and card.

Pulling the same Hub commit and file again is a no-op decided from one API call (the LFS sha256 names the
entry before anything is downloaded); so is pulling the same URL while the server gives it the ETag it had
(one HEAD request). A new commit of the same file becomes a new entry, named after the first one, that says
which entry it follows. The fetched file goes in through ``ingest`` (pickles are stored as their verified
safetensors conversion; the card's facts are merged there with the file's own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from lorahub_cli.sources.hf import HubSettings, download_hub, resolve_hub
from lorahub_cli.sources.model import CIVITAI, HUB, URL, CardFacts, FetchedFile, HubPlan, ProgressFn, Provenance
from lorahub_cli.sources.parse import parse_source
from registry.names import GENERIC_STEMS

if TYPE_CHECKING:
    from registry.api import Registry
    from registry.records import AdapterEntry, SourceRecord



@dataclass
class PullResult:
    """What `lora pull` did. ``status``: added | duplicate (same bytes already there; this source is
    remembered too) | unchanged (this very source was pulled before: nothing was done)."""

    status: str
    name: Optional[str]
    sha256: Optional[str]
    size: Optional[int]
    provenance: Provenance
    card: Optional[CardFacts] = None
    warnings: list[str] = field(default_factory=list)
    previous_version: Optional[str] = None     # the entry for an older commit of the same repo file
    entry: Optional["AdapterEntry"] = None
    remote: Optional[dict] = None              # what Civitai said (a civitai: pull)

    def to_dict(self) -> dict:
        return {"status": self.status, "name": self.name, "sha256": self.sha256, "size": self.size,
                "source": self.provenance.to_dict(), "card": self.card.to_dict() if self.card else None,
                "warnings": list(self.warnings), "previous_version": self.previous_version,
                "civitai": self.remote}


def pull(text: str, *, name: Optional[str] = None, file: Optional[str] = None, revision: Optional[str] = None,
         tags: Iterable[str] = (), registry: Optional["Registry"] = None,
         progress: Optional[ProgressFn] = None) -> PullResult:
    """Fetch SOURCE (Hub repo, URL or path), verify and inspect it, and record it in the library
    (``registry``, else the library at $LORAHUB_HOME, opened for this call and closed after it)."""
    from registry.api import Registry

    if registry is None:
        with Registry() as own:
            return _pull(text, name=name, file=file, revision=revision, tags=tags, registry=own, progress=progress)
    return _pull(text, name=name, file=file, revision=revision, tags=tags, registry=registry, progress=progress)


def _pull(text: str, *, name: Optional[str], file: Optional[str], revision: Optional[str], tags: Iterable[str],
          registry: "Registry", progress: Optional[ProgressFn]) -> PullResult:
    from lorahub_cli.sources import fetch

    source = parse_source(text, revision=revision, file=file)
    if source.kind == CIVITAI:
        from lorahub_cli.sources.civitai_pull import pull_civitai

        return PullResult(**pull_civitai(source, registry, name=name, tags=tags, progress=progress))
    if source.kind == HUB:
        settings = HubSettings.current()
        plan = resolve_hub(source, settings)
        done = _already_pulled(registry, plan)
        if done is not None:
            return PullResult("unchanged", done.name, done.sha256, done.size, plan.provenance(), plan.card,
                              entry=done)
        fetched = download_hub(plan, settings=settings, progress=progress)
    else:
        if source.kind == URL:
            known = _url_unchanged(registry, source.url or "")
            if known is not None:
                done, seen = known
                provenance = Provenance(kind=URL, url=source.url, etag=seen.etag, filename=seen.filename)
                return PullResult("unchanged", done.name, done.sha256, done.size, provenance, entry=done)
        fetched = fetch(source, staging_dir=registry.staging_dir, progress=progress)
    try:
        result = _record(registry, fetched, name=name, tags=list(tags))
    finally:
        if fetched.owned:
            fetched.path.unlink(missing_ok=True)  # the store has its own copy now, or nothing was recorded
    if source.kind == HUB and result.name and plan.card is not None and plan.card.images:
        from lorahub_cli.sources.hf import card_previews

        result.warnings += card_previews(plan, settings, registry, result.name)   # the card's sample images
    return result


def _record(registry: "Registry", fetched: FetchedFile, *, name: Optional[str], tags: list[str]) -> PullResult:
    from lorahub_cli.ingest import card_facts, ingest

    prov = fetched.provenance
    hint = _name_hint(fetched) if prov.kind != "path" else None   # a local path is named after its file
    # the registry names the entry (from the hint, made unique in its transaction: concurrent pulls never
    # collide); a Hub cache blob is immutable and was just verified, and a URL download is our own staging
    # file (hashed as it was written; removed below): link it rather than store a second copy
    added = ingest(fetched.path, registry, source=_source_record(prov), name=name, name_hint=hint, tags=tags,
                   facts=card_facts(fetched.card), report=fetched.report, source_name=prov.filename,
                   link=prov.kind == HUB or (prov.kind == URL and fetched.owned))
    previous = None
    if added.status == "added" and name is None and hint is not None and prov.kind == HUB:
        previous = _previous_version(registry, added.name, hint, prov)
    staged_warnings = [w for w in added.warnings if w not in fetched.report.warnings]   # the conversion's
    return PullResult(added.status, added.name, added.sha256, fetched.size, prov, fetched.card,
                      warnings=list(fetched.warnings) + staged_warnings, previous_version=previous,
                      entry=added.entry)


def _already_pulled(registry: "Registry", plan: HubPlan) -> Optional["AdapterEntry"]:
    """The entry holding exactly these bytes from exactly this repo, commit and file, if any: stored as they
    are, or (a pickle) as their safetensors conversion, whose source keeps the pulled bytes' sha256."""
    if not plan.sha256 or not plan.commit:
        return None
    want = plan.sha256.lower()
    for entry in registry.pulled_from_hub(plan.repo_id, plan.commit, plan.path_in_repo):
        if entry.sha256 == want or any(s.original_sha256 == want for s in entry.sources):
            return entry
    return None


def _url_unchanged(registry: "Registry", url: str) -> Optional[tuple["AdapterEntry", "SourceRecord"]]:
    """(the entry pulled from ``url``, that source) when the server still gives the URL the ETag it had then."""
    from lorahub_cli.sources.url import current_etag

    remembered = {s.etag: (e, s) for e in registry.pulled_from_url(url) for s in e.sources
                  if s.kind == "url" and s.url == url and s.etag}
    if not remembered:
        return None
    return remembered.get(current_etag(url))


def _name_hint(fetched: FetchedFile) -> str:
    """Hub: the repo's name (or the file's stem when it says more); URL: the file's stem."""
    prov = fetched.provenance
    stem = Path(prov.filename or "adapter").stem
    if prov.kind == HUB and stem.lower() in GENERIC_STEMS:
        stem = (prov.repo_id or "adapter").split("/")[-1]
    return stem


def _previous_version(registry: "Registry", taken: str, hint: str, prov: Provenance) -> Optional[str]:
    """The entry before ``taken`` in its name's sequence (hint, hint-2, ...) that an older pull of this very
    repo file made, if any: the registry gave the new one the first free name of that sequence."""
    from registry.names import name_from, numbered

    base, previous, n = name_from(hint), None, 1
    while (candidate := numbered(base, n)) != taken:
        entry = registry.find(candidate)
        if entry is None:
            break
        if any(s.kind == HUB and s.repo == prov.repo_id and s.filename == prov.path_in_repo for s in entry.sources):
            previous = entry.name
        n += 1
    return previous


def _source_record(prov: Provenance) -> "SourceRecord":
    from registry.records import SourceRecord

    if prov.kind == HUB:
        return SourceRecord(kind="hub", repo=prov.repo_id, revision=prov.commit, filename=prov.path_in_repo)
    if prov.kind == URL:
        return SourceRecord(kind="url", url=prov.url, filename=prov.filename, etag=prov.etag)
    return SourceRecord(kind="local", path=os.path.abspath(prov.local_path or ""))
