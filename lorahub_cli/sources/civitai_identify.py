"""`lora identify`: look library entries up on Civitai by their hashes, and record what Civitai says.

Each entry is tried with its hashes in this order, one round per kind, every round one batched lookup
(``POST /api/v1/model-versions/by-hash``, ``BATCH`` hashes a request) for the entries still unknown:

1. AutoV3: the first 12 hex digits of the sha256 of the tensor data after the safetensors header (A1111's
   addnet hash, which Civitai computes from the tensors, so header edits do not change it);
2. AutoV2: the first 10 hex digits of the file's sha256; an answer whose file has another full SHA256 is a
   prefix collision and does not count;
3. the full sha256, only for entries whose AutoV2 collided;
4. the sha256 of the original pickle that `add` converted (kept with the entry's source).

Every answer, "not found" included, is cached in the library (``lookups``) with the time it was fetched:
a found answer is reused for ``FOUND_TTL``, a "not found" for ``NOT_FOUND_TTL``; ``refresh`` asks again,
``offline`` asks nothing. What is found joins the entry through ``Registry.apply_remote``: a value the user
set is never replaced. A by-hash answer describes the version; ``details`` adds one request per found model
(cached too) for what only the model says: its permissions, description and tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Optional, Sequence

from lorahub_cli.sources.civitai import SERVICE, civitai_facts
from lorahub_cli.sources.civitai_api import CivitaiApi

if TYPE_CHECKING:
    from registry.api import Registry
    from registry.records import AdapterEntry

FOUND_TTL = timedelta(days=7)
NOT_FOUND_TTL = timedelta(days=1)
ROUNDS = ("autov3", "autov2", "sha256", "original")
_CIVITAI_KEY = {"autov3": "AutoV3", "autov2": "AutoV2", "sha256": "SHA256", "original": "SHA256"}


@dataclass
class Identified:
    """One entry's outcome. ``status``: identified | not-found | unknown (offline, nothing cached)."""

    name: str
    status: str
    matched_by: Optional[str] = None        # autov3 | autov2 | sha256 | original
    hash: Optional[str] = None
    model_id: Optional[int] = None
    version_id: Optional[int] = None
    model_name: Optional[str] = None
    version_name: Optional[str] = None
    label: Optional[str] = None
    trigger_words: Optional[list[str]] = None
    cached: bool = False

    def to_dict(self) -> dict:
        return dict(vars(self))


def entry_keys(entry: "AdapterEntry") -> dict[str, list[str]]:
    """An entry's lookup hashes by round (upper case, as Civitai writes them)."""
    keys: dict[str, list[str]] = {"autov3": [], "autov2": [entry.sha256[:10].upper()],
                                  "sha256": [entry.sha256.upper()], "original": []}
    if entry.tensor_sha256:
        keys["autov3"] = [entry.tensor_sha256[:12].upper()]
    keys["original"] = list(dict.fromkeys(s.original_sha256.upper() for s in entry.sources
                                          if s.original_sha256 and s.original_sha256 != entry.sha256))
    return keys


def identify(registry: "Registry", entries: Sequence["AdapterEntry"], *, api: Optional[CivitaiApi] = None,
             refresh: bool = False, offline: bool = False, previews: bool = True, details: bool = False,
             now: Optional[datetime] = None) -> list[Identified]:
    """Identify ``entries`` (see the module docstring); returns one ``Identified`` per entry, in order.
    ``details``: also fetch each found model (one request per model, cached like the lookups) for what only
    the model says: its permissions (recorded as the license), description and tags."""
    api = api or CivitaiApi.current(registry.home)
    now = now or datetime.now(timezone.utc)
    keys = {e.name: entry_keys(e) for e in entries}
    found: dict[str, tuple[str, str, dict, bool]] = {}      # name -> (round, hash, version, cached)
    collided: set[str] = set()
    answered: set[str] = set()     # entries with at least one answer (cached or asked), found or not
    for kind in ROUNDS:
        pending = [e for e in entries if e.name not in found
                   and (kind != "sha256" or e.name in collided) and keys[e.name][kind]]
        if not pending:
            continue
        wanted = list(dict.fromkeys(h for e in pending for h in keys[e.name][kind]))
        answers = _answers(registry, api, kind, wanted, refresh=refresh, offline=offline, now=now)
        for e in pending:
            for digest in keys[e.name][kind]:
                if digest in answers:
                    answered.add(e.name)
                version, cached = answers.get(digest, (None, False))
                if version is None:
                    continue
                if kind == "autov2" and not _same_file(version, "SHA256", e.sha256):
                    collided.add(e.name)   # another file starting with the same 10 digits
                    continue
                found[e.name] = (kind, digest, version, cached)
                break
    models = _models(registry, api, {v.get("modelId") for _k, _d, v, _c in found.values()}, refresh=refresh,
                     offline=offline, now=now) if details else {}
    out = []
    updates = []
    for e in entries:
        if e.name not in found:
            out.append(Identified(e.name, "not-found" if e.name in answered else "unknown"))
            continue
        kind, digest, version, cached = found[e.name]
        model = models.get(version.get("modelId"))
        facts = civitai_facts(version, model)
        if _news(e, facts) or (model is not None and facts.license and not e.license):
            updates.append((e.name, _record(registry, e, facts, previews=previews and not offline)))
        out.append(Identified(e.name, "identified", kind, digest, facts.model_id, facts.version_id,
                              facts.data.get("model_name"), facts.data.get("version_name"), facts.label,
                              list(facts.trigger_words), cached))
    registry.apply_remote_many(updates)   # one transaction for the whole library
    return out


