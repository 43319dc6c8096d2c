"""``Registry``: the library's Python API. Every method returns plain dataclasses (``registry.records``).

Writes go through the ORM in one transaction each (the database is committed last, after any blob is
safely in the store); reads are plain SQL (``registry.reads``). An adapter is named, everywhere, by one
precedence: its exact name, then a unique prefix of its sha256 (at least ``MIN_PREFIX`` hex digits), then
(``get`` and the methods that change an entry) a file holding the same bytes. ``lorahub_cli.resolve`` applies the same
order, with any existing file as the last step. The registry takes plain records (``AdapterRecord``) and
imports nothing from ``lorahub_cli``.
"""

from __future__ import annotations

import difflib
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence, Union

from registry.errors import AmbiguousRef, InvalidName, LoraError, NeedsConversion, NotFound, UsageError
from registry import reads
from registry.faults import kill_point
from registry.failures import from_os_error
from registry.home import database_url, home_dir, sqlite_file
from registry.names import default_name, name_from, validate_label, validate_name, validate_tag
from registry.records import (FAMILIES, KINDS, SOURCE_KINDS, AdapterEntry, AdapterRecord, AdapterSummary, AddItem,
                              AddResult, FileLocation, Finding, KnownFile, PreviewRecord, Removed, SourceRecord)
from registry.schema import HEAD
from registry.store import BlobStore

if TYPE_CHECKING:
    from registry import writes
    from registry.db import Database

PathLike = Union[str, os.PathLike]
MIN_PREFIX = 8   # hex digits: shorter prefixes collide too easily to name an adapter (AutoV2 is 10)
OVERRIDABLE = ("base_model", "family", "trigger_words", "label", "preferred_weight")
MAX_PREFERRED_WEIGHT = 10.0   # |w| beyond this burns any image; matches the CLI's weight range


