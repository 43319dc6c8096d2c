"""Read queries as plain SQL, run either by the stdlib ``sqlite3`` driver (the default SQLite library: no
SQLAlchemy import, so ``lora list`` starts fast) or through SQLAlchemy for any other backend. One SQL text,
valid on SQLite and PostgreSQL, serves both; rows become plain dataclasses here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Optional, Protocol, Sequence

from registry.records import AdapterEntry, AdapterSummary, FileLocation, KnownFile, SourceRecord

SORT_KEYS = {
    "name": "a.name",
    "added": "a.added_at, a.id",
    "size": "b.size, a.name",
    "rank": "(a.rank IS NULL), a.rank, a.name",
    "family": "COALESCE(a.family_user, a.family), a.name",
    "format": "a.format, a.name",
}


class Reader(Protocol):
    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple]: ...

    def close(self) -> None: ...


class SqliteReader:
    """stdlib sqlite3, one read transaction (a consistent snapshot across the queries of one call)."""

    def __init__(self, conn):
        self.conn = conn

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()


class EngineReader:
    def __init__(self, engine):
        from sqlalchemy import text

        self._text = text
        self.conn = engine.connect()

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        return [tuple(r) for r in self.conn.execute(self._text(sql), params)]

    def close(self) -> None:
        self.conn.close()


@dataclass
class ListFilter:
    family: Optional[str] = None
    format: Optional[str] = None
    tags: Sequence[str] = ()
    base: Optional[str] = None
    search: Optional[str] = None
    label: Optional[str] = None        # Civitai's base-model label, any case ("pony")
    kind: Optional[str] = None         # lora | embedding
    sort: str = "name"
    reverse: bool = False


@dataclass
class _Where:
    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1=1"


def _like(text: str) -> str:
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# the effective base models of adapter a: the user's when there are any, else the detected ones
_EFFECTIVE_BASE = ("(bm.source = 'user' OR NOT EXISTS (SELECT 1 FROM base_models u "
                   "WHERE u.adapter_id = a.id AND u.source = 'user'))")
_EFFECTIVE_TRIGGER = ("(tw.source = 'user' OR NOT EXISTS (SELECT 1 FROM trigger_words u "
                      "WHERE u.adapter_id = a.id AND u.source = 'user'))")


def _where(f: ListFilter) -> _Where:
    w = _Where()
    if f.family:
        w.clauses.append("COALESCE(a.family_user, a.family) = :family")
        w.params["family"] = f.family.lower()
    if f.kind:
        w.clauses.append("a.kind = :kind")
        w.params["kind"] = f.kind.lower()
    if f.label:
        w.clauses.append("lower(a.label) = :label")
        w.params["label"] = f.label.strip().lower()
    if f.format:
        w.clauses.append("a.format = :format")
        w.params["format"] = f.format.lower()
    for i, tag in enumerate(f.tags):
        w.clauses.append(f"EXISTS (SELECT 1 FROM tags t WHERE t.adapter_id = a.id AND lower(t.tag) = :tag{i})")
        w.params[f"tag{i}"] = tag.lower()
    if f.base:
        w.clauses.append("EXISTS (SELECT 1 FROM base_models bm WHERE bm.adapter_id = a.id "
                         f"AND lower(bm.model_id) = :base AND {_EFFECTIVE_BASE})")
        w.params["base"] = f.base.lower()
    if f.search:
        w.clauses.append(
            "(lower(a.name) LIKE :q ESCAPE '\\' OR b.sha256 LIKE :qsha ESCAPE '\\'"
            " OR EXISTS (SELECT 1 FROM tags t WHERE t.adapter_id = a.id AND lower(t.tag) LIKE :q ESCAPE '\\')"
            " OR EXISTS (SELECT 1 FROM trigger_words tw WHERE tw.adapter_id = a.id"
            f"           AND lower(tw.word) LIKE :q ESCAPE '\\' AND {_EFFECTIVE_TRIGGER})"
            " OR EXISTS (SELECT 1 FROM base_models bm WHERE bm.adapter_id = a.id"
            f"           AND lower(bm.model_id) LIKE :q ESCAPE '\\' AND {_EFFECTIVE_BASE}))")
        w.params["q"] = _like(f.search)
        w.params["qsha"] = _like(f.search)[1:]  # sha256: a prefix match
    return w


_FROM = "FROM adapters a JOIN blobs b ON b.id = a.blob_id"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _time(value: Any) -> Optional[datetime]:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite: naive UTC text (appending the zone parses faster than replace())
        return datetime.fromisoformat(value if value.endswith("+00:00") else value + "+00:00")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _grouped(rows: Iterable[tuple]) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    for row in rows:
        out.setdefault(row[0], []).append(row[1:])
    return out


def _effective(rows: list[tuple]) -> list[tuple]:
    """Of (value, source) rows, the user's when there are any (they replace the detected ones), else all."""
    if len(rows) == 1:
        return rows
    user = [r for r in rows if r[1] == "user"]
    return user or rows


