"""``resolve(ref)``: the one way an adapter is named, by every command (show, check, merge, generate, convert,
rm, ...) and by the Python API.

One precedence, everywhere:

1. an exact library name;
2. a unique prefix of a library entry's sha256, of at least 8 hex digits (any case); a prefix that starts
   several entries is ``ambiguous-ref``, and the message lists them;
3. an existing path: a file (a folder is refused: name the adapter file inside it).

So a file or folder in the current directory never shadows a library entry of the same name (give
``./name`` to mean the file), and the same text names the same thing in every command. Steps 1 and 2 are
the registry's (``Registry.find``); the commands that change an entry (rm, tag, rename, set) go through
``Registry`` methods that apply the same order, with a file standing for the entry holding its bytes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from lorahub_cli.errors import NotFound, UsageError

if TYPE_CHECKING:
    from registry.records import AdapterEntry


@dataclass(frozen=True)
class Handle:
    """What a reference names: a library entry (``entry``; its bytes at ``path``) or a file outside the
    library (``entry`` None)."""

    ref: str
    path: Path
    entry: Optional["AdapterEntry"] = None

    @property
    def in_library(self) -> bool:
        return self.entry is not None

    @property
    def name(self) -> str:
        """The library name, or the file's name."""
        return self.entry.name if self.entry is not None else self.path.name

    @property
    def sha256(self) -> Optional[str]:
        """The entry's sha256 (known without reading); None for a file outside the library."""
        return self.entry.sha256 if self.entry is not None else None


def resolve(ref: str, registry: Any = None, *, need_bytes: bool = True) -> Handle:
    """The handle ``ref`` names, by the module's precedence. ``registry``: the library to look in (default:
    the one at $LORAHUB_HOME, opened for this call and closed). ``need_bytes``: a library entry whose file
    is missing is an error (``doctor`` says what happened to it). Raises NotFound, AmbiguousRef, or
    UsageError for a folder."""
    with _library(registry) as reg:
        entry = reg.find(ref)
        if entry is None:
            path = Path(ref).expanduser()
            if path.is_file():
                return Handle(ref, path)
            if path.exists():
                raise UsageError(f"{ref} is a folder; give the adapter file inside it (or a library name)")
            raise _not_found(ref, reg)
    if need_bytes and (not entry.path or not os.path.isfile(entry.path)):
        raise NotFound(f"the library's file for {entry.name} is missing ({entry.path or 'no file'})",
                       hint="Run `lora doctor` to see what happened to it.")
    return Handle(ref, Path(entry.path) if entry.path else Path(ref), entry)


def resolve_weighted(ref: str, registry: Any = None) -> Handle:
    """``resolve`` for the REF of a "REF:WEIGHT" input (merge, generate -a): when ``ref`` names nothing but the
    text before its last ':' does, the rest was meant as a weight and is not a number -- a usage error that
    says so ("style:abc"), not "not found"."""
    try:
        return resolve(ref, registry)
    except NotFound:
        from lorahub_cli.values import bad_weight

        typo = bad_weight(ref, lambda head: names_something(head, registry))
        if typo is not None:
            raise typo from None
        raise


def names_something(ref: str, registry: Any = None) -> bool:
    """Whether ``ref`` names a library entry or a file."""
    from lorahub_cli.errors import LoraError

    try:
        resolve(ref, registry, need_bytes=False)
    except LoraError:
        return False
    return True


def looks_like_path(ref: str) -> bool:
    """A reference written as a path (a separator, or an adapter file's suffix)."""
    from lorahub_cli.inspect import ADAPTER_SUFFIXES

    return "/" in ref or "\\" in ref or ref.lower().endswith(ADAPTER_SUFFIXES)


def _not_found(ref: str, reg: Any) -> NotFound:
    if looks_like_path(ref):
        return NotFound(f"no such file: {ref} (and no library entry by that name)")
    from registry.api import MIN_PREFIX

    hexish = bool(ref) and all(c in "0123456789abcdefABCDEF" for c in ref)
    short = f" (sha256 prefixes need at least {MIN_PREFIX} hex digits)" if hexish and len(ref) < MIN_PREFIX else ""
    return NotFound(f"{ref!r} is neither a file nor an adapter in the library{short}",
                    hint=reg.not_found(ref).hint)   # the nearest names


@contextmanager
def _library(registry: Any) -> Iterator[Any]:
    if registry is not None:
        yield registry
        return
    from registry.api import Registry

    with Registry() as own:
        yield own