def _news(entry: "AdapterEntry", facts) -> bool:
    """Does the answer say something the entry does not hold yet (another version, a missing label)?"""
    known = entry.civitai or {}
    return (known.get("version_id") != facts.version_id or (facts.label and entry.label != facts.label
                                                             and entry.label_source != "user"))


def _record(registry: "Registry", entry: "AdapterEntry", facts, *, previews: bool):
    """The record ``apply_remote`` joins to ``entry``, with a preview fetched when it has none."""
    from lorahub_cli.sources.civitai_pull import facts_record, fetch_previews

    shown: list = []
    if previews and not entry.previews:
        facts.images = facts.images[:1]   # one preview per identified entry; `lora pull` keeps more
        shown, _failed = fetch_previews(facts, registry)
    return facts_record(facts, shown)


def _answers(registry: "Registry", api: CivitaiApi, kind: str, digests: list[str], *, refresh: bool,
             offline: bool, now: datetime) -> dict[str, tuple[Optional[dict], bool]]:
    """hash -> (version or None, from the cache): cached answers that are still fresh, then one batched
    lookup for the rest (unless offline), whose answers (and "not found"s) are cached."""
    out: dict[str, tuple[Optional[dict], bool]] = {}
    cache = {} if refresh else registry.lookups(SERVICE, [f"{kind}:{d}" for d in digests])
    ask = []
    for d in digests:
        hit = cache.get(f"{kind}:{d}")
        if hit is not None and (offline or _fresh(hit, now)):
            out[d] = (hit[0] or None, True)
        else:
            ask.append(d)
    if offline or not ask:
        return out
    index: dict[str, dict] = {}
    for version in api.by_hashes(ask):
        for f in version.get("files") or []:
            for value in (f.get("hashes") or {}).values() if isinstance(f, dict) else ():
                if isinstance(value, str):
                    index.setdefault(value.upper(), version)
    answers = {}
    for d in ask:
        version = index.get(d)
        if version is not None and not _same_file(version, _CIVITAI_KEY[kind], d):
            version = None   # the answer holds the hash, but under another kind
        answers[f"{kind}:{d}"] = _trim(version) if version is not None else None
        out[d] = (version, False)
    registry.put_lookups(SERVICE, answers)
    return out


def _models(registry: "Registry", api: CivitaiApi, ids: set, *, refresh: bool, offline: bool,
            now: datetime) -> dict[int, dict]:
    """The models ``ids`` (cached as ``model:<id>``); a model that cannot be fetched is left out."""
    from lorahub_cli.errors import LoraError

    ids = sorted(i for i in ids if isinstance(i, int))
    cache = {} if refresh else registry.lookups(SERVICE, [f"model:{i}" for i in ids])
    out, fetched = {}, {}
    for i in ids:
        hit = cache.get(f"model:{i}")
        if hit is not None and hit[0] and (offline or _fresh(hit, now)):
            out[i] = hit[0]
        elif not offline:
            try:
                model = api.model(i)
            except LoraError:
                continue   # the version's own facts are still recorded
            model = dict(model, modelVersions=[])   # the versions are not needed here, and can be many
            out[i] = fetched[f"model:{i}"] = model
    if fetched:
        registry.put_lookups(SERVICE, fetched)
    return out


def _fresh(hit: tuple[Any, Optional[datetime]], now: datetime) -> bool:
    answer, fetched = hit
    if fetched is None:
        return False
    return now - fetched < (FOUND_TTL if answer else NOT_FOUND_TTL)


def _same_file(version: dict, kind: str, digest: str) -> bool:
    """Does a file of ``version`` have ``digest`` as its ``kind`` hash (AutoV2/AutoV3 prefixes compared as such)?"""
    digest = digest.upper()
    for f in version.get("files") or []:
        value = (f.get("hashes") or {}).get(kind) if isinstance(f, dict) else None
        if isinstance(value, str) and value.upper() == digest:
            return True
    return False


def _trim(version: dict) -> dict:
    """A version as the cache keeps it: the images' generation data dropped (it can be large)."""
    out = dict(version)
    out["images"] = [{k: v for k, v in i.items() if k != "meta"} for i in version.get("images") or []
                     if isinstance(i, dict)]
    return out