def _side_tables(reader: Reader, which: str, params: dict) -> tuple[dict, dict, dict]:
    """Tags, base models and trigger words of the adapters selected by the condition ``which``."""
    tags = _grouped(reader.rows(
        f"SELECT adapter_id, tag, source FROM tags WHERE {which} ORDER BY adapter_id, id", params))
    bases = _grouped(reader.rows(
        f"SELECT adapter_id, model_id, source FROM base_models WHERE {which} ORDER BY adapter_id, position, id",
        params))
    triggers = _grouped(reader.rows(
        f"SELECT adapter_id, word, source FROM trigger_words WHERE {which} ORDER BY adapter_id, position, id",
        params))
    return tags, bases, triggers


_SUMMARY_COLS = ("a.id, a.name, b.sha256, b.size, a.format, a.network, COALESCE(a.family_user, a.family), "
                 "a.rank, a.alpha, a.dtype, a.added_at, b.stored, a.label, a.kind, a.preferred_weight")


def _summary(row: tuple, tags: dict, bases: dict, triggers: dict) -> AdapterSummary:
    # positional and branch-light: `lora list` builds ten thousand of these
    aid, name, sha256, size, fmt, network, family, rank, alpha, dtype, added_at, stored, label = row[:13]
    b, t, w = bases.get(aid), tags.get(aid), triggers.get(aid)
    return AdapterSummary(name, sha256, size, fmt, network, family, rank, alpha, dtype,
                          _effective(b)[0][0] if b else None,
                          [x[0] for x in t] if t else [],
                          [x[0] for x in _effective(w)] if w else [],
                          _time(added_at), not stored, label, row[13], row[14])


def list_adapters(reader: Reader, f: ListFilter) -> list[AdapterSummary]:
    if f.sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {f.sort!r}")
    w = _where(f)
    order = SORT_KEYS[f.sort]
    if f.reverse:
        order = ", ".join(f"{part} DESC" for part in order.split(", "))
    rows = reader.rows(f"SELECT {_SUMMARY_COLS} {_FROM} WHERE {w.sql} ORDER BY {order}", w.params)
    if not rows:
        return []
    which = f"adapter_id IN (SELECT a.id {_FROM} WHERE {w.sql})" if w.clauses else "1=1"
    tags, bases, triggers = _side_tables(reader, which, w.params)
    return [_summary(r, tags, bases, triggers) for r in rows]


