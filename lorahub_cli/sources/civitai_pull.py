"""`lora pull civitai:...`: resolve, download, verify, and record the entry with what Civitai knows.

Pulling the version and file already in the library (same sha256 from Civitai) is ``unchanged`` after the
API calls alone. A file that changed under the same version is downloaded and becomes a new entry, with a
warning naming the old one. Same bytes under another name: ``duplicate``, and Civitai's facts are joined to
that entry (never over a user's value). Preview images are fetched into ``<home>/previews`` (a failed preview
is a warning, never a failed pull).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional
from urllib.request import Request

from lorahub_cli.errors import LoraError
from lorahub_cli.previews import MAX_PREVIEW_BYTES, image_suffix
from lorahub_cli.sources.civitai import API_SOURCE, SERVICE, CivitaiFacts, CivitaiPlan, civitai_facts
from lorahub_cli.sources.civitai_api import CivitaiApi
from lorahub_cli.sources.model import ProgressFn, Source

if TYPE_CHECKING:
    from lorahub_cli.ingest import Fact
    from registry.api import Registry
    from registry.records import AdapterEntry, AdapterRecord, PreviewRecord

MAX_PREVIEWS = 4


def pull_civitai(source: Source, registry: "Registry", *, name: Optional[str] = None, tags: Iterable[str] = (),
                 progress: Optional[ProgressFn] = None, api: Optional[CivitaiApi] = None, previews: bool = True,
                 previous: Optional[str] = None) -> dict:
    """Pull one Civitai version's file into ``registry`` (see the module docstring). ``previous``: the name
    of the entry this one updates (`lora update`). Returns ``sources.pull.PullResult``'s fields (that module
    builds the result: this one stays below it)."""
    from lorahub_cli.ingest import ingest
    from lorahub_cli.sources.civitai import download_civitai, resolve_civitai

    api = api or CivitaiApi.current(registry.home)
    plan = resolve_civitai(source, api)
    facts = civitai_facts(plan.version, plan.model)
    done = _already_pulled(registry, plan)
    if done is not None:
        return dict(status="unchanged", name=done.name, sha256=done.sha256, size=done.size,
                    provenance=plan.provenance(), entry=done, remote=facts.to_dict(), warnings=list(api.warnings))
    warnings = _changed_under_version(registry, plan)
    if plan.sha256 is None:
        warnings.append(f"Civitai lists no SHA256 for {plan.filename}: the download could not be checked "
                        "against it (it was still inspected)")
    fetched = download_civitai(plan, api, registry.staging_dir, progress=progress)
    try:
        shown, failed = fetch_previews(facts, registry) if previews else ([], [])
        added = ingest(fetched.path, registry, source=_source_record(plan), name=name, tags=list(tags),
                       name_hint=Path(plan.filename).stem, facts=ingest_facts(facts), report=fetched.report,
                       source_name=plan.filename, remote=remote_record(facts), previews=shown, previous=previous,
                       link=True)   # our own verified download: the store links it instead of copying it
    finally:
        fetched.path.unlink(missing_ok=True)
    entry = added.entry
    if added.status == "duplicate" and added.name:
        entry = registry.apply_remote(added.name, facts_record(facts, shown))
    staged = [w for w in added.warnings if w not in fetched.report.warnings]
    return dict(status=added.status, name=added.name, sha256=added.sha256, size=fetched.size,
                provenance=plan.provenance(),
                warnings=[*api.warnings, *warnings, *fetched.warnings, *staged, *failed],
                previous_version=previous, entry=entry, remote=facts.to_dict())


def ingest_facts(facts: CivitaiFacts) -> list["Fact"]:
    """Civitai's facts for ``ingest``'s one merge (rank: card or API, below the file's own metadata)."""
    from lorahub_cli.ingest import Fact

    out = [Fact("trigger_word", w, API_SOURCE) for w in facts.trigger_words]
    if facts.license:
        out.append(Fact("license", facts.license, API_SOURCE))
    if facts.label:
        out.append(Fact("label", facts.label, API_SOURCE))
    return out


def remote_record(facts: CivitaiFacts) -> dict:
    return {SERVICE: {"model_id": facts.model_id, "version_id": facts.version_id, "data": facts.data}}


def facts_record(facts: CivitaiFacts, previews: list["PreviewRecord"]) -> "AdapterRecord":
    """Civitai's facts as a record for ``Registry.apply_remote`` (only the fields it reads are set)."""
    from registry.records import AdapterRecord

    return AdapterRecord(sha256=None, size=0, container="safetensors", format="", network="", family="unknown",
                         trigger_words=list(facts.trigger_words),
                         trigger_word_sources={w: API_SOURCE for w in facts.trigger_words},
                         license=facts.license, license_source=API_SOURCE if facts.license else None,
                         label=facts.label, label_source=API_SOURCE if facts.label else None,
                         remote=remote_record(facts), previews=list(previews))


def _source_record(plan: CivitaiPlan):
    from registry.records import SourceRecord

    return SourceRecord(kind="civitai", url=plan.url, repo=str(plan.model_id), revision=str(plan.version_id),
                        filename=plan.filename)


def _already_pulled(registry: "Registry", plan: CivitaiPlan) -> Optional["AdapterEntry"]:
    """The entry holding the bytes Civitai lists for this version's file, pulled from this very version:
    stored as they are, or (a pickle) as their conversion, whose source keeps the pulled bytes' sha256."""
    if not plan.sha256:
        return None
    candidates = [registry.find(plan.sha256)]
    candidates += [registry.find(name) for name, _m, version in registry.remote_entries(SERVICE)
                   if version == str(plan.version_id)]
    for entry in candidates:
        if entry is None:
            continue
        for s in entry.sources:
            if s.kind == "civitai" and s.revision == str(plan.version_id) and plan.sha256 in (
                    entry.sha256, s.original_sha256):
                return entry
    return None


def _changed_under_version(registry: "Registry", plan: CivitaiPlan) -> list[str]:
    """A warning for each entry pulled from this version and file whose bytes Civitai no longer lists."""
    out = []
    for name, _model, version in registry.remote_entries(SERVICE):
        if version != str(plan.version_id):
            continue
        entry = registry.find(name)
        if entry is not None and plan.sha256 and entry.sha256 != plan.sha256 and any(
                s.kind == "civitai" and s.filename == plan.filename for s in entry.sources):
            out.append(f"the file {plan.filename} of civitai:{plan.model_id}@{plan.version_id} changed since "
                       f"{name} was pulled (sha256 {entry.sha256[:12]} -> {plan.sha256[:12]}); {name} is kept")
    return out


def fetch_previews(facts: CivitaiFacts, registry: "Registry") -> tuple[list["PreviewRecord"], list[str]]:
    """Download up to ``MAX_PREVIEWS`` images into the previews folder, by content; (records, warnings)."""
    from registry.publish import publish_file
    from registry.records import PreviewRecord, preview_relpath

    shown: list[PreviewRecord] = []
    failed: list[str] = []
    for image in facts.images[:MAX_PREVIEWS]:
        url = image["url"]
        try:
            data = _get(url)
            suffix = _suffix(data)
            digest = hashlib.sha256(data).hexdigest()
            target = registry.home / preview_relpath(digest, suffix)
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                publish_file(target, data)
            shown.append(PreviewRecord(sha256=digest, suffix=suffix, url=url, source=API_SOURCE))
        except (OSError, LoraError, ValueError) as exc:
            failed.append(f"preview image {url} was not saved: {getattr(exc, 'message', None) or exc}")
    return shown, failed


def _get(url: str) -> bytes:
    from lorahub_cli import __version__
    from lorahub_cli.sources.url import urlopen

    with urlopen(Request(url, headers={"User-Agent": f"lorahub-cli/{__version__}"}), timeout=30.0) as response:
        data = response.read(MAX_PREVIEW_BYTES + 1)
    if len(data) > MAX_PREVIEW_BYTES:
        raise ValueError(f"larger than {MAX_PREVIEW_BYTES >> 20} MiB")
    return data


def _suffix(data: bytes) -> str:
    """previews.image_suffix, and Civitai's MP4 previews beside the images."""
    suffix = image_suffix(data) or (".mp4" if data[4:8] == b"ftyp" else None)
    if suffix is None:
        raise ValueError("not an image or video we know (PNG, JPEG, GIF, WebP, MP4)")
    return suffix
