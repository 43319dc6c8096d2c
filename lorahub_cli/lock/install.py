"""``install``: make every entry of a lock present in the library, fetching what is missing.

Per entry, in the lock's order:

* **present**: the library holds the sha256 (under any name: nothing the user has is renamed) and its
  bytes are there (a stat of the stored file, its size as recorded; ``verify`` re-hashes them);
* **fetched**: its sources are tried in the lock's order through pull's own code (``download_hub_pinned``,
  ``download_civitai``, ``fetch_url``, ``fetch_path``), the bytes are checked against the
  lock's sha256 *before* ``ingest`` stores anything, and the entry is named after the lock's name (made
  unique by the registry when another entry holds that name);
* **failed**: with the code of the failure (``no-source``, ``hash-mismatch``, ``sources-failed`` listing
  each source's code, ``damaged-file``...); the other entries are still done;
* **missing**: ``offline``: not in the library, and nothing was fetched.

A Hub source is fetched by its recorded commit with a single GET, hashed as it arrives (no API call and no
metadata request: the lock already knows the commit, the file and the sha256), or read from the HF cache
when it is there. Up to ``WORKERS`` entries are downloaded and checked at
once; the calling thread stores them in batches (``ingest_many``: one filesystem sync and one transaction per
batch instead of two fsyncs and a commit per entry), in the lock's order. A batch is stored when it holds
``BATCH`` entries, when nothing is left to fetch, or when the next download is not finished and the batch
has waited ``BATCH_WAIT`` seconds (so the report moves on at least that often); each entry is reported
only once its batch is committed. Running it again finds everything present: it is
idempotent.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from lorahub_cli.errors import DamagedFile, HashMismatch, LoraError, NoSource, NotFound, SourcesFailed
from lorahub_cli.lock.model import LockEntry, LockFile, LockSource

if TYPE_CHECKING:
    from lorahub_cli.ingest import IngestItem
    from lorahub_cli.sources.model import FetchedFile
    from registry.api import Registry

PRESENT, FETCHED, FAILED, MISSING = "present", "fetched", "failed", "missing"
WORKERS = 8   # downloads at once, as huggingface_hub's snapshot_download (on a network, latency hides behind them)
BATCH = 64    # entries stored per filesystem sync and transaction, at most
BATCH_WAIT = 0.25   # seconds a fetched entry may wait for later ones before its batch is stored anyway


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
    """Each entry of ``lock`` present, fetched, failed or (``offline``) missing; see the module docstring.

    Missing entries are downloaded and checked by up to ``WORKERS`` threads at once (network waits and
    hashing overlap, as ``snapshot_download`` does); storing them stays in this thread, in the lock's order,
    so the library sees one writer. ``on_entry`` is called for each entry in the lock's order."""
    held = {s.sha256: s for s in registry.list()}    # one query, however long the lock
    ready: dict[int, Outcome] = {}
    todo: list[int] = []
    for i, entry in enumerate(lock.entries):
        summary = held.get(entry.sha256)
        if summary is not None:
            ready[i] = _present(entry, registry, summary, verify=verify)
        elif offline:
            ready[i] = Outcome(entry.name, entry.sha256, MISSING)
        else:
            todo.append(i)
    out: list[Outcome] = []
    order: list[int] = []               # entries decided or waiting for their batch, in the lock's order
    decided: dict[int, Outcome] = {}
    batch: dict[int, tuple[LockEntry, Checked, LockSource]] = {}
    batch_since = 0.0   # when the batch's first entry joined it

    def store_batch() -> None:
        if batch:
            decided.update(zip(batch, _store(list(batch.values()), registry)))
            batch.clear()
        for i in order:   # everything up to here is decided now: report it in the lock's order
            outcome = decided.pop(i)
            if on_entry is not None:
                on_entry(outcome)
            out.append(outcome)
        order.clear()

    with ThreadPoolExecutor(max_workers=max(1, min(WORKERS, len(todo)))) as pool:
        pending = {i: pool.submit(_fetch, lock.entries[i], registry) for i in todo}
        try:
            for i, entry in enumerate(lock.entries):
                if i in ready:
                    order.append(i)
                    decided[i] = ready[i]
                else:
                    future = pending[i]
                    if batch and not future.done():   # give it what is left of the batch's wait, then store
                        wait([future], timeout=max(0.0, BATCH_WAIT - (time.monotonic() - batch_since)))
                        if not future.done():
                            store_batch()   # what is fetched is stored while this download finishes
                    order.append(i)   # after that store: it reports only the entries before this one
                    pending.pop(i)
                    try:
                        checked, source = future.result()
                    except LoraError as err:
                        decided[i] = Outcome(entry.name, entry.sha256, FAILED, error=err.to_dict())
                    else:
                        if not batch:
                            batch_since = time.monotonic()
                        batch[i] = (entry, checked, source)
                if not batch or len(batch) >= BATCH:   # a full batch, or nothing waiting: store and report
                    store_batch()
            store_batch()
        finally:   # an unexpected error: the downloads still running finish, their staged files are removed
            for future in pending.values():
                future.cancel()
            for future in pending.values():
                if not future.cancelled() and future.exception() is None:
                    future.result()[0].discard()
            for _entry, checked, _source in batch.values():
                checked.discard()
    return out


