"""``ingest``: the one way a file enters the library (add, pull, convert, merge and train all call it).

    result = ingest(path, registry, source=SourceRecord(kind="local", path=str(path)), name="style")

Steps, always in this order:

1. **stage**: a pickle becomes its bit-verified safetensors conversion (``normalise.stage``); the original
   bytes' sha256 stays with the source as provenance. A safetensors file passes through untouched.
2. **facts**: what the file's header metadata, its sidecars (a README or adapter_config.json beside it), a
   model card or an API say, and what our own training run knows, merged once (``merge_facts``), each value
   with its source, by one precedence::

       user  >  file metadata (our own training record counts as such)  >  sidecar files  >  card or API

   The user's name, tags and trigger words go to the registry as the user's own (stored apart, they win in
   display and survive re-detection); the rest become the detected facts of a plain ``AdapterRecord``.
3. **record**: ``Registry.add`` stores the blob and the record in one step and names the entry (a unique
   default from the file name) unless a name was asked for. Nothing else calls it.

A source's kind is one of ``registry.records.SOURCE_KINDS`` (``SourceKind``: local, url, hub, civitai,
converted, merged, trained); the registry refuses any other. A service's base-model ``label`` ("Pony") is a
fact like the others; what else it says (ids, names, description) and preview images go in as ``remote`` and
``previews``, in the same transaction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Optional, Sequence

from lorahub_cli.errors import LoraError
from registry.records import AdapterRecord, AddResult, PreviewRecord, SourceRecord

if TYPE_CHECKING:
    from lorahub_cli.inspect.model import AdapterReport
    from lorahub_cli.normalise import Staged
    from registry.api import Registry

FactName = Literal["base_model", "license", "trigger_word", "tag", "label"]
USER, TRAINING = "user", "training"


@dataclass(frozen=True)
class Fact:
    """One thing said about an adapter, and who said it: "user", "training", "metadata:<key>" (the file's
    header), "card:<file>" / "adapter_config:<file>" (a sidecar beside it), "card:README.md@<repo>" (the
    Hub's card), "api:<service>"."""

    name: FactName
    value: str
    source: str


def fact_rank(source: str) -> int:
    """The precedence as a number (lower wins): user 0, file metadata and training 1, sidecars 2, cards
    and APIs 3. A card from elsewhere is marked by "@<repo>" in its source (one beside the file is not)."""
    if source == USER:
        return 0
    if source == TRAINING or source.startswith("metadata"):
        return 1
    if "@" in source or source.startswith("api:"):
        return 3
    return 2   # a sidecar, or what inspection found with no more precise source


@dataclass
class MergedFacts:
    base_model: Optional[Fact] = None
    license: Optional[Fact] = None
    label: Optional[Fact] = None
    trigger_words: tuple[Fact, ...] = ()
    tags: tuple[Fact, ...] = ()


def merge_facts(facts: Iterable[Fact]) -> MergedFacts:
    """Every fact, merged once: a single value (base model, license) is the best-ranked one (the first of
    equals); lists keep every value once, best-ranked first (trigger words exactly, tags case-blind). Linear
    in the number of facts, however many a card lists."""
    ranked = sorted(facts, key=lambda f: fact_rank(f.source))   # stable: the given order among equals
    out = MergedFacts()
    words: dict[str, Fact] = {}
    tags: dict[str, Fact] = {}
    for fact in ranked:
        value = fact.value.strip() if isinstance(fact.value, str) else fact.value
        if not value:
            continue
        if fact.name == "base_model" and out.base_model is None:
            out.base_model = replace(fact, value=value)
        elif fact.name == "license" and out.license is None:
            out.license = replace(fact, value=value)
        elif fact.name == "label" and out.label is None:
            out.label = replace(fact, value=value)
        elif fact.name == "trigger_word":
            words.setdefault(value, replace(fact, value=value))
        elif fact.name == "tag":
            tags.setdefault(value.lower(), replace(fact, value=value))
    out.trigger_words, out.tags = tuple(words.values()), tuple(tags.values())
    return out


def report_facts(report: "AdapterReport") -> list[Fact]:
    """The facts inspection found in the file and its sidecars (a Hub card, when the fetcher applied it,
    keeps its "@<repo>" source and so its rank)."""
    facts: list[Fact] = []
    if report.base_model:
        facts.append(Fact("base_model", report.base_model, report.base_model_source or "detected"))
    if report.license:
        facts.append(Fact("license", report.license, report.license_source or "detected"))
    sources = report.trigger_word_sources
    facts += [Fact("trigger_word", w, sources.get(w) or "detected") for w in report.trigger_words]
    facts += [Fact("tag", t, "card") for t in report.tags]   # tags come from cards beside the file
    return facts


def card_facts(card: Any) -> list[Fact]:
    """A model card's facts (``sources.model.CardFacts``), each with the card as its source."""
    if card is None:
        return []
    source = card.source
    word_sources = getattr(card, "trigger_word_sources", None) or {}
    facts = [Fact("base_model", b, source) for b in card.base_model[:1]]
    if card.license:
        facts.append(Fact("license", card.license, source))
    facts += [Fact("trigger_word", w, word_sources.get(w, source)) for w in card.trigger_words]
    facts += [Fact("tag", t, source) for t in card.tags]
    return facts


def build_record(report: "AdapterReport", facts: Iterable[Fact], warnings: Sequence[str] = ()) -> AdapterRecord:
    """The plain record the registry stores: what ``report`` says the bytes are, and the merged ``facts``."""
    merged = merge_facts(facts)
    return AdapterRecord(
        sha256=report.sha256, size=report.size, container=report.container, format=report.format,
        network=report.network, family=report.family, family_evidence=report.family_evidence or "",
        components=list(report.components), rank=report.rank, ranks=list(report.ranks), alpha=report.alpha,
        dtype=report.dtype, n_tensors=report.n_tensors, n_modules=report.n_modules, tokens=list(report.tokens),
        tensor_sha256=report.tensor_sha256,
        base_model=merged.base_model.value if merged.base_model else None,
        base_model_source=merged.base_model.source if merged.base_model else None,
        license=merged.license.value if merged.license else None,
        license_source=merged.license.source if merged.license else None,
        trigger_words=[f.value for f in merged.trigger_words],
        trigger_word_sources={f.value: f.source for f in merged.trigger_words},
        tags=[f.value for f in merged.tags], metadata=dict(report.metadata),
        label=merged.label.value if merged.label else None, label_source=merged.label.source if merged.label else None,
        kind=report.kind, vectors=report.vectors, widths=list(report.widths),
        warnings=list(dict.fromkeys([*report.warnings, *warnings])))


def staged_record(staged: "Staged", extra: Iterable[Fact] = ()) -> AdapterRecord:
    """The record of a staged file: its own facts, the original's (a converted pickle's sidecars and card
    still hold for its conversion), then ``extra`` (cards, APIs, training), merged once."""
    facts = report_facts(staged.report)
    original_warnings: list[str] = []
    if staged.original is not None:
        facts += report_facts(staged.original)
        original_warnings = list(staged.original.warnings)
    return build_record(staged.report, [*facts, *extra], original_warnings)


def ingest(path: os.PathLike | str, registry: "Registry", *, source: Optional[SourceRecord] = None,
           name: Optional[str] = None, tags: Iterable[str] = (), trigger_words: Iterable[str] = (),
           facts: Iterable[Fact] = (), report: Optional["AdapterReport"] = None, source_name: Optional[str] = None,
           in_place: bool = False, stat: Optional[os.stat_result] = None, link: bool = False,
           with_entry: bool = True, name_hint: Optional[str] = None, remote: Optional[dict] = None,
           previews: Sequence[PreviewRecord] = (), previous: Optional[str] = None) -> AddResult:
    """Put the file at ``path`` into ``registry``: stage (convert a pickle), merge facts, record.

    ``source`` defaults to the local path. ``name``, ``tags`` and ``trigger_words`` are the user's; without a
    ``name`` the registry names the entry from ``name_hint`` (a repo's name) or the file's name. ``facts``:
    more facts with their sources (a card, an API, a training run). ``report``: the file's inspection when the
    caller has it already (a verified download); ``source_name``: the file's real name where ``path`` is not
    (a Hub cache blob). ``in_place``: register the file where it is (a pickle is stored converted instead,
    its stat kept with its source so a rescan skips it). ``link``: hard-link an immutable, verified file into
    the store. ``remote`` ({service: {"model_id", "version_id", "data"}}), ``previews`` (already written to
    the previews folder) and ``previous`` (the name of the entry this one updates) are recorded with the
    entry. The result's ``path`` is the file given; its warnings are inspection's and conversion's.
    """
    item = IngestItem(path, source=source, name=name, tags=tuple(tags), trigger_words=tuple(trigger_words),
                      facts=tuple(facts), report=report, source_name=source_name, in_place=in_place, stat=stat,
                      link=link, with_entry=with_entry, name_hint=name_hint, remote=remote, previews=tuple(previews),
                      previous=previous)
    prepared = _prepare(item, registry)
    try:
        result = registry.add(prepared.staged.path, prepared.record, name=name, tags=item.tags,
                              trigger_words=item.trigger_words, source=prepared.source, in_place=prepared.in_place,
                              stat=prepared.stat, link=prepared.link, with_entry=with_entry, name_hint=name_hint)
    finally:
        prepared.staged.cleanup()
    return prepared.finish(result)


@dataclass
class IngestItem:
    """One file for ``ingest_many``: ``ingest``'s arguments."""

    path: os.PathLike | str
    source: Optional[SourceRecord] = None
    name: Optional[str] = None
    tags: Sequence[str] = ()
    trigger_words: Sequence[str] = ()
    facts: Sequence[Fact] = ()
    report: Optional["AdapterReport"] = None
    source_name: Optional[str] = None
    in_place: bool = False
    stat: Optional[os.stat_result] = None
    link: bool = False
    with_entry: bool = True
    name_hint: Optional[str] = None
    remote: Optional[dict] = None
    previews: Sequence[PreviewRecord] = ()
    previous: Optional[str] = None


@dataclass
class _Prepared:
    """A file staged (converted if it was a pickle) with the record the registry will store."""

    path: Path
    staged: "Staged"
    record: AdapterRecord
    source: SourceRecord
    in_place: bool
    link: bool
    stat: Optional[os.stat_result]

    def finish(self, result: AddResult) -> AddResult:
        result.path = str(self.path)   # the file the caller named, not a staged conversion
        result.warnings = list(dict.fromkeys([*self.staged.warnings, *self.record.warnings]))
        return result


def _prepare(item: IngestItem, registry: "Registry") -> _Prepared:
    """Steps 1 and 2 of the module docstring: stage the file, merge the facts into its record."""
    from lorahub_cli.normalise import stage

    path = Path(item.path)
    staged = stage(path, registry.staging_dir, report=item.report, source_name=item.source_name)
    try:
        source = replace(item.source) if item.source is not None else SourceRecord(kind="local",
                                                                                   path=str(path.resolve()))
        in_place, link, stat = item.in_place, item.link, item.stat
        if staged.converted:
            # the library never points at a pickle: its conversion goes into the store, and for an in-place
            # scan the source keeps the pickle's stat so that a rescan skips it unread
            source.original_sha256 = staged.original_sha256
            if in_place and stat is not None:
                source.size, source.mtime_ns = stat.st_size, stat.st_mtime_ns
            in_place, link, stat = False, False, None
        record = staged_record(staged, item.facts)
        # a service's answer beside the facts, its preview images and the entry this one updates
        record.remote, record.previews, record.previous = dict(item.remote or {}), list(item.previews), item.previous
    except BaseException:
        staged.cleanup()
        raise
    return _Prepared(path, staged, record, source, in_place, link, stat)


def ingest_many(items: Sequence[IngestItem], registry: "Registry") -> list["AddResult | LoraError"]:
    """``ingest`` for a batch (`lora install`): one result per item, in order, or the ``LoraError`` that item
    met (the others go on). Each file is staged and its facts merged as ``ingest`` does; then
    ``Registry.add_many`` stores every blob, makes them durable with one filesystem sync and records them in
    one transaction (the rule "blobs first, the database last, in one transaction" holds for the batch).
    In-place items are not batched: use ``ingest``."""
    from registry.records import AddItem

    out: list["AddResult | LoraError | None"] = [None] * len(items)
    prepared: list[tuple[int, _Prepared]] = []
    try:
        for i, item in enumerate(items):
            if item.in_place:
                raise ValueError("ingest_many does not register files in place; use ingest")
            try:
                prepared.append((i, _prepare(item, registry)))
            except LoraError as err:
                out[i] = err
        batch = [AddItem(p.staged.path, p.record, name=items[i].name, tags=items[i].tags,
                         trigger_words=items[i].trigger_words, source=p.source, link=p.link,
                         with_entry=items[i].with_entry, name_hint=items[i].name_hint) for i, p in prepared]
        for (i, p), result in zip(prepared, registry.add_many(batch)):
            out[i] = p.finish(result) if isinstance(result, AddResult) else result
    finally:
        for _i, p in prepared:
            p.staged.cleanup()
    return out   # type: ignore[return-value]