class Registry:
    """The adapter library at ``home`` (default ``$LORAHUB_HOME``), database at ``url`` (default
    ``$LORAHUB_DATABASE_URL`` or SQLite in the home). Opening is free; the database is created and migrated
    on first use."""

    def __init__(self, url: Optional[str] = None, *, home: Optional[PathLike] = None):
        self.home = Path(home) if home is not None else home_dir()
        self.url = url or database_url(self.home)
        self.store = BlobStore(self.home / "blobs")
        self.staging_dir = self.home / "staging"  # downloads and conversions on their way into the store
        self._db: Optional[Database] = None

    # --- plumbing ------------------------------------------------------------------------------------
    @property
    def db(self) -> "Database":
        if self._db is None:
            from registry.db import Database

            self._db = Database(self.url, blobs=self.store.objects)  # blobs without records: damaged
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _reader(self) -> Iterator[Optional[reads.Reader]]:
        """A reader, or None when there is no library yet (reads then find nothing and create nothing)."""
        path = sqlite_file(self.url) if self._db is None else None
        if path is not None:
            from registry.snapshot import open_snapshot, refuse_lost_database  # (read-only homes, damage)

            if not path.is_file():
                refuse_lost_database(path, self.store.objects)  # blobs without a database: lost, not empty
                yield None
                return
            conn, revision = open_snapshot(path)
            try:
                if revision == HEAD:
                    yield reads.SqliteReader(conn)
                    return
            finally:
                conn.close()
        reader = reads.EngineReader(self.db.engine)  # migrates first when needed
        try:
            yield reader
        finally:
            reader.close()

    # --- reading -------------------------------------------------------------------------------------
    def list(self, *, family: Optional[str] = None, format: Optional[str] = None, tags: Sequence[str] = (),
             base: Optional[str] = None, search: Optional[str] = None, sort: str = "name",
             reverse: bool = False, label: Optional[str] = None, kind: Optional[str] = None) -> list[AdapterSummary]:
        """Adapters matching every given filter (tags: all of them), sorted by ``sort``
        (name | added | size | rank | family | format)."""
        if sort not in reads.SORT_KEYS:
            raise UsageError(f"unknown sort key {sort!r}; use one of: {', '.join(reads.SORT_KEYS)}")
        if family is not None:
            family = _known_family(family)  # a typo is an error, not an empty list
        f = reads.ListFilter(family=family, format=format, tags=tuple(tags), base=base, search=search,
                             sort=sort, reverse=reverse, label=label, kind=_known_kind(kind))
        with self._reader() as reader:
            return reads.list_adapters(reader, f) if reader is not None else []

    def page(self, *, limit: int, offset: int = 0, family: Optional[str] = None, format: Optional[str] = None,
             tags: Sequence[str] = (), base: Optional[str] = None, search: Optional[str] = None,
             sort: str = "name", reverse: bool = False, label: Optional[str] = None, kind: Optional[str] = None,
             ) -> tuple[int, "list[AdapterSummary]"]:
        """``list`` one page at a time: (how many match in all, the ``limit`` rows from ``offset``)."""
        if sort not in reads.SORT_KEYS:
            raise UsageError(f"unknown sort key {sort!r}; use one of: {', '.join(reads.SORT_KEYS)}")
        if family is not None:
            family = _known_family(family)
        f = reads.ListFilter(family=family, format=format, tags=tuple(tags), base=base, search=search,
                             sort=sort, reverse=reverse, label=label, kind=_known_kind(kind))
        with self._reader() as reader:
            return reads.list_page(reader, f, max(0, limit), max(0, offset)) if reader is not None else (0, [])

    def first_previews(self, names: Sequence[str]) -> dict[str, str]:
        """name -> the path under ``home`` of its first preview image, for the named adapters that have one."""
        with self._reader() as reader:
            return reads.first_previews(reader, list(names)) if reader is not None else {}

    def distinct_values(self) -> dict[str, list[str]]:
        """The tags and base-model labels in use: {"tags": [...], "labels": [...]}."""
        with self._reader() as reader:
            return reads.distinct_values(reader) if reader is not None else {"tags": [], "labels": []}

    def get(self, ref: str) -> AdapterEntry:
        """Everything about the adapter named ``ref``, or whose sha256 starts with ``ref``, or whose bytes
        are those of the file ``ref``."""
        with self._reader() as reader:
            adapter_id = self._resolve(reader, ref)
            entry = reads.get_entry(reader, adapter_id, self.store.path_for)
        if entry is None:  # removed between the two queries
            raise NotFound(f"no adapter {ref!r} in the library")
        return entry

    def pulled_from_hub(self, repo: str, revision: str, filename: str) -> list[AdapterEntry]:
        """The entries whose provenance is exactly this Hub repo, commit and file."""
        return self._entries(lambda reader: reads.find_by_hub_source(reader, repo, revision, filename))

    def pulled_from_url(self, url: str) -> list[AdapterEntry]:
        """The entries whose provenance is exactly this URL."""
        return self._entries(lambda reader: reads.find_by_url_source(reader, url))

    def _entries(self, find) -> list[AdapterEntry]:
        with self._reader() as reader:
            if reader is None:
                return []
            entries = [reads.get_entry(reader, i, self.store.path_for) for i in find(reader)]
        return [e for e in entries if e is not None]

    def known_files(self, *, converted: bool = False) -> dict[str, KnownFile]:
        """In-place files by absolute path, with the size and mtime seen when they were last hashed.
        ``converted=True`` adds the pickles registered in place, whose converted copy is in the store (for
        ``unchanged``; those paths do not hold the adapter's bytes)."""
        with self._reader() as reader:
            if reader is None:
                return {}
            known = reads.known_files(reader)
            if converted:
                for path, k in reads.known_converted_files(reader).items():
                    known.setdefault(path, k)
            return known

    def find(self, ref: str) -> Optional[AdapterEntry]:
        """The adapter named exactly ``ref``, else the one whose sha256 starts with ``ref`` (at least
        ``MIN_PREFIX`` hex digits, any case); None when neither. Several adapters starting so: AmbiguousRef,
        listing them. (Files are the caller's last step: see ``lorahub_cli.resolve``.)"""
        with self._reader() as reader:
            if reader is None:
                return None
            adapter_id = _match(reader, ref)
            return reads.get_entry(reader, adapter_id, self.store.path_for) if adapter_id is not None else None

    def _resolve(self, reader: Optional[reads.Reader], ref: str) -> int:
        """``find``'s precedence, then a file holding the same bytes; else NotFound with near names."""
        if reader is not None:
            found = _match(reader, ref)
            if found is not None:
                return found
            if os.path.isfile(ref):  # a file: the adapter holding the same bytes
                from registry.store import hash_file

                matches = reads.find_by_sha_prefix(reader, hash_file(Path(ref))[0])
                if matches:
                    return matches[0][0]
                raise NotFound(f"{ref} is not in the library (no adapter has the same bytes)",
                               hint=f"Add it with `lora add {ref}`.")
        raise _not_found(ref, reads.all_names(reader) if reader is not None else [])

    def not_found(self, ref: str) -> NotFound:
        """The error for a reference that names no adapter, with the nearest names as its hint."""
        with self._reader() as reader:
            return _not_found(ref, reads.all_names(reader) if reader is not None else [])

    # --- adding --------------------------------------------------------------------------------------
    def add(self, path: PathLike, record: AdapterRecord, *, name: Optional[str] = None,
            tags: Iterable[str] = (), trigger_words: Iterable[str] = (), source: Optional[SourceRecord] = None,
            in_place: bool = False, stat: Optional[os.stat_result] = None, with_entry: bool = True,
            link: bool = False, name_hint: Optional[str] = None) -> AddResult:
        """Record the file at ``path`` described by ``record`` (built by ``lorahub_cli.ingest``, the one way
        into the library: it stages, converts and merges facts first).

        The bytes are copied into the blob store, or with ``in_place`` left where they are (their path, size
        and mtime remembered). Content already in the library is reported as ``duplicate`` (its new source
        is remembered) and not stored twice. ``name`` defaults to one made from ``name_hint`` (a repo's name,
        where the file's own name says nothing) or else the file name, made unique in the same transaction;
        ``tags`` and ``trigger_words`` are the user's. ``source`` defaults to the local path. ``stat`` is the
        file's stat taken before it was inspected (so a change during inspection is seen on the next scan).
        ``with_entry=False`` leaves ``AddResult.entry`` empty (name and sha256 only): bulk adds go faster.
        ``link=True`` hard-links an immutable, already-verified file (a Hugging Face cache blob) into the store
        where the filesystem allows, instead of copying it.
        """
        path, request = self._request(path, record, name=name, tags=tags, trigger_words=trigger_words,
                                      source=source, name_hint=name_hint)
        from registry import writes

        stat = stat or os.stat(path)
        w = writes.Writer(self.db, self.store)
        if in_place:
            return self._add_in_place(w, path, request, stat, with_entry)
        sha256: Optional[str] = None
        recorded = False
        try:
            with self.store.shared_lock():  # no blob can be collected between our write and our commit
                if record.sha256 is not None:
                    dup = w.find_duplicate(record.sha256, need_stored=True)
                    if dup is not None:
                        restored = self._restore_stored_copy(path, record.sha256, record.size, link=link)
                        if w.record_duplicate(dup, request) is not None:  # else removed meanwhile: add afresh
                            result = self._result("duplicate", path, dup, with_entry)
                            result.restored = restored
                            return result
                w.check_name_free(name)  # fail before copying; record() checks again in its transaction
                sha256, size = self.store.put(path, expected_sha256=record.sha256, link=link)
                kill_point("before-commit")
                status, adapter_id = w.record(sha256, size, request, stored=True)
                recorded = True
        except BaseException:
            if sha256 is not None and not recorded:
                self._collect_blob_quietly(sha256)  # nothing recorded: drop bytes nobody else recorded
            raise
        kill_point("after-commit")
        return self._result(status, path, adapter_id, with_entry)

    def _request(self, path: PathLike, record: AdapterRecord, *, name: Optional[str], tags: Iterable[str],
                 trigger_words: Iterable[str], source: Optional[SourceRecord],
                 name_hint: Optional[str]) -> tuple[Path, "writes.AddRequest"]:
        """``add``'s checks of one file and its record, and the request the writer records."""
        from registry import writes

        if not isinstance(record, AdapterRecord):
            raise TypeError(f"Registry.add takes an AdapterRecord, not {type(record).__name__} "
                            "(use lorahub_cli.ingest.ingest)")
        path = Path(path).resolve()
        if record.container == "pickle":
            raise NeedsConversion(f"{path} is a pickle checkpoint; the library stores adapters as safetensors "
                                  "only (`lorahub_cli.ingest` converts it on the way in)")
        if name is not None:
            validate_name(name)
        tags = _unique_ci(validate_tag(t) for t in tags)
        trigger_words = _unique_ci(_clean_text(w) for w in trigger_words if w.strip())
        source = source or SourceRecord(kind="local", path=str(path))
        if source.kind not in SOURCE_KINDS:
            raise UsageError(f"unknown source kind {source.kind!r}; the library knows: {', '.join(SOURCE_KINDS)}")
        fallback = name_from(name_hint) if name_hint else default_name(path)
        return path, writes.AddRequest(record=record, name=name, default_name=fallback, tags=tags,
                                       trigger_words=trigger_words, source=source)

    def add_many(self, items: Sequence[AddItem]) -> list[Union[AddResult, LoraError]]:
        """``add`` for a batch of files (``lorahub_cli.ingest.ingest_many``, for `lora install`): one result
        per item, in order, or the ``LoraError`` that item met (the others go on).

        The rule of ``add`` holds for the whole batch, paid once instead of per file: every blob is
        published without fsyncs of its own, then ONE ``sync_filesystem`` of the store makes all of them
        (bytes and names) durable, and only then ONE transaction records them all (each item in a
        savepoint). A crash before the commit leaves blobs nobody records (``doctor`` finds them), never
        a record without its bytes. The store's shared lock is held from the first blob to the commit.
        In-place adds are not batched."""
        from registry import writes
        from registry.publish import sync_filesystem

        out: list[Union[AddResult, LoraError, None]] = [None] * len(items)
        w = writes.Writer(self.db, self.store)
        pending: list[tuple[int, str, int, writes.AddRequest, bool]] = []   # (item, sha256, size, request, new blob)
        done: list[tuple[int, str, int]] = []                               # (item, status, adapter id)
        unnamed: list[str] = []   # new blobs no record took: collected after the shared lock is let go (collecting
        #                           takes the exclusive lock, which would wait on our own shared one for ever)
        try:
            with self.store.shared_lock():
                held = w.stored_duplicates([it.record.sha256 for it in items if it.record.sha256 is not None])
                for i, item in enumerate(items):
                    try:
                        path, request = self._request(item.path, item.record, name=item.name, tags=item.tags,
                                                      trigger_words=item.trigger_words, source=item.source,
                                                      name_hint=item.name_hint)
                        sha256 = item.record.sha256
                        if sha256 in held:   # (if removed meanwhile, the record adds it afresh)
                            self._restore_stored_copy(path, sha256, item.record.size, link=item.link,
                                                      durable=False)
                            pending.append((i, sha256, item.record.size, request, False))
                            continue
                        w.check_name_free(item.name)
                        sha256, size = self.store.put(path, expected_sha256=sha256, link=item.link, durable=False)
                        pending.append((i, sha256, size, request, True))
                    except LoraError as err:
                        out[i] = err
                    except OSError as err:   # this item's own file (gone, unreadable): the others go on
                        out[i] = from_os_error(err, f"storing {item.path}", self.store.root) or \
                            NotFound(f"cannot read {item.path}: {err.strerror or err}")
                if pending:
                    sync_filesystem(self.store.root)   # every blob of the batch on disk before any record
                    kill_point("before-commit")
                    recorded = w.record_many([(sha, size, req) for _i, sha, size, req, _new in pending])
                    for (i, sha, _size, _req, new), got in zip(pending, recorded):
                        if isinstance(got, LoraError):
                            out[i] = got
                            if new:
                                unnamed.append(sha)   # never named: drop it (unless another has it)
                        else:
                            done.append((i, *got))
                    pending = []
        except BaseException:
            for _i, sha, _size, _req, new in pending:   # nothing of the batch was recorded
                if new:
                    self._collect_blob_quietly(sha)
            raise
        finally:
            for sha in unnamed:
                self._collect_blob_quietly(sha)
        kill_point("after-commit")
        for (i, _status, _id), result in zip(done, self._results(done, items)):
            out[i] = result
        return out   # type: ignore[return-value]

    def _results(self, done: Sequence[tuple[int, str, int]], items: Sequence[AddItem]) -> list[AddResult]:
        """``_result`` for a batch, (item, status, adapter id) each, read with one reader."""
        out = []
        with self._reader() as reader:
            for i, status, adapter_id in done:
                entry = reads.get_entry(reader, adapter_id, self.store.path_for) if items[i].with_entry else None
                if entry is not None:
                    name, sha256 = entry.name, entry.sha256
                else:
                    name, sha256 = reads.name_and_sha256(reader, adapter_id) or (None, None)
                out.append(AddResult(status=status, path=str(items[i].path), name=name, sha256=sha256, entry=entry,
                                     duplicate_of=name if status == "duplicate" else None))
        return out

    def _restore_stored_copy(self, path: Path, sha256: str, size: int, *, link: bool, durable: bool = True) -> bool:
        """Re-adding a file is how a missing or damaged stored copy is healed (what `doctor` advises): when
        the stored bytes of ``sha256`` are gone, of the wrong size or do not hash to it, rewrite them
        atomically from ``path``. True when they were rewritten."""
        if self.store.is_intact(sha256, size):
            return False
        self.store.put(path, expected_sha256=sha256, link=link, durable=durable)
        return True

    def unchanged(self, path: PathLike, stat: os.stat_result, known: dict[str, KnownFile]) -> Optional[AddResult]:
        """The result for an in-place file whose size and mtime are those remembered (``known`` from
        ``known_files()``), without reading it; None when it must be inspected and added."""
        k = known.get(str(Path(path).resolve()))
        if k is None or k.name is None or (k.size, k.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            return None
        return AddResult(status="unchanged", path=k.path, name=k.name, sha256=k.sha256, hashed=False)

    def _add_in_place(self, w, path: Path, request, stat: os.stat_result, with_entry: bool) -> AddResult:
        sha256 = request.record.sha256
        if sha256 is None:
            from registry.store import hash_file

            sha256, _size = hash_file(path)
        kill_point("before-commit")
        status, adapter_id = w.record(sha256, request.record.size, request, stored=False,
                                      location=FileLocation(str(path), stat.st_size, stat.st_mtime_ns))
        kill_point("after-commit")
        return self._result(status, path, adapter_id, with_entry)

    def _result(self, status: str, path: Path, adapter_id: int, with_entry: bool) -> AddResult:
        entry = self._entry(adapter_id) if with_entry else None
        if entry is not None:
            name, sha256 = entry.name, entry.sha256
        else:
            with self._reader() as reader:
                name, sha256 = reads.name_and_sha256(reader, adapter_id) or (None, None)
        return AddResult(status=status, path=str(path), name=name, sha256=sha256, entry=entry,
                         duplicate_of=name if status == "duplicate" else None)

    def _entry(self, adapter_id: int) -> Optional[AdapterEntry]:
        with self._reader() as reader:
            return reads.get_entry(reader, adapter_id, self.store.path_for)

    def _collect_blob_quietly(self, sha256: str) -> None:
        try:
            self._collect_blob(sha256)
        except Exception:  # the original error matters more; `doctor` finds what is left
            pass

    def _collect_blob(self, sha256: str) -> bool:
        """Delete stored bytes that no record refers to (under the store's exclusive lock)."""
        from registry import writes

        with self.store.exclusive_lock():
            if writes.Writer(self.db, self.store).blob_is_stored(sha256):
                return False
            return self.store.remove(sha256)

    # --- changing ------------------------------------------------------------------------------------
    def remove(self, refs: Sequence[str]) -> list[Removed]:
        """Remove adapters (all or none: every ref is resolved first). Stored bytes go when nothing else
        refers to them; in-place files are never deleted."""
        with self._reader() as reader:
            ids = list(dict.fromkeys(self._resolve(reader, ref) for ref in refs))
        from registry import writes

        removed = writes.Writer(self.db, self.store).remove(ids)
        for r in removed:
            if r.blob_deleted:
                r.blob_deleted = self._collect_blob(r.sha256)
        return removed

    def tag(self, ref: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> AdapterEntry:
        add = _unique_ci(validate_tag(t) for t in add)
        remove = [t.strip() for t in remove]
        adapter_id = self._id(ref)
        from registry import writes

        writes.Writer(self.db, self.store).tag(adapter_id, add, remove)
        return self._must_entry(adapter_id, ref)

    def rename(self, ref: str, new_name: str) -> AdapterEntry:
        validate_name(new_name)
        adapter_id = self._id(ref)
        from registry import writes

        writes.Writer(self.db, self.store).rename(adapter_id, new_name)
        return self._must_entry(adapter_id, ref)

    def set(self, ref: str, *, base_model: Optional[str] = None, family: Optional[str] = None,
            trigger_words: Optional[Sequence[str]] = None, reset: Iterable[str] = (),
            label: Optional[str] = None, preferred_weight: Optional[float] = None) -> AdapterEntry:
        """User overrides: they win over what inspection detected (which is kept, and shown as such).
        ``reset`` names overrides to drop: base_model, family, trigger_words, label, preferred_weight (or
        "all"). ``label``: the base model label ("Illustrious" where Civitai says "SDXL 1.0"); `lora identify`
        never replaces it. ``preferred_weight``: the weight for ``<lora:name:w>`` and sidecars, -10 to 10."""
        reset = set(reset)
        if "all" in reset:
            reset = set(OVERRIDABLE)
        unknown = reset - set(OVERRIDABLE)
        if unknown:
            raise UsageError(f"cannot reset {', '.join(sorted(unknown))}; overridable: {', '.join(OVERRIDABLE)}")
        if family is not None:
            family = _known_family(family)
        if base_model is not None:
            base_model = validate_label(_clean_text(base_model).strip(), "base model id", "invalid-base-model")
            if not base_model or len(base_model) > 256:
                raise InvalidName("a base model id is 1 to 256 characters", code="invalid-base-model")
        if trigger_words is not None:
            trigger_words = _unique_ci(validate_label(_clean_text(w).strip(), "trigger word", "invalid-trigger-word")
                                       for w in trigger_words if w.strip())
        if label is not None:
            label = validate_label(_clean_text(label).strip(), "base model label", "invalid-label")
            if not label or len(label) > 64:
                raise InvalidName("a base model label is 1 to 64 characters", code="invalid-label")
        if preferred_weight is not None:
            preferred_weight = _preferred_weight(preferred_weight)
        adapter_id = self._id(ref)
        from registry import writes

        writes.Writer(self.db, self.store).set_overrides(adapter_id, base_model=base_model, family=family,
                                                         trigger_words=trigger_words, reset=reset, label=label,
                                                         preferred_weight=preferred_weight)
        return self._must_entry(adapter_id, ref)

    def _id(self, ref: str) -> int:
        with self._reader() as reader:
            return self._resolve(reader, ref)

    def _must_entry(self, adapter_id: int, ref: str) -> AdapterEntry:
        entry = self._entry(adapter_id)
        if entry is None:
            raise NotFound(f"adapter {ref!r} was removed meanwhile")
        return entry

    # --- what services say (Civitai) -----------------------------------------------------------------
    @property
    def previews_dir(self) -> Path:
        """Preview images, by content (``records.preview_relpath``); their rows say which entry shows them."""
        return self.home / "previews"

    def apply_remote(self, ref: str, record: AdapterRecord) -> AdapterEntry:
        """Join a service's facts (label, trigger words, license, ``remote``, ``previews``: the fields of
        ``record`` that are set) to an entry already in the library; never over a user's value."""
        adapter_id = self._id(ref)
        from registry import writes

        writes.Writer(self.db, self.store).apply_remote(adapter_id, record)
        return self._must_entry(adapter_id, ref)

    def add_previews(self, ref: str, previews: Sequence[PreviewRecord]) -> AdapterEntry:
        """Show these images (already written under ``previews_dir``, by content) with an entry, after the
        ones it has; an image it already shows is not added twice."""
        record = AdapterRecord(sha256=None, size=0, container="", format="", network="", family="",
                               previews=list(previews))
        return self.apply_remote(ref, record)   # a record with previews only: nothing else is touched

    def apply_remote_many(self, items: Sequence[tuple[str, AdapterRecord]]) -> None:
        """``apply_remote`` for many entries (name, record), in one transaction."""
        if not items:
            return
        with self._reader() as reader:
            # one record per entry (a name given twice, or by name and hash prefix, is applied once)
            resolved = list({i: (i, record) for i, record in ((self._resolve(reader, ref), record)
                                                              for ref, record in items)}.values())
        from registry import writes

        writes.Writer(self.db, self.store).apply_remote_many(resolved)

    def set_previous(self, ref: str, previous: str) -> AdapterEntry:
        """Record that entry ``ref`` is a newer version of entry ``previous`` (`lora update`)."""
        adapter_id, previous_id = self._id(ref), self._id(previous)
        from registry import writes

        writes.Writer(self.db, self.store).set_previous(adapter_id, previous_id)
        return self._must_entry(adapter_id, ref)

    def remote_entries(self, service: str) -> list[tuple[str, Optional[str], Optional[str]]]:
        """(name, model id, version id) of every entry ``service`` said something about."""
        with self._reader() as reader:
            if reader is None:
                return []
            return [(name, model, version) for _id, name, model, version in reads.remote_entries(reader, service)]

    def lookups(self, service: str, keys: Sequence[str]) -> dict[str, tuple[Any, Any]]:
        """Cached answers of ``service`` by key: (answer, or None for "not found"; when it was fetched)."""
        with self._reader() as reader:
            return reads.lookups(reader, service, keys) if reader is not None else {}

    def put_lookups(self, service: str, answers: dict[str, Any]) -> None:
        from registry import writes

        writes.Writer(self.db, self.store).put_lookups(service, answers)

    # --- checking ------------------------------------------------------------------------------------
    def doctor(self, *, fix: bool = False, verify_hashes: bool = True) -> list[Finding]:
        """Check the library: blob hashes, in-place files, orphan blobs and records, stale temp files.
        With ``fix``, repair what is safe (each finding says what was done, or why not)."""
        from registry.doctor import run_doctor

        return run_doctor(self, fix=fix, verify_hashes=verify_hashes)

    def empty_quarantine(self) -> list[Finding]:
        """Delete the orphan blobs ``doctor(fix=True)`` moved to ``<home>/quarantine`` (one finding each)."""
        from registry.doctor import empty_quarantine

        return empty_quarantine(self.home)


def open_registry(url: Optional[str] = None, *, home: Optional[PathLike] = None) -> Registry:
    return Registry(url, home=home)


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text.lower())


def _not_found(ref: str, names: Sequence[str]) -> NotFound:
    """NotFound for a reference that names no adapter, with the nearest names as its hint."""
    close = difflib.get_close_matches(ref, list(names), n=3, cutoff=0.6)
    hint = ("did you mean: " + ", ".join(close) + "?") if close else "See `lora list`."
    if _is_hex(ref) and len(ref) < MIN_PREFIX:  # too short to be looked up as a prefix: say so
        return NotFound(f"no adapter named {ref!r} in the library, and sha256 prefixes need at least "
                        f"{MIN_PREFIX} hex characters", hint=hint)
    return NotFound(f"no adapter named {ref!r} (nor a sha256 starting with it) in the library", hint=hint)


def _match(reader: reads.Reader, ref: str) -> Optional[int]:
    """The precedence's library half: an exact name, then a unique sha256 prefix (AmbiguousRef if several)."""
    found = reads.find_by_name(reader, ref)
    if found is not None:
        return found
    prefix = ref.lower()
    if len(prefix) < MIN_PREFIX or not _is_hex(prefix):
        return None
    matches = reads.find_by_sha_prefix(reader, prefix)
    if len(matches) > 1:
        shown = ", ".join(f"{name} ({sha[:12]})" for _, name, sha in matches[:10])
        raise AmbiguousRef(f"{ref!r} is the start of several adapters' sha256: {shown}",
                           hint="Give more characters of the hash, or the name.")
    return matches[0][0] if matches else None


def _known_family(family: str) -> str:
    family = family.strip().lower()
    if family not in FAMILIES:
        raise UsageError(f"unknown family {family!r}; use one of: {', '.join(FAMILIES)}")
    return family


def _known_kind(kind: Optional[str]) -> Optional[str]:
    if kind is None:
        return None
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}")
    return kind


def _clean_text(text: str) -> str:
    return text.replace("\x00", "")  # PostgreSQL text cannot hold NUL


def _unique_ci(items: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.lower(), item)
    return list(seen.values())


def _preferred_weight(weight: Any) -> float:
    """A finite number from -10 to 10 (here, not only at the CLI: the web page's JSON reaches this too)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or abs(weight) > MAX_PREFERRED_WEIGHT:
        raise UsageError(f"a preferred weight is a finite number from -10 to 10, got {weight!r}",
                         code="invalid-weight", hint="For example: lora set NAME --weight 0.8")
    return float(weight)
