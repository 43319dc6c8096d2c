"""``install``: make every entry of a lock present in the library, fetching what is missing.

Per entry, in the lock's order:

* **present**: the library holds the sha256 (under any name: nothing the user has is renamed) and its
  bytes are there (a stat of the stored file, its size as recorded; ``verify`` re-hashes them);
* **fetched**: its sources are tried in the lock's order through pull's own code (``download_hub`` into
  the HF cache, ``download_civitai``, ``fetch_url``, ``fetch_path``), the bytes are checked against the
  lock's sha256 *before* ``ingest`` stores anything, and the entry is named after the lock's name (made
  unique by the registry when another entry holds that name);
* **failed**: with the code of the failure (``no-source``, ``hash-mismatch``, ``sources-failed`` listing
  each source's code, ``damaged-file``...); the other entries are still done;
* **missing**: ``offline``: not in the library, and nothing was fetched.

A Hub source is fetched by its recorded commit with a single ``hf_hub_download`` (no API call: the lock
already knows the commit, the file and the sha256), so installing from the Hub costs what plain
downloads cost. Running it again finds everything present: it is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from lorahub_cli.errors import DamagedFile, HashMismatch, LoraError, NoSource, NotFound, SourcesFailed
from lorahub_cli.lock.model import LockEntry, LockFile, LockSource

if TYPE_CHECKING:
    from lorahub_cli.sources.model import FetchedFile
    from registry.api import Registry
    from registry.records import AddResult

PRESENT, FETCHED, FAILED, MISSING = "present", "fetched", "failed", "missing"


@dataclass
class Outcome:
    """What became of one lock entry. ``name``: the library's name for it (present or fetched)."""

    lock_name: str
    sha256: str
    status: str
    name: Optional[str] = None
    source: Optional[str] = None             # the source it was fetched from
    error: Optional[dict] = None             # {"code", "message", "hint"} when failed
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"lock_name": self.lock_name, "sha256": self.sha256, "status": self.status, "name": self.name,
                "source": self.source, "error": self.error, "warnings": list(self.warnings)}


def install(lock: LockFile, registry: "Registry", *, offline: bool = False, verify: bool = False,
            on_entry: Optional[Callable[[Outcome], None]] = None) -> list[Outcome]:
    """Each entry of ``lock`` present, fetched, failed or (``offline``) missing; see the module docstring."""
    held = {s.sha256: s for s in registry.list()}    # one query, however long the lock
    out = []
    for entry in lock.entries:
        outcome = _one(entry, registry, held, offline=offline, verify=verify)
        if on_entry is not None:
            on_entry(outcome)
        out.append(outcome)
    return out


def _one(entry: LockEntry, registry: "Registry", held: dict, *, offline: bool, verify: bool) -> Outcome:
    summary = held.get(entry.sha256)
    try:
        if summary is not None:
            _check_present(registry, summary, verify=verify)
            return Outcome(entry.name, entry.sha256, PRESENT, name=summary.name)
        if offline:
            return Outcome(entry.name, entry.sha256, MISSING)
        added, source = _fetch(entry, registry)
    except LoraError as err:
        return Outcome(entry.name, entry.sha256, FAILED, error=err.to_dict())
    warnings = list(added.warnings)
    if added.sha256 != entry.sha256:   # a pickle source stored as its conversion: not the lock's bytes
        warnings.append(f"stored as its safetensors conversion {str(added.sha256)[:12]}, not the lock's "
                        f"{entry.sha256[:12]}")
    return Outcome(entry.name, entry.sha256, FETCHED, name=added.name, source=source.describe(), warnings=warnings)


def _check_present(registry: "Registry", summary: Any, *, verify: bool) -> None:
    """The held bytes are there: the stored blob (or in-place file) exists with its recorded size; with
    ``verify``, its sha256 is computed again. Otherwise ``damaged-file``, naming doctor."""
    path = Path(registry.get(summary.name).path or "") if summary.in_place else registry.store.path_for(summary.sha256)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size != summary.size:
        raise DamagedFile(f"{summary.name}'s file is missing or changed ({path})",
                          hint="Run `lora doctor` to see what happened to it.")
    if verify:
        from registry.store import hash_file

        if hash_file(path)[0] != summary.sha256:
            raise DamagedFile(f"{summary.name}'s stored bytes no longer hash to {summary.sha256[:12]}",
                              hint="Run `lora doctor --fix`, then `lora install` again.")


def _fetch(entry: LockEntry, registry: "Registry") -> tuple["AddResult", LockSource]:
    if not entry.sources:
        raise NoSource(f"{entry.name} ({entry.sha256[:12]}) is not in the library and the lock names no source")
    failures: list[tuple[LockSource, LoraError]] = []
    for source in entry.sources:
        try:
            return _from(source, entry, registry), source
        except LoraError as err:
            failures.append((source, err))
    codes = {err.code for _, err in failures}
    if len(codes) == 1:   # one reason (a hash mismatch, an unreachable host): its own code says it best
        raise failures[-1][1]
    detail = "; ".join(f"{s.describe()}: {err.code} ({err.message[:160]})" for s, err in failures)
    raise SourcesFailed(f"every source of {entry.name} failed: {detail}")


