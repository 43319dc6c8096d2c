"""`lora outdated` and `lora update NAME`: newer Civitai versions and newer Hub revisions of library entries.

An entry Civitai knows (pulled from it, or identified) is outdated when its model's newest version is
another one and no entry in the library holds that version yet: one ``GET /api/v1/models/{id}`` per model.
An entry pulled from the Hub is outdated when the file at the repo's default revision now has other bytes
(one API call per repo file, as `lora pull` makes). ``update`` pulls the newer one as a new entry whose
``previous_version`` is the old one; the old entry stays, and its tags and your overrides move only when
asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from lorahub_cli.errors import LoraError, NotFound
from lorahub_cli.sources.civitai import SERVICE
from lorahub_cli.sources.civitai_api import CivitaiApi
from lorahub_cli.sources.model import CIVITAI, HUB, ProgressFn, Source

if TYPE_CHECKING:
    from lorahub_cli.sources.pull import PullResult
    from registry.api import Registry
    from registry.records import AdapterEntry


@dataclass
class Outdated:
    """One entry with something newer. ``source``: civitai | hub; ``current``/``newest``: version ids or commits."""

    name: str
    source: str
    current: str
    newest: str
    newest_name: Optional[str] = None      # Civitai's version name
    ref: Optional[str] = None              # what `lora pull` takes to get the newest

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Unchecked:
    """An entry that could not be checked (the service could not be reached, the model is gone)."""

    name: str
    source: str
    error: LoraError

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, **self.error.to_dict()}


def outdated(registry: "Registry", *, api: Optional[CivitaiApi] = None, hub: bool = True,
             names: Optional[set[str]] = None) -> tuple[list[Outdated], list[Unchecked]]:
    """Entries (all, or those in ``names``) with a newer Civitai version or Hub revision."""
    api = api or CivitaiApi.current(registry.home)
    found: list[Outdated] = []
    failed: list[Unchecked] = []
    known = registry.remote_entries(SERVICE)
    have_versions = {version for _n, _m, version in known}
    by_model: dict[str, list[tuple[str, str]]] = {}
    for name, model, version in known:
        if model and version and (names is None or name in names):
            by_model.setdefault(model, []).append((name, version))
    for model, members in sorted(by_model.items()):
        try:
            newest = newest_version(api, int(model))
        except LoraError as err:
            failed += [Unchecked(name, CIVITAI, err) for name, _v in members]
            continue
        if newest is None or str(newest["id"]) in have_versions:
            continue
        for name, version in members:
            if version != str(newest["id"]):
                found.append(Outdated(name, CIVITAI, version, str(newest["id"]), newest.get("name"),
                                      f"civitai:{model}@{newest['id']}"))
    if hub:
        _hub_outdated(registry, names, found, failed)
    return found, failed


def newest_version(api: CivitaiApi, model_id: int) -> Optional[dict]:
    versions = [v for v in api.model(model_id).get("modelVersions") or [] if isinstance(v, dict) and "id" in v]
    return versions[0] if versions else None   # Civitai lists the newest first


def _hub_outdated(registry: "Registry", names: Optional[set[str]], found: list, failed: list) -> None:
    from lorahub_cli.sources.hf import HubSettings, resolve_hub

    settings = None
    seen: dict[tuple[str, str], object] = {}
    for row in registry.list():
        if names is not None and row.name not in names:
            continue
        entry = registry.get(row.name)
        hub_sources = [s for s in entry.sources if s.kind == "hub" and s.repo and s.filename]
        if not hub_sources:
            continue
        latest = hub_sources[-1]
        key = (latest.repo, latest.filename)
        try:
            settings = settings or HubSettings.current()
            if key not in seen:
                seen[key] = resolve_hub(Source(HUB, repo_id=latest.repo, path_in_repo=latest.filename), settings)
            plan = seen[key]
        except LoraError as err:
            failed.append(Unchecked(entry.name, HUB, err))
            continue
        same = plan.sha256 and (plan.sha256 == entry.sha256 or any(s.original_sha256 == plan.sha256
                                                                  for s in entry.sources))
        if plan.commit != latest.revision and plan.sha256 and not same and registry.find(plan.sha256) is None:
            found.append(Outdated(entry.name, HUB, latest.revision or "", plan.commit,
                                  ref=f"hf://{latest.repo}/{latest.filename}"))


def update(registry: "Registry", name: str, *, api: Optional[CivitaiApi] = None, move_tags: bool = False,
           move_overrides: bool = False, progress: Optional[ProgressFn] = None) -> "PullResult":
    """Pull the newest version of entry ``name`` as a new entry that follows it (``unchanged`` when the
    library has the newest already); move its tags and the user's overrides only when asked."""
    from lorahub_cli.sources.civitai_pull import pull_civitai
    from lorahub_cli.sources.pull import PullResult, pull

    api = api or CivitaiApi.current(registry.home)
    old = registry.get(name)
    if old.civitai and old.civitai.get("model_id"):
        newest = newest_version(api, int(old.civitai["model_id"]))
        if newest is None:
            raise NotFound(f"Civitai lists no version of model {old.civitai['model_id']} any more")
        source = Source(CIVITAI, civitai_model=int(old.civitai["model_id"]), civitai_version=int(newest["id"]))
        result = PullResult(**pull_civitai(source, registry, progress=progress, previous=old.name))
    else:
        hub_sources = [s for s in old.sources if s.kind == "hub" and s.repo and s.filename]
        if not hub_sources:
            raise NotFound(f"{old.name} came from neither Civitai nor the Hub: there is nothing to update it from",
                           hint=f"Run `lora identify {old.name}` to look it up on Civitai first.")
        result = pull(f"hf://{hub_sources[-1].repo}/{hub_sources[-1].filename}", registry=registry,
                      progress=progress)
        if result.status == "added" and result.name:
            registry.set_previous(result.name, old.name)
            result.previous_version = old.name
    if result.status == "added" and result.name:
        _move(registry, old, result.name, move_tags=move_tags, move_overrides=move_overrides)
    return result


def _move(registry: "Registry", old: "AdapterEntry", new: str, *, move_tags: bool, move_overrides: bool) -> None:
    if move_tags:
        mine = [t for t, s in old.tag_sources.items() if s == "user"]
        if mine:
            registry.tag(new, add=mine)
            registry.tag(old.name, remove=mine)
    if move_overrides and old.overrides:
        o = old.overrides
        registry.set(new, base_model=o.get("base_model"), family=o.get("family"),
                     trigger_words=o.get("trigger_words"))
        registry.set(old.name, reset=list(o))
