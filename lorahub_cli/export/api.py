"""The export and sync calls, as the commands and scripts make them: library entries in, a ``SyncReport`` out.

``export`` places the entries named (or matched by a filter) into a folder and never removes anything;
``sync`` makes a folder hold exactly the entries a filter matches, removing only what lora itself placed there
before. Both record what they placed in the folder's manifest, so an export followed by a sync of the same
folder knows its own files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

from lorahub_cli.errors import UsageError
from lorahub_cli.export.link import Linker, check_method
from lorahub_cli.export.names import DEFAULT_LAYOUT
from lorahub_cli.export.sync import SyncReport, apply, plan_items

_SHA256 = re.compile(r"[0-9a-f]{64}")


def select(registry, refs: Sequence[str] = (), *, family: Optional[str] = None, tags: Sequence[str] = (),
           search: Optional[str] = None) -> list:
    """Library rows: the LoRAs the filter matches (no filter: the whole library), and with ``refs`` only those
    they name (by the one resolver's precedence). Embeddings are left out: they belong in a UI's embeddings
    folder, not its LoRA folder (naming one is a usage error)."""
    rows = [r for r in registry.list(family=family, tags=list(tags), search=search) if _is_lora(r)]
    if not refs:
        return rows
    matching = {r.sha256: r for r in rows}
    picked: dict[str, object] = {}
    for ref in refs:
        entry = registry.get(ref)        # exact name, then a unique sha256 prefix; NotFound / AmbiguousRef
        if not _is_lora(entry):
            raise UsageError(f"{entry.name} is an embedding; export and sync place LoRAs in a UI's LoRA folder")
        if entry.sha256 in matching:     # names and filters together: the named entries the filters keep
            picked.setdefault(entry.sha256, matching[entry.sha256])
    return list(picked.values())


def _is_lora(row) -> bool:
    return getattr(row, "kind", "lora") == "lora"


def source_finder(registry):
    """row -> the path of its bytes: the stored blob, else the first file registered in place (a string:
    pathlib costs more than the rest of planning a 5,000-entry sync)."""
    in_place: dict[str, str] = {}
    for path, known in sorted(registry.known_files().items()):
        if known.sha256:
            in_place.setdefault(known.sha256, str(path))
    objects = os.path.abspath(registry.store.objects)   # a symlink to a relative --home's blob would dangle

    def source_for(row) -> Optional[str]:
        if row.in_place and row.sha256 in in_place:
            return in_place[row.sha256]
        if not _SHA256.fullmatch(row.sha256):   # never let anything else become a path
            return None
        return os.path.join(objects, row.sha256[:2], row.sha256)

    return source_for


def plan(registry, rows: list, *, layout: str, sidecars: bool) -> list:
    """The wanted files for ``rows``: adapters, and with ``sidecars`` what the UIs read beside them (Civitai's
    answer only for the entries Civitai knows, the first preview image of each entry that has one)."""
    civitai: dict[str, dict] = {}
    previews: dict[str, str] = {}
    if sidecars:
        names = {r.name for r in rows}
        for name, _model, _version in registry.remote_entries("civitai"):
            if name in names:
                civitai[name] = registry.get(name).civitai or {}
        listed = sorted(names)
        for i in range(0, len(listed), 500):   # bounded IN lists
            for name, rel in registry.first_previews(listed[i:i + 500]).items():
                previews[name] = str(registry.home / rel)
    return plan_items(rows, layout=layout, source_for=source_finder(registry), sidecars=sidecars,
                      civitai=civitai, previews=previews)


def export(registry, refs: Sequence[str], to: Path, *, layout: str = DEFAULT_LAYOUT, link: str = "auto",
           sidecars: bool = True, dry_run: bool = False, family: Optional[str] = None,
           tags: Sequence[str] = (), search: Optional[str] = None) -> SyncReport:
    rows = select(registry, refs, family=family, tags=tags, search=search)
    wants = plan(registry, rows, layout=layout, sidecars=sidecars)
    return apply(Path(to).expanduser(), wants, linker=Linker(check_method(link)), prune=False, dry_run=dry_run)


def sync(registry, to: Path, *, layout: str = DEFAULT_LAYOUT, link: str = "auto", sidecars: bool = True,
         dry_run: bool = False, family: Optional[str] = None, tags: Sequence[str] = (),
         search: Optional[str] = None, target: Optional[str] = None, anchor: Optional[Path] = None) -> SyncReport:
    rows = select(registry, family=family, tags=tags, search=search)
    wants = plan(registry, rows, layout=layout, sidecars=sidecars)
    return apply(Path(to).expanduser(), wants, linker=Linker(check_method(link)), prune=True, dry_run=dry_run,
                 target=target, anchor=anchor)