def list_page(reader: Reader, f: ListFilter, limit: int, offset: int) -> tuple[int, list[AdapterSummary]]:
    """One page of ``list_adapters`` and how many adapters match in all: the web page shows 50 rows of a
    10,000-entry library without building the other 9,950 (LIMIT/OFFSET, side tables for the page only)."""
    w = _where(f)
    order = SORT_KEYS[f.sort]
    if f.reverse:
        order = ", ".join(f"{part} DESC" for part in order.split(", "))
    # with a filter the count rides on the page's own scan (a window over all matches: a text search walks
    # the table once); without one, the page reads 50 rows of the name index and COUNT(*) is cheap on its own
    count = ", COUNT(*) OVER ()" if w.clauses else ", NULL"
    rows = reader.rows(f"SELECT {_SUMMARY_COLS}{count} {_FROM} WHERE {w.sql} ORDER BY {order} "
                       f"LIMIT {int(limit)} OFFSET {int(offset)}", w.params)
    if not rows and offset == 0:
        return 0, []           # nothing matches: no second scan to count nothing
    if not rows or not w.clauses:
        total = reader.rows(f"SELECT COUNT(*) {_FROM} WHERE {w.sql}", w.params)[0][0]
        if not rows:
            return total, []
    else:
        total = rows[0][-1]
    ids = ", ".join(str(int(r[0])) for r in rows)   # integers from our own query: safe to inline
    tags, bases, triggers = _side_tables(reader, f"adapter_id IN ({ids})", {})
    return total, [_summary(r, tags, bases, triggers) for r in rows]


def first_previews(reader: Reader, names: Sequence[str]) -> dict[str, str]:
    """The first preview image of each named adapter that has one: name -> its path under the home."""
    if not names:
        return {}
    params = {f"n{i}": n for i, n in enumerate(names)}
    marks = ", ".join(f":n{i}" for i in range(len(names)))
    out: dict[str, str] = {}
    # latest position first, so the first preview is the one left in the dict
    for name, sha256, suffix in reader.rows(
            f"SELECT a.name, p.sha256, p.suffix FROM previews p JOIN adapters a ON a.id = p.adapter_id "
            f"WHERE a.name IN ({marks}) ORDER BY p.position DESC, p.id DESC", params):
        out[name] = f"previews/{sha256[:2]}/{sha256}{suffix}"
    return out


def distinct_values(reader: Reader) -> dict[str, list[str]]:
    """The tags and base-model labels in use (the web page's filter choices)."""
    tags = sorted({r[0] for r in reader.rows("SELECT DISTINCT lower(tag) FROM tags", {})})
    labels = sorted({r[0] for r in reader.rows("SELECT DISTINCT label FROM adapters WHERE label IS NOT NULL", {})})
    return {"tags": tags, "labels": labels}


# --- one adapter -------------------------------------------------------------------------------------
def find_by_name(reader: Reader, name: str) -> Optional[int]:
    rows = reader.rows("SELECT id FROM adapters WHERE name = :name", {"name": name})
    return rows[0][0] if rows else None


def find_by_sha_prefix(reader: Reader, prefix: str, limit: int = 11) -> list[tuple[int, str, str]]:
    """(id, name, sha256) of adapters whose sha256 starts with ``prefix`` (an index range scan)."""
    return reader.rows(f"SELECT a.id, a.name, b.sha256 {_FROM} WHERE b.sha256 >= :lo AND b.sha256 < :hi "
                       f"ORDER BY b.sha256 LIMIT {int(limit)}", {"lo": prefix, "hi": prefix + "g"})


def name_and_sha256(reader: Reader, adapter_id: int) -> Optional[tuple[str, str]]:
    rows = reader.rows(f"SELECT a.name, b.sha256 {_FROM} WHERE a.id = :id", {"id": adapter_id})
    return tuple(rows[0]) if rows else None


def find_by_hub_source(reader: Reader, repo: str, revision: str, filename: str) -> list[int]:
    """Adapters pulled from exactly this Hub repo, commit and file (newest first)."""
    return [r[0] for r in reader.rows(
        "SELECT DISTINCT s.adapter_id FROM sources s WHERE s.kind = 'hub' AND s.repo = :repo "
        "AND s.revision = :revision AND s.filename = :filename ORDER BY s.adapter_id DESC",
        {"repo": repo, "revision": revision, "filename": filename})]


