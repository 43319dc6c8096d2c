"""The lockfile's data: a format version, an optional base, and entries with their sources by preference.

Kept free of I/O so that the TOML reader, the bundle reader and a recipe all build the same objects, and
``LockFile.checked`` refuses the same things whichever way a lock arrived (``bad-lock``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from lorahub_cli.errors import BadLock, UnknownLockVersion

FORMAT_VERSION = 1
KINDS = ("lora", "embedding")
# sources in the order install tries them: the most precise first, a local path only as a last hint
SOURCE_ORDER = ("hub", "civitai", "url", "path")
MAX_ENTRIES = 10_000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEXT_MAX = 4096


@dataclass
class LockSource:
    """One place the bytes can be fetched from. hub: ``repo``, ``file``, ``commit``; civitai: ``model``,
    ``version`` (ids); url: ``url``, ``etag``; path: ``path``. ``sha256``: the fetched bytes' hash when the
    library stores their conversion (a pickle); else they are the entry's own."""

    kind: str
    repo: Optional[str] = None
    file: Optional[str] = None
    commit: Optional[str] = None
    model: Optional[int] = None
    version: Optional[int] = None
    url: Optional[str] = None
    etag: Optional[str] = None
    path: Optional[str] = None
    sha256: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        if self.kind == "hub":
            return f"hf://{self.repo}@{(self.commit or '')[:12]}/{self.file}"
        if self.kind == "civitai":
            return f"civitai:{self.model}@{self.version}" if self.model else f"civitai version {self.version}"
        return (self.url if self.kind == "url" else self.path) or self.kind


@dataclass
class LockEntry:
    name: str
    sha256: str
    kind: str = "lora"
    family: Optional[str] = None
    base: Optional[str] = None        # the base model it was checked against (the library's effective value)
    weight: Optional[float] = None    # the weight a recipe used it at
    size: Optional[int] = None        # bytes (a bundle's reader checks each member against it)
    sources: list[LockSource] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None and k != "sources"}
        out["sources"] = [s.to_dict() for s in self.sources]
        return out


@dataclass
class LockFile:
    entries: list[LockEntry]
    version: int = FORMAT_VERSION
    base: Optional[str] = None        # a recipe's base (as given) and its id
    base_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        if self.base:
            out["base"] = self.base
        if self.base_id:
            out["base_id"] = self.base_id
        out["adapters"] = [e.to_dict() for e in self.entries]
        return out

    @classmethod
    def from_dict(cls, data: Any, what: str = "the lock") -> "LockFile":
        """A lock from its parsed TOML (or JSON) form, every field checked; anything odd is ``bad-lock``."""
        if not isinstance(data, dict):
            raise BadLock(f"{what} is not a table")
        version = data.get("version")
        if type(version) is not int:
            raise BadLock(f"{what} has no format version (version = {FORMAT_VERSION})")
        if version != FORMAT_VERSION:
            raise UnknownLockVersion(f"{what} is format version {version}; this lorahub-cli reads version "
                                     f"{FORMAT_VERSION}")
        adapters = data.get("adapters", [])
        if not isinstance(adapters, list) or len(adapters) > MAX_ENTRIES:
            raise BadLock(f"{what}'s adapters must be a list of at most {MAX_ENTRIES} tables")
        entries = [_entry(a, f"{what}'s adapter {i + 1}") for i, a in enumerate(adapters)]
        seen: set[str] = set()
        for e in entries:
            if e.sha256 in seen:
                raise BadLock(f"{what} names sha256 {e.sha256[:12]} twice")
            seen.add(e.sha256)
        return cls(entries=entries, version=version, base=_text(data, "base", what, optional=True),
                   base_id=_text(data, "base_id", what, optional=True))


