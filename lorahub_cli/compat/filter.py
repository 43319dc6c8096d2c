"""`lora list --compatible-with BASE`: the library's entries that fit one base, by the same rules as `check`.

The base's layer index is built once (``index.base_index``), never per entry. Each entry's verdict is kept in
a small per-base cache, ``$LORAHUB_HOME/cache/compat/<key>.json`` ({sha256|family: [verdict, matched, total]}):
an entry's bytes never change under its sha256, and the key covers the base's module tables and the code
that decides (key normalisation, coverage rules), so a stale verdict cannot be read. A warm filter over
1,000 entries is a dict lookup each; a cold one reads each file's header once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from lorahub_cli.bases import Base, resolve_base, table_hash
from lorahub_cli.compat.model import COMPATIBLE, PARTIAL
from lorahub_cli.errors import LoraError

CACHE_SCHEMA = 1
# the code whose change may change a verdict: the cache key includes these files' bytes
_DECIDING = ("compat/engine.py", "compat/coverage.py", "compat/shapes.py", "compat/families.py", "compat/keys.py",
             "convert/keymap.py", "inspect/layout.py", "archs/naming.py", "archs/fused.py", "archs/positional.py")


@dataclass(frozen=True)
class FilterRow:
    entry: Any              # what was given (an AdapterSummary / AdapterEntry from the registry)
    verdict: Optional[str]  # compatible | partial | incompatible; None when the file could not be read
    matched: int = 0
    total: int = 0
    error: Optional[str] = None   # the error code when verdict is None

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "matched": self.matched, "total": self.total, "error": self.error}


def compatible_filter(entries: Iterable[Any], base: Union[Base, str], *, include_partial: bool = False,
                      path_of: Optional[Callable[[Any], Optional[Path]]] = None, use_cache: bool = True,
                      registry: Any = None) -> list[Any]:
    """The entries that are ``compatible`` with ``base`` (also ``partial`` ones with ``include_partial``), in
    the given order. Entries need ``sha256`` and ``family`` (and ``base_model``); see ``compatibility``."""
    keep = {COMPATIBLE, PARTIAL} if include_partial else {COMPATIBLE}
    rows = compatibility(entries, base, path_of=path_of, use_cache=use_cache, registry=registry)
    return [row.entry for row in rows if row.verdict in keep]


def compatibility(entries: Iterable[Any], base: Union[Base, str], *,
                  path_of: Optional[Callable[[Any], Optional[Path]]] = None, use_cache: bool = True,
                  registry: Any = None) -> list[FilterRow]:
    """Every entry with its verdict against ``base``.

    ``path_of(entry)`` finds an entry's bytes; by default ``entry.path`` when it has one, else the library's
    blob (or, for entries registered in place, their file), looked up in ``registry`` (default: the library
    at $LORAHUB_HOME).
    """
    from lorahub_cli.compat.engine import AdapterInput, check_input
    from lorahub_cli.compat.index import base_index

    base = base if isinstance(base, Base) else resolve_base(base)
    base_index(base)
    cache = _VerdictCache(base, getattr(registry, "home", None)) if use_cache else None
    locate = path_of or _LibraryPaths(registry)
    rows = []
    for entry in entries:
        family = getattr(entry, "family", None) or "unknown"
        key = f"{entry.sha256}|{family}"
        hit = cache.get(key) if cache else None
        if hit is not None:
            rows.append(FilterRow(entry, *hit))
            continue
        try:
            path = locate(entry)
            if path is None:
                raise LoraError(f"no file for {getattr(entry, 'name', entry.sha256)}", code="not-found")
            result = check_input(AdapterInput(label=getattr(entry, "name", entry.sha256), path=Path(path),
                                              family=family if family != "unknown" else None,
                                              base_model=getattr(entry, "base_model", None)), base)
        except LoraError as err:
            rows.append(FilterRow(entry, None, error=err.code))
            continue
        row = FilterRow(entry, result.verdict, result.matched, result.total)
        if cache:
            cache.put(key, (row.verdict, row.matched, row.total))
        rows.append(row)
    if cache:
        cache.save()
    return rows


class _LibraryPaths:
    """entry -> its bytes: ``entry.path``, else the blob store, else the in-place file (one query for all)."""

    def __init__(self, registry: Any = None) -> None:
        self._registry = registry
        self._in_place: Optional[dict[str, str]] = None

    def __call__(self, entry: Any) -> Optional[Path]:
        if getattr(entry, "path", None):
            return Path(entry.path)
        from registry.api import Registry

        if self._registry is None:
            self._registry = Registry()
        if getattr(entry, "in_place", False):
            if self._in_place is None:
                with self._registry as registry:   # closed after its one query (the store needs no database)
                    self._in_place = {k.sha256: k.path for k in registry.known_files().values() if k.sha256}
            found = self._in_place.get(entry.sha256)
            return Path(found) if found else None
        return self._registry.store.path_for(entry.sha256)


class _VerdictCache:
    def __init__(self, base: Base, home: Optional[Path] = None) -> None:
        self.path = _cache_root(home) / f"{_cache_key(base)}.json"
        self.dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.rows: dict[str, list] = data["verdicts"] if data.get("schema") == CACHE_SCHEMA else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.rows = {}

    def get(self, key: str) -> Optional[tuple[str, int, int]]:
        row = self.rows.get(key)
        return (row[0], int(row[1]), int(row[2])) if isinstance(row, list) and len(row) == 3 else None

    def put(self, key: str, value: tuple[str, int, int]) -> None:
        self.rows[key] = list(value)
        self.dirty = True

    def save(self) -> None:
        """Atomic replace; a cache that cannot be written only costs the next run its reads."""
        if not self.dirty:
            return
        from registry.publish import publish_file

        try:
            publish_file(self.path, json.dumps({"schema": CACHE_SCHEMA, "verdicts": self.rows}, separators=(",", ":")))
        except (OSError, LoraError):   # no room, read-only home: the cache is only skipped
            pass


def _cache_root(home: Optional[Path] = None) -> Path:
    """The library's own cache folder: the registry's home (``--home``) when there is one."""
    if home is not None:
        return Path(home) / "cache" / "compat"
    from registry.home import home_dir

    return home_dir() / "cache" / "compat"


def _cache_key(base: Base) -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"{CACHE_SCHEMA}|{base.family}|{table_hash(base)}".encode())
    for rel in _DECIDING:
        try:
            digest.update((package / rel).read_bytes())
        except OSError:
            digest.update(b"-")
    return digest.hexdigest()[:24]