def find_by_url_source(reader: Reader, url: str) -> list[int]:
    """Adapters fetched from exactly this URL (newest first)."""
    return [r[0] for r in reader.rows(
        "SELECT DISTINCT s.adapter_id FROM sources s WHERE s.kind = 'url' AND s.url = :url "
        "ORDER BY s.adapter_id DESC", {"url": url})]


def all_names(reader: Reader) -> list[str]:
    return [r[0] for r in reader.rows("SELECT name FROM adapters", {})]


_ENTRY_COLS = (_SUMMARY_COLS + ", b.tensor_sha256, a.container, a.family_evidence, a.components, a.ranks, "
               "a.n_tensors, a.n_modules, a.tokens, a.license, a.license_source, a.warnings, "
               "a.updated_at, a.family, a.family_user, a.blob_id, a.label_source, "
               "(SELECT p.name FROM adapters p WHERE p.id = a.previous_id), a.vectors, a.widths")


def get_entry(reader: Reader, adapter_id: int, blob_path) -> Optional[AdapterEntry]:
    """Everything about one adapter; ``blob_path(sha256)`` says where stored bytes live."""
    rows = reader.rows(f"SELECT {_ENTRY_COLS} {_FROM} WHERE a.id = :id", {"id": adapter_id})
    if not rows:
        return None
    row = rows[0]
    p = {"id": adapter_id}
    tags, bases, triggers = _side_tables(reader, "adapter_id = :id", p)
    entry = AdapterEntry(**vars(_summary(row, tags, bases, triggers)))
    (entry.tensor_sha256, entry.container, entry.family_evidence, components, ranks, entry.n_tensors,
     entry.n_modules, tokens, entry.license, entry.license_source, warnings, updated_at,
     family_detected, family_user, blob_id, entry.label_source, entry.previous_version, entry.vectors,
     widths) = row[15:]
    entry.widths = _json(widths) or []
    meta = reader.rows("SELECT data FROM adapter_metadata WHERE adapter_id = :id", p)
    metadata = meta[0][0] if meta else {}
    entry.components, entry.ranks, entry.tokens = _json(components), _json(ranks), _json(tokens)
    entry.metadata, entry.warnings, entry.updated_at = _json(metadata), _json(warnings), _time(updated_at)
    entry.tag_sources = {t: s for t, s in tags.get(adapter_id, [])}
    all_bases = bases.get(adapter_id, [])
    effective_bases = _effective(all_bases)
    entry.base_models = [{"id": m, "source": s} for m, s in effective_bases]
    entry.base_model_source = effective_bases[0][1] if effective_bases else None
    all_triggers = triggers.get(adapter_id, [])
    entry.trigger_word_sources = {w: s for w, s in _effective(all_triggers)}
    entry.files = [FileLocation(*r) for r in reader.rows(
        "SELECT path, size, mtime_ns FROM files WHERE blob_id = :b ORDER BY id", {"b": blob_id})]
    entry.sources = [SourceRecord(*r[:7], added_at=_time(r[7]), size=r[8], mtime_ns=r[9], etag=r[10])
                     for r in reader.rows("SELECT kind, path, url, repo, revision, filename, original_sha256, "
                                          "added_at, size, mtime_ns, etag FROM sources WHERE adapter_id = :id "
                                          "ORDER BY id", p)]
    entry.civitai = _remote(reader, adapter_id, "civitai")
    entry.previews = [{"path": f"previews/{r[0][:2]}/{r[0]}{r[1]}", "sha256": r[0], "url": r[2], "source": r[3]}
                      for r in reader.rows("SELECT sha256, suffix, url, source FROM previews "
                                           "WHERE adapter_id = :id ORDER BY position, id", p)]
    entry.path = str(blob_path(entry.sha256)) if not entry.in_place else (
        entry.files[0].path if entry.files else None)
    _overrides(entry, family_detected, family_user, all_bases, all_triggers)
    if entry.label_source == "user":
        entry.overrides["label"] = entry.label
        entry.detected["label"] = (entry.civitai or {}).get("base_model")
    if entry.preferred_weight is not None:
        entry.overrides["preferred_weight"] = entry.preferred_weight
    return entry


