"""Every change to the database, each in one ORM transaction. Uniqueness (names, blob sha256, in-place
paths) is enforced by the database; when a concurrent writer wins a race the transaction is retried and
re-reads what is there now (so a duplicate is reported, never stored twice)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TypeVar

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.errors import AlreadyExists, DatabaseError, InvalidName, LoraError, NotFound
from registry.db import Database
from registry.models import (Adapter, AdapterMetadata, BaseModelRef, Blob, File, Lookup, Preview, RemoteFacts,
                             Source, Tag, TriggerWord, utcnow)
from registry.names import numbered, validate_tag
from registry.records import KINDS, AdapterRecord, FileLocation, Removed, SourceRecord
from registry.store import BlobStore

RETRIES = 20
T = TypeVar("T")


@dataclass
class AddRequest:
    record: AdapterRecord        # what the file is, and the detected facts with their sources
    name: Optional[str]          # the user's choice, else None
    default_name: str            # used (made unique) when name is None
    tags: list[str]
    trigger_words: list[str]     # the user's: stored as overrides
    source: SourceRecord


class Writer:
    def __init__(self, db: Database, store: BlobStore):
        self.db = db
        self.store = store

    def _retrying(self, work: Callable[[Session], T]) -> T:
        for _ in range(RETRIES):
            try:
                with self.db.write() as session:
                    return work(session)
            except IntegrityError:
                continue  # another writer committed first: look again
        raise DatabaseError(f"could not record the change after {RETRIES} attempts: the database is too busy")

    # --- checks --------------------------------------------------------------------------------------
    def check_name_free(self, name: Optional[str]) -> None:
        if name is None:
            return
        with self.db.read() as s:
            if s.scalar(select(Adapter.id).where(Adapter.name == name)) is not None:
                raise _name_taken(name)

    def blob_is_stored(self, sha256: str) -> bool:
        with self.db.read() as s:
            return s.scalar(select(Blob.id).where(Blob.sha256 == sha256, Blob.stored.is_(True))) is not None

    # --- adding --------------------------------------------------------------------------------------
    def find_duplicate(self, sha256: str, *, need_stored: bool) -> Optional[int]:
        """The id of the adapter holding these bytes (when ``need_stored``: only if they are in the store),
        else None (the caller stores and records them)."""
        with self.db.read() as s:
            row = s.execute(select(Adapter.id, Blob.stored).join(Blob, Adapter.blob_id == Blob.id)
                            .where(Blob.sha256 == sha256)).first()
        if row is None or (need_stored and not row.stored):
            return None
        return row.id

    def stored_duplicates(self, hashes: Sequence[str]) -> set[str]:
        """Which of these sha256 an adapter holds with its bytes in the store (``find_duplicate`` for a batch,
        in one query)."""
        if not hashes:
            return set()
        with self.db.read() as s:
            return set(s.scalars(select(Blob.sha256).join(Adapter, Adapter.blob_id == Blob.id)
                                 .where(Blob.sha256.in_(list(set(hashes))), Blob.stored.is_(True))))

    def record_duplicate(self, adapter_id: int, req: AddRequest) -> Optional[int]:
        """Remember the new source (and the user's tags) of bytes already in the library; returns the
        adapter's id, or None when it was removed meanwhile (the caller adds the bytes afresh)."""

        def work(s: Session) -> Optional[int]:
            if s.get(Adapter, adapter_id) is None:
                return None
            _add_source(s, adapter_id, req.source)
            _add_user_tags(s, adapter_id, req.tags)
            return adapter_id

        return self._retrying(work)

    def record(self, sha256: str, size: int, req: AddRequest, *, stored: bool,
               location: Optional[FileLocation] = None) -> tuple[str, int]:
        """Record the bytes ``sha256`` as an adapter; returns (status, adapter id) with status
        added | duplicate | unchanged | updated."""
        return self._retrying(lambda s: self._record(s, sha256, size, req, stored, location))

    def record_many(self, items: Sequence[tuple[str, int, AddRequest]]) -> list["tuple[str, int] | LoraError"]:
        """``record`` for a batch of stored blobs, (sha256, size, request) each, in ONE transaction. An item
        the registry refuses (a name taken meanwhile) is that item's error and the others are recorded: the
        batch is then written again with each item in its own savepoint. A race lost to another writer
        retries the whole batch."""

        def all_at_once(s: Session) -> list["tuple[str, int] | LoraError"]:
            with s.no_autoflush:   # one flush per new entry (its adapter's, which also writes the rows before)
                return [self._record(s, sha256, size, req, True, None) for sha256, size, req in items]

        def each_in_a_savepoint(s: Session) -> list["tuple[str, int] | LoraError"]:
            out: list["tuple[str, int] | LoraError"] = []
            for sha256, size, req in items:
                try:
                    with s.begin_nested():
                        out.append(self._record(s, sha256, size, req, True, None))
                except (AlreadyExists, InvalidName) as err:
                    out.append(err)
            return out

        # the common case first, without a savepoint per item (they cost more than the rows); when the
        # registry refuses an item, that transaction is rolled back whole and the batch is recorded again,
        # each item in its own savepoint, so the refusal is that item's alone
        try:
            return self._retrying(all_at_once)
        except (AlreadyExists, InvalidName):
            return self._retrying(each_in_a_savepoint)

    def _record(self, s: Session, sha256: str, size: int, req: AddRequest, stored: bool,
                location: Optional[FileLocation]) -> tuple[str, int]:
        record = req.record
        blob = s.scalar(select(Blob).where(Blob.sha256 == sha256))
        known_file = None
        if location is not None:
            known_file = s.scalar(select(File).where(File.path == location.path))
            if known_file is not None and (blob is None or known_file.blob_id != blob.id):
                updated = self._file_changed(s, known_file, sha256, size, record, location, blob)
                if updated is not None:
                    return "updated", updated
                known_file = None
        new_blob = blob is None
        if new_blob:   # written with its adapter (or file), in one flush: the rows below refer to it, not its id
            blob = Blob(sha256=sha256, size=size, tensor_sha256=record.tensor_sha256, stored=stored)
            s.add(blob)
        elif stored and not blob.stored:
            blob.stored = True
        if location is not None:
            if known_file is None:
                s.add(File(blob=blob, path=location.path, size=location.size, mtime_ns=location.mtime_ns))
            else:
                known_file.size, known_file.mtime_ns, known_file.checked_at = location.size, location.mtime_ns, utcnow()
        adapter_id = None if new_blob else s.scalar(select(Adapter.id).where(Adapter.blob_id == blob.id))
        if adapter_id is not None:
            s.flush()   # the source and tag checks below read what is there, pending rows included
            _add_source(s, adapter_id, req.source)
            _add_user_tags(s, adapter_id, req.tags)
            return ("unchanged" if known_file is not None else "duplicate"), adapter_id
        if req.name is not None:
            if s.scalar(select(Adapter.id).where(Adapter.name == req.name)) is not None:
                raise _name_taken(req.name)
            name = req.name
        else:
            name = _free_name(s, req.default_name)
        adapter = Adapter(name=name, blob=blob)
        _apply_record(adapter, record)
        s.add(adapter)
        s.flush()
        for tag in req.tags:
            s.add(Tag(adapter_id=adapter.id, tag=tag, source="user"))
        for i, word in enumerate(req.trigger_words):
            s.add(TriggerWord(adapter_id=adapter.id, word=word, source="user", position=i))
        _add_detected(s, adapter.id, record, user_tags=req.tags)
        s.add(Source(adapter_id=adapter.id, **_source_fields(req.source)))
        _add_remote(s, adapter, record)
        return "added", adapter.id

    def _file_changed(self, s: Session, f: File, sha256: str, size: int, record: AdapterRecord,
                      location: FileLocation, blob: Optional[Blob]) -> Optional[int]:
        """An in-place file now holds other bytes. When it was its adapter's only copy, the adapter follows
        the file (new content facts; name, tags and overrides kept): returns its id. Otherwise the path is
        detached from the old content (None), and the caller records the new content as usual."""
        old = f.blob
        adapter = s.scalar(select(Adapter).where(Adapter.blob_id == old.id))
        if blob is None and not old.stored and len(old.files) == 1 and adapter is not None:
            old.sha256, old.size, old.tensor_sha256 = sha256, size, record.tensor_sha256
            f.size, f.mtime_ns, f.checked_at = location.size, location.mtime_ns, utcnow()
            _apply_record(adapter, record)
            adapter.updated_at = utcnow()
            for table in (Tag, TriggerWord, BaseModelRef):
                s.execute(delete(table).where(table.adapter_id == adapter.id, table.source != "user"))
            user_tags = s.scalars(select(Tag.tag).where(Tag.adapter_id == adapter.id)).all()
            _add_detected(s, adapter.id, record, user_tags=list(user_tags))
            return adapter.id
        s.delete(f)
        s.flush()
        return None

    # --- removing and editing ------------------------------------------------------------------------
    def apply_remote(self, adapter_id: int, r: AdapterRecord) -> None:
        """A service's facts about an entry already in the library (``lora identify``): its label, trigger
        words, license and previews join what is there. A value the user set is never touched, nor a better
        ranked one (the file's own license stays; the label stays when the user gave it)."""
        self.apply_remote_many([(adapter_id, r)])

    def apply_remote_many(self, items: Sequence[tuple[int, AdapterRecord]]) -> None:
        """``apply_remote`` for many entries in one transaction (`lora identify --all` over a large library)."""

        def work(s: Session) -> None:
            with s.no_autoflush:   # one flush at commit, not two per entry
                for adapter_id, r in items:
                    _apply_remote(s, adapter_id, r)

        self._retrying(work)

    def set_previous(self, adapter_id: int, previous_id: int) -> None:
        def work(s: Session) -> None:
            adapter = _must_get(s, adapter_id)
            _must_get(s, previous_id)
            adapter.previous_id = previous_id if previous_id != adapter_id else None

        self._retrying(work)

    def put_lookups(self, service: str, answers: dict) -> None:
        """Cache a service's answers by key (None: "not found"), replacing older ones."""

        def work(s: Session) -> None:
            keys = list(answers)
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                s.execute(delete(Lookup).where(Lookup.service == service, Lookup.key.in_(chunk)))
            now = utcnow()
            s.add_all([Lookup(service=service, key=k[:128], answer=v, fetched_at=now) for k, v in answers.items()])

        self._retrying(work)

    def remove(self, ids: Sequence[int]) -> list[Removed]:
        def work(s: Session) -> list[Removed]:
            out = []
            for adapter_id in ids:
                adapter = s.get(Adapter, adapter_id)
                if adapter is None:
                    continue  # removed meanwhile
                blob = adapter.blob
                removed = Removed(name=adapter.name, sha256=blob.sha256, blob_deleted=False,
                                  in_place_paths=[f.path for f in blob.files])
                s.delete(adapter)
                s.flush()
                if not s.scalar(select(func.count()).select_from(Adapter).where(Adapter.blob_id == blob.id)):
                    removed.blob_deleted = blob.stored  # the bytes are unlinked after the commit
                    s.delete(blob)
                out.append(removed)
            return out

        return self._retrying(work)

    def tag(self, adapter_id: int, add: Sequence[str], remove: Sequence[str]) -> None:
        def work(s: Session) -> None:
            adapter = _must_get(s, adapter_id)
            have = {t.tag.lower(): t for t in adapter.tags}
            for tag in remove:
                row = have.pop(tag.lower(), None)
                if row is not None:
                    s.delete(row)
            s.flush()
            for tag in add:
                if tag.lower() not in have:
                    s.add(Tag(adapter_id=adapter_id, tag=tag, source="user"))
                    have[tag.lower()] = None
            adapter.updated_at = utcnow()

        self._retrying(work)

    def rename(self, adapter_id: int, new_name: str) -> None:
        def work(s: Session) -> None:
            adapter = _must_get(s, adapter_id)
            if adapter.name == new_name:
                return
            if s.scalar(select(Adapter.id).where(Adapter.name == new_name)) is not None:
                raise _name_taken(new_name)
            adapter.name = new_name

        try:
            with self.db.write() as s:
                work(s)
        except IntegrityError:  # taken by a concurrent writer between our check and our commit
            raise _name_taken(new_name) from None

    def set_overrides(self, adapter_id: int, *, base_model: Optional[str], family: Optional[str],
                      trigger_words: Optional[Sequence[str]], reset: set[str], label: Optional[str] = None,
                      preferred_weight: Optional[float] = None) -> None:
        def work(s: Session) -> None:
            adapter = _must_get(s, adapter_id)
            if "label" in reset and adapter.label_source == "user":
                # back to what a service said, when one did (its answer is kept beside the entry)
                said = s.scalar(select(RemoteFacts.data).where(RemoteFacts.adapter_id == adapter_id,
                                                               RemoteFacts.service == "civitai"))
                detected = (said or {}).get("base_model")
                adapter.label = _text(detected, 64) if detected else None
                adapter.label_source = "api:civitai" if detected else None
            if label is not None:
                adapter.label, adapter.label_source = label, "user"
            if "family" in reset:
                adapter.family_user = None
            if family is not None:
                adapter.family_user = family
            if "base_model" in reset or base_model is not None:
                s.execute(delete(BaseModelRef).where(BaseModelRef.adapter_id == adapter_id,
                                                     BaseModelRef.source == "user"))
            if base_model is not None:
                s.add(BaseModelRef(adapter_id=adapter_id, model_id=base_model, source="user", position=0))
            if "trigger_words" in reset or trigger_words is not None:
                s.execute(delete(TriggerWord).where(TriggerWord.adapter_id == adapter_id,
                                                    TriggerWord.source == "user"))
            for i, word in enumerate(trigger_words or ()):
                s.add(TriggerWord(adapter_id=adapter_id, word=word, source="user", position=i))
            if "preferred_weight" in reset:
                adapter.preferred_weight = None
            if preferred_weight is not None:
                adapter.preferred_weight = preferred_weight
            adapter.updated_at = utcnow()

        self._retrying(work)


# --- helpers -----------------------------------------------------------------------------------------
def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(f"an adapter named {name!r} is already in the library",
                         hint="Choose another name, or `lora rm` / `lora rename` the other one.")


def _must_get(s: Session, adapter_id: int) -> Adapter:
    adapter = s.get(Adapter, adapter_id)
    if adapter is None:
        raise NotFound("the adapter was removed meanwhile")
    return adapter


def _free_name(s: Session, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever is free first."""
    pattern = base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"
    taken = set(s.scalars(select(Adapter.name).where(
        or_(Adapter.name == base, Adapter.name.like(pattern, escape="\\")))))
    n = 1
    while numbered(base, n) in taken:
        n += 1
    return numbered(base, n)


def _text(value: Optional[str], limit: Optional[int] = None) -> Optional[str]:
    if value is None:
        return None
    value = str(value).replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return value[:limit] if limit else value


def _apply_record(adapter: Adapter, r: AdapterRecord) -> None:
    """Copy what inspection found onto the row (detected values only; user overrides live elsewhere)."""
    adapter.container = r.container
    adapter.format = r.format
    adapter.network = r.network
    adapter.family = r.family
    adapter.family_evidence = _text(r.family_evidence) or ""
    adapter.components = list(r.components)
    adapter.rank = r.rank
    adapter.ranks = list(r.ranks)
    adapter.alpha = r.alpha
    adapter.dtype = r.dtype
    adapter.n_tensors = r.n_tensors
    adapter.n_modules = r.n_modules
    adapter.tokens = [_text(t) for t in r.tokens]
    adapter.license = _text(r.license)
    adapter.license_source = _text(r.license_source)
    data = {_text(k): _text(v) for k, v in r.metadata.items()}
    if adapter.meta is None:
        adapter.meta = AdapterMetadata(data=data)
    else:
        adapter.meta.data = data
    adapter.warnings = [_text(w) for w in r.warnings]
    if r.label:
        adapter.label, adapter.label_source = _text(r.label, 64), _text(r.label_source or "detected", 64)
    adapter.kind = r.kind if r.kind in KINDS else "lora"
    adapter.vectors, adapter.widths = r.vectors, (list(r.widths) or None)


def _add_detected(s: Session, adapter_id: int, r: AdapterRecord, *, user_tags: Sequence[str]) -> None:
    """Tags, trigger words and base model as inspection found them (each with where it came from)."""
    have = {t.lower() for t in user_tags}
    for tag in r.tags:
        try:
            tag = validate_tag(tag)
        except InvalidName:
            continue  # a card tag we cannot keep as a tag (too long, control characters)
        if tag.lower() not in have:
            have.add(tag.lower())
            s.add(Tag(adapter_id=adapter_id, tag=tag, source="card"))
    seen = set()
    for i, word in enumerate(r.trigger_words):
        word = _text(word).strip()
        if word and word not in seen:
            seen.add(word)
            source = _text(r.trigger_word_sources.get(word) or "detected", 64)
            s.add(TriggerWord(adapter_id=adapter_id, word=word, source=source, position=i))
    if r.base_model:
        s.add(BaseModelRef(adapter_id=adapter_id, model_id=_text(r.base_model, 256),
                           source=_text(r.base_model_source or "detected", 64), position=0))


def _apply_remote(s: Session, adapter_id: int, r: AdapterRecord) -> None:
    """One entry's share of ``Writer.apply_remote_many`` (see ``Writer.apply_remote``)."""
    adapter = _must_get(s, adapter_id)
    if r.label and adapter.label_source != "user":
        adapter.label, adapter.label_source = _text(r.label, 64), _text(r.label_source or "detected", 64)
    if r.license and not adapter.license:
        adapter.license, adapter.license_source = _text(r.license), _text(r.license_source, 64)
    words = list(s.scalars(select(TriggerWord.word).where(TriggerWord.adapter_id == adapter_id)))
    position = len(words)
    for word in r.trigger_words:
        word = _text(word).strip()
        source = _text(r.trigger_word_sources.get(word) or "detected", 64)
        if word and word not in words:
            words.append(word)
            s.add(TriggerWord(adapter_id=adapter_id, word=word, source=source, position=position))
            position += 1
    _add_remote(s, adapter, r)


def _add_remote(s: Session, adapter: Adapter, r: AdapterRecord) -> None:
    """What services said (ids, names, description...), preview images, and the entry this one follows."""
    for service, facts in r.remote.items():
        row = s.scalar(select(RemoteFacts).where(RemoteFacts.adapter_id == adapter.id,
                                                 RemoteFacts.service == service))
        if row is None:
            row = RemoteFacts(adapter_id=adapter.id, service=service)
            s.add(row)
        row.model_id = _text(facts.get("model_id"), 64)
        row.version_id = _text(facts.get("version_id"), 64)
        row.data = dict(facts.get("data") or {})
        row.fetched_at = utcnow()
    if r.previews:
        have = set(s.scalars(select(Preview.sha256).where(Preview.adapter_id == adapter.id)))
        position = len(have)
        for p in r.previews:
            if p.sha256 not in have:
                have.add(p.sha256)
                s.add(Preview(adapter_id=adapter.id, sha256=p.sha256, suffix=p.suffix[:8], url=_text(p.url),
                              source=_text(p.source, 64), position=position))
                position += 1
    if r.previous:
        previous = s.scalar(select(Adapter.id).where(Adapter.name == r.previous))
        if previous is not None and previous != adapter.id:
            adapter.previous_id = previous


def _add_user_tags(s: Session, adapter_id: int, tags: Sequence[str]) -> None:
    """Tags given when adding bytes that are already in the library go onto the adapter they belong to."""
    if not tags:
        return
    have = {t.lower() for t in s.scalars(select(Tag.tag).where(Tag.adapter_id == adapter_id))}
    for tag in tags:
        if tag.lower() not in have:
            have.add(tag.lower())
            s.add(Tag(adapter_id=adapter_id, tag=tag, source="user"))


def _source_fields(src: SourceRecord) -> dict:
    return dict(kind=src.kind, path=_text(src.path), url=_text(src.url), repo=_text(src.repo),
                revision=_text(src.revision, 64), filename=_text(src.filename),
                original_sha256=_text(src.original_sha256, 64), size=src.size, mtime_ns=src.mtime_ns,
                etag=_text(src.etag))


_NOT_IDENTITY = ("original_sha256", "size", "mtime_ns", "etag")  # facts about a source, not which source it is


def _add_source(s: Session, adapter_id: int, src: SourceRecord) -> None:
    """Remember where this copy came from, unless that very source is remembered already (then only its
    stat is refreshed, when one was taken)."""
    fields = _source_fields(src)
    same = select(Source).where(Source.adapter_id == adapter_id,
                                *[(getattr(Source, k).is_(None) if v is None else getattr(Source, k) == v)
                                  for k, v in fields.items() if k not in _NOT_IDENTITY])
    known = s.scalars(same.order_by(Source.id.desc())).first()
    if known is None:
        s.add(Source(adapter_id=adapter_id, **fields))
        return
    if src.size is not None:
        known.size, known.mtime_ns = src.size, src.mtime_ns
    if src.etag is not None:
        known.etag = fields["etag"]