def _entry(data: Any, what: str) -> LockEntry:
    if not isinstance(data, dict):
        raise BadLock(f"{what} is not a table")
    sha = _text(data, "sha256", what)
    if not _SHA256.fullmatch(sha):
        raise BadLock(f"{what}'s sha256 must be 64 lowercase hex digits (got {sha[:80]!r})")
    kind = _text(data, "kind", what, optional=True) or "lora"
    if kind not in KINDS:
        raise BadLock(f"{what}'s kind must be one of {', '.join(KINDS)} (got {kind[:40]!r})")
    weight = data.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                               or weight != weight or abs(weight) == float("inf")):
        raise BadLock(f"{what}'s weight must be a finite number (got {str(weight)[:40]!r})")
    sources = data.get("sources", [])
    if not isinstance(sources, list) or len(sources) > 16:
        raise BadLock(f"{what}'s sources must be a list of at most 16 tables")
    return LockEntry(name=_text(data, "name", what), sha256=sha, kind=kind,
                     family=_text(data, "family", what, optional=True), base=_text(data, "base", what, optional=True),
                     weight=float(weight) if weight is not None else None, size=_int(data, "size", what),
                     sources=[_source(s, f"{what}'s source {i + 1}") for i, s in enumerate(sources)])


def source_from_dict(data: Any, what: str) -> LockSource:
    """One source table (a lock's, or a recipe adapter's ``sources`` item), checked; else ``bad-lock``."""
    return _source(data, what)


def _source(data: Any, what: str) -> LockSource:
    if not isinstance(data, dict):
        raise BadLock(f"{what} is not a table")
    kind = _text(data, "kind", what)
    if kind not in SOURCE_ORDER:
        raise BadLock(f"{what}'s kind must be one of {', '.join(SOURCE_ORDER)} (got {kind[:40]!r})")
    texts = {k: _text(data, k, what, optional=True) for k in ("repo", "file", "commit", "url", "etag", "path", "sha256")}
    ids = {k: _int(data, k, what) for k in ("model", "version")}
    need = {"hub": ("repo", "file", "commit"), "civitai": ("version",), "url": ("url",), "path": ("path",)}[kind]
    missing = [k for k in need if (texts.get(k) if k in texts else ids.get(k)) is None]
    if missing:
        raise BadLock(f"{what} ({kind}) lacks {', '.join(missing)}")
    if texts["sha256"] is not None and not _SHA256.fullmatch(texts["sha256"]):
        raise BadLock(f"{what}'s sha256 must be 64 lowercase hex digits")
    if kind == "url" and not (texts["url"] or "").startswith(("https://", "http://")):
        raise BadLock(f"{what}'s url must be http(s)")
    if kind == "hub":
        _check_hub(texts["repo"] or "", texts["file"] or "", what)
    return LockSource(kind=kind, **texts, **ids)


def _check_hub(repo: str, file: str, what: str) -> None:
    """A Hub source names a real repo id and a file inside it: both become a URL path (install fetches
    ``<endpoint>/<repo>/resolve/<commit>/<file>`` itself)."""
    from lorahub_cli.errors import UsageError
    from lorahub_cli.sources.parse import check_repo_id
    from lorahub_cli.sources.repo_path import is_safe_repo_path

    owner, _, name = repo.partition("/")
    try:
        check_repo_id(owner, name, repo)
    except UsageError as err:
        raise BadLock(f"{what}'s repo: {err.message}", hint=err.hint) from None
    if not is_safe_repo_path(file):
        raise BadLock(f"{what}'s file {file[:80]!r} points outside the repository")


def _text(data: dict, key: str, what: str, *, optional: bool = False) -> Optional[str]:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > _TEXT_MAX or "\x00" in value:
        raise BadLock(f"{what}'s {key} must be non-empty text" + ("" if value is None else f" (got {str(value)[:40]!r})"))
    return value


def _int(data: dict, key: str, what: str) -> Optional[int]:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value >= 1 << 63:
        raise BadLock(f"{what}'s {key} must be a positive whole number")
    return value