def _remote(reader: Reader, adapter_id: int, service: str) -> Optional[dict]:
    rows = reader.rows("SELECT model_id, version_id, data, fetched_at FROM remote_facts "
                       "WHERE adapter_id = :id AND service = :service", {"id": adapter_id, "service": service})
    if not rows:
        return None
    model_id, version_id, data, fetched_at = rows[0]
    fetched = _time(fetched_at)
    return {"model_id": _int(model_id), "version_id": _int(version_id), **(_json(data) or {}),
            "fetched_at": fetched.isoformat() if fetched else None}


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def remote_entries(reader: Reader, service: str) -> list[tuple[int, str, Optional[str], Optional[str]]]:
    """(adapter id, name, model id, version id) of every entry a service knows, by name."""
    return reader.rows("SELECT a.id, a.name, r.model_id, r.version_id FROM remote_facts r "
                       "JOIN adapters a ON a.id = r.adapter_id WHERE r.service = :service ORDER BY a.name",
                       {"service": service})


def lookups(reader: Reader, service: str, keys: Sequence[str]) -> dict[str, tuple[Any, Optional[datetime]]]:
    """Cached answers by key: (answer or None for "not found", when it was fetched)."""
    out: dict[str, tuple[Any, Optional[datetime]]] = {}
    keys = list(keys)
    for i in range(0, len(keys), 500):   # bounded IN lists (SQLite's variable limit)
        chunk = keys[i:i + 500]
        params = {f"k{j}": k for j, k in enumerate(chunk)}
        params["service"] = service
        marks = ", ".join(f":k{j}" for j in range(len(chunk)))
        for key, answer, fetched_at in reader.rows(
                f"SELECT key, answer, fetched_at FROM lookups WHERE service = :service AND key IN ({marks})", params):
            out[key] = (_json(answer), _time(fetched_at))
    return out


def _overrides(entry: AdapterEntry, family_detected, family_user, bases, triggers) -> None:
    if family_user:
        entry.overrides["family"] = family_user
        entry.detected["family"] = family_detected
    user_bases = [m for m, s in bases if s == "user"]
    if user_bases:
        entry.overrides["base_model"] = user_bases[0]
        entry.detected["base_model"] = next((m for m, s in bases if s != "user"), None)
    user_triggers = [w for w, s in triggers if s == "user"]
    if user_triggers:
        entry.overrides["trigger_words"] = user_triggers
        entry.detected["trigger_words"] = [w for w, s in triggers if s != "user"]


def known_files(reader: Reader) -> dict[str, KnownFile]:
    return {r[0]: KnownFile(*r) for r in reader.rows(
        "SELECT f.path, f.size, f.mtime_ns, b.sha256, a.name FROM files f JOIN blobs b ON b.id = f.blob_id "
        "LEFT JOIN adapters a ON a.blob_id = b.id", {})}


def known_converted_files(reader: Reader) -> dict[str, KnownFile]:
    """Pickles registered in place (their converted copy is stored) by path, with the stat seen when they
    were last read. When one path was several contents over time, the latest source row wins."""
    return {r[0]: KnownFile(*r) for r in reader.rows(
        "SELECT s.path, s.size, s.mtime_ns, b.sha256, a.name FROM sources s "
        "JOIN adapters a ON a.id = s.adapter_id JOIN blobs b ON b.id = a.blob_id "
        "WHERE s.kind = 'local' AND s.size IS NOT NULL ORDER BY s.id", {})}