def _from(source: LockSource, entry: LockEntry, registry: "Registry") -> "AddResult":
    """Fetch one source, check its bytes against the lock, and ingest them under the lock's name."""
    expected = source.sha256 or entry.sha256
    if source.kind == "hub":
        return _from_hub(source, entry, registry, expected)
    if source.kind == "civitai":
        return _from_civitai(source, entry, registry, expected)
    from lorahub_cli.sources import fetch_path, fetch_url

    if source.kind == "url":
        fetched = fetch_url(source.url or "", registry.staging_dir)
    else:
        if not Path(source.path or "").is_file():
            raise NotFound(f"{source.path} is not there")
        fetched = fetch_path(Path(source.path or ""))
    try:
        _same(fetched, expected, source)
        return _ingest(fetched, entry, registry)
    finally:
        if fetched.owned:
            fetched.path.unlink(missing_ok=True)


def _from_hub(source: LockSource, entry: LockEntry, registry: "Registry", expected: str) -> "AddResult":
    from lorahub_cli.sources.hf import HubSettings, download_hub
    from lorahub_cli.sources.model import HubPlan

    # the plan pull would make, known from the lock (commit and file: no API call). The bytes are checked
    # against the lock here rather than in download_hub, which would delete a mismatching cache copy: a
    # wrong lock must not cost the user a good file of their HF cache (a corrupt one, whose LFS blob name is
    # not its hash, is removed so that the next try downloads it anew)
    plan = HubPlan(repo_id=source.repo or "", revision=source.commit, commit=source.commit or "",
                   path_in_repo=source.file or "", size=None, sha256=None, blob_id=None, card=None, files=[])
    fetched = download_hub(plan, settings=HubSettings.current())
    try:
        _same(fetched, expected, source)
    except HashMismatch:
        if len(fetched.path.name) == 64 and fetched.path.name != fetched.sha256:
            fetched.path.unlink(missing_ok=True)
        raise
    return _ingest(fetched, entry, registry)


def _from_civitai(source: LockSource, entry: LockEntry, registry: "Registry", expected: str) -> "AddResult":
    from lorahub_cli.ingest import ingest
    from lorahub_cli.sources.civitai import civitai_facts, download_civitai, resolve_civitai
    from lorahub_cli.sources.civitai_api import CivitaiApi
    from lorahub_cli.sources.civitai_pull import _source_record, fetch_previews, ingest_facts, remote_record
    from lorahub_cli.sources.model import CIVITAI, Source

    api = CivitaiApi.current()
    plan = resolve_civitai(Source(CIVITAI, civitai_model=source.model, civitai_version=source.version), api)
    if plan.sha256 and plan.sha256 != expected:   # refused before a byte is downloaded
        raise HashMismatch(f"{source.describe()} lists sha256 {plan.sha256[:12]} for {plan.filename}; the lock "
                           f"says {expected[:12]}: nothing was stored")
    fetched = download_civitai(plan, api, registry.staging_dir)
    try:
        _same(fetched, expected, source)
        facts = civitai_facts(plan.version, plan.model)
        shown, failed = fetch_previews(facts, registry)
        added = ingest(fetched.path, registry, source=_source_record(plan), name_hint=entry.name,
                       facts=ingest_facts(facts), report=fetched.report, source_name=plan.filename,
                       remote=remote_record(facts), previews=shown, link=True)
        added.warnings = [*added.warnings, *failed]
        return added
    finally:
        fetched.path.unlink(missing_ok=True)


def _same(fetched: "FetchedFile", expected: str, source: LockSource) -> None:
    if fetched.sha256 != expected:
        raise HashMismatch(f"{source.describe()} gave bytes with sha256 {fetched.sha256[:12]}; the lock says "
                           f"{expected[:12]}: nothing was stored",
                           hint="The source changed since the lock was written; check it, then lock again.")


def _ingest(fetched: "FetchedFile", entry: LockEntry, registry: "Registry") -> "AddResult":
    """The verified bytes into the library as pull records them, named after the lock's entry."""
    from lorahub_cli.ingest import card_facts, ingest
    from lorahub_cli.sources.pull import _source_record

    prov = fetched.provenance
    return ingest(fetched.path, registry, source=_source_record(prov), name_hint=entry.name,
                  facts=card_facts(fetched.card), report=fetched.report, source_name=prov.filename,
                  link=prov.kind == "hub")


def install_recipe(adapters: list[dict], registry: "Registry") -> list[Outcome]:
    """`generate --from IMAGE --install`: fetch the adapters a recipe names that the library lacks, from the
    sources the recipe records (and those of an entry here holding the same bytes). An adapter that cannot
    be brought raises its own error: the image cannot be made again without it."""
    from lorahub_cli.lock.build import lock_recipe

    outcomes = install(lock_recipe(adapters, registry), registry)
    for o in outcomes:
        if o.status == FAILED and o.error:
            raise LoraError(f"{o.lock_name}: {o.error['message']}", hint=o.error.get("hint"), code=o.error["code"])
    return outcomes