def _store(fetched: list[tuple[LockEntry, "Checked", LockSource]], registry: "Registry") -> list[Outcome]:
    """Store a batch of fetched, checked entries with one ``ingest_many``; their outcomes, in order."""
    from lorahub_cli.ingest import ingest_many

    try:
        results = ingest_many([checked.item for _e, checked, _s in fetched], registry)
    except LoraError as err:   # the batch as a whole (a busy database, a full disk): each entry fails with it,
        results = [err] * len(fetched)   # and the install goes on to the next, as it reports per entry
    finally:
        for _e, checked, _s in fetched:
            checked.discard()
    out = []
    for (entry, checked, source), added in zip(fetched, results):
        if isinstance(added, LoraError):
            out.append(Outcome(entry.name, entry.sha256, FAILED, error=added.to_dict()))
            continue
        warnings = [*checked.warnings, *added.warnings]
        if added.sha256 != entry.sha256:   # a pickle source stored as its conversion: not the lock's bytes
            warnings.append(f"stored as its safetensors conversion {str(added.sha256)[:12]}, not the lock's "
                            f"{entry.sha256[:12]}")
        out.append(Outcome(entry.name, entry.sha256, FETCHED, name=added.name, source=source.describe(),
                           warnings=warnings))
    return out


def _present(entry: LockEntry, registry: "Registry", summary: Any, *, verify: bool) -> Outcome:
    try:
        _check_present(registry, summary, verify=verify)
    except LoraError as err:
        return Outcome(entry.name, entry.sha256, FAILED, name=summary.name, error=err.to_dict())
    return Outcome(entry.name, entry.sha256, PRESENT, name=summary.name)


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


@dataclass
class Checked:
    """Bytes fetched and checked against the lock (in a worker), waiting to be stored (in the caller's thread).
    ``item`` is what ``ingest_many`` stores; ``discard`` removes a staged copy once stored or refused;
    ``warnings`` are the fetch's own (a preview that could not be saved, a config file others may read)."""

    item: "IngestItem"
    discard: Callable[[], None] = lambda: None
    warnings: list[str] = field(default_factory=list)


def _fetch(entry: LockEntry, registry: "Registry") -> tuple[Checked, LockSource]:
    """The first source, in the lock's order, whose bytes are the lock's (runs in a worker: no writes)."""
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


def _from(source: LockSource, entry: LockEntry, registry: "Registry") -> Checked:
    """Fetch one source and check its bytes against the lock; storing them is left to ``Checked.store``."""
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
    discard = (lambda: fetched.path.unlink(missing_ok=True)) if fetched.owned else (lambda: None)
    try:
        _same(fetched, expected, source)
    except LoraError:
        discard()
        raise
    return Checked(_item(fetched, entry), discard)


def _from_hub(source: LockSource, entry: LockEntry, registry: "Registry", expected: str) -> Checked:
    from lorahub_cli.sources.card import flag_disagreement
    from lorahub_cli.sources.hf import HubSettings, card_at_commit, download_hub_pinned
    from lorahub_cli.sources.model import HubPlan

    # the plan pull would make, known from the lock (commit and file: no API call), fetched with one GET
    # into staging unless the HF cache has it. The bytes are checked against the lock here: a wrong lock
    # must not cost the user a good file of their HF cache (a corrupt one, whose LFS blob name is not its
    # hash, is removed so that the next try downloads it anew)
    plan = HubPlan(repo_id=source.repo or "", revision=source.commit, commit=source.commit or "",
                   path_in_repo=source.file or "", size=None, sha256=None, blob_id=None, card=None, files=[])
    settings = HubSettings.current()
    fetched = download_hub_pinned(plan, registry.staging_dir, settings=settings)
    discard = (lambda: fetched.path.unlink(missing_ok=True)) if fetched.owned else (lambda: None)
    try:
        try:
            _same(fetched, expected, source)
        except HashMismatch:
            if not fetched.owned and len(fetched.path.name) == 64 and fetched.path.name != fetched.sha256:
                fetched.path.unlink(missing_ok=True)
            raise
        # the card at the locked commit, as pull reads it: its trigger words, base model, tags and license
        fetched.card = card_at_commit(plan.repo_id, plan.commit, settings)   # (source card:README.md@repo)
        disagreement = flag_disagreement(fetched.card, fetched.report)
        if disagreement:
            fetched.report.warnings.append(disagreement)   # recorded with the entry, as pull records it
        return Checked(_item(fetched, entry), discard)
    except BaseException:   # a staged copy of ours never outlives a failure (an interrupt included)
        discard()
        raise


def _from_civitai(source: LockSource, entry: LockEntry, registry: "Registry", expected: str) -> Checked:
    from lorahub_cli.sources.civitai import download_civitai, resolve_civitai
    from lorahub_cli.sources.civitai_api import CivitaiApi
    from lorahub_cli.sources.model import CIVITAI, Source

    api = CivitaiApi.current(registry.home)
    plan = resolve_civitai(Source(CIVITAI, civitai_model=source.model, civitai_version=source.version), api)
    if plan.sha256 and plan.sha256 != expected:   # refused before a byte is downloaded
        raise HashMismatch(f"{source.describe()} lists sha256 {plan.sha256[:12]} for {plan.filename}; the lock "
                           f"says {expected[:12]}: nothing was stored")
    fetched = download_civitai(plan, api, registry.staging_dir)
    discard = lambda: fetched.path.unlink(missing_ok=True)  # noqa: E731
    try:
        _same(fetched, expected, source)
    except LoraError:
        discard()
        raise

    from lorahub_cli.ingest import IngestItem
    from lorahub_cli.sources.civitai import civitai_facts
    from lorahub_cli.sources.civitai_pull import _source_record, fetch_previews, ingest_facts, remote_record

    try:   # as `lora pull civitai:` records it: Civitai's facts, ids and previews with the entry
        facts = civitai_facts(plan.version, plan.model)
        shown, failed = fetch_previews(facts, registry)
    except BaseException:
        discard()
        raise
    item = IngestItem(fetched.path, source=_source_record(plan), name_hint=entry.name, facts=ingest_facts(facts),
                      report=fetched.report, source_name=plan.filename, remote=remote_record(facts),
                      previews=shown, link=True, with_entry=False)
    return Checked(item, discard, warnings=[*api.warnings, *failed])


def _same(fetched: "FetchedFile", expected: str, source: LockSource) -> None:
    if fetched.sha256 != expected:
        raise HashMismatch(f"{source.describe()} gave bytes with sha256 {fetched.sha256[:12]}; the lock says "
                           f"{expected[:12]}: nothing was stored",
                           hint="The source changed since the lock was written; check it, then lock again.")


def _item(fetched: "FetchedFile", entry: LockEntry) -> "IngestItem":
    """The verified bytes as pull records them, named after the lock's entry (name and sha256 are all install
    reports: no full entry is read back)."""
    from lorahub_cli.ingest import IngestItem, card_facts
    from lorahub_cli.sources.pull import _source_record

    prov = fetched.provenance
    return IngestItem(fetched.path, source=_source_record(prov), name_hint=entry.name, facts=card_facts(fetched.card),
                      report=fetched.report, source_name=prov.filename,
                      link=prov.kind == "hub" or (prov.kind == "url" and fetched.owned), with_entry=False)


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
