"""The export and sync calls, as the commands and scripts make them: library entries in, a ``SyncReport`` out.

``export`` places the entries named (or matched by a filter) into a folder and never removes anything;
``sync`` makes a folder hold exactly the entries a filter matches, removing only what lora itself placed there
before. Both record what they placed in the folder's manifest, so an export followed by a sync of the same
folder knows its own files. Embeddings go to the UI's embeddings folder (``export.embeddings``), a second
folder with its own manifest, under the same rules.
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
           search: Optional[str] = None, kind: str = "lora") -> list:
    """Library rows of ``kind`` (lora | embedding): those the filter matches (no filter: the whole library),
    and with ``refs`` only those they name (by the one resolver's precedence) that are of that kind."""
    rows = [r for r in registry.list(family=family, tags=list(tags), search=search) if _kind(r) == kind]
    if not refs:
        return rows
    matching = {r.sha256: r for r in rows}
    picked: dict[str, object] = {}
    for ref in refs:
        entry = registry.get(ref)        # exact name, then a unique sha256 prefix; NotFound / AmbiguousRef
        if _kind(entry) == kind and entry.sha256 in matching:   # names and filters: the named ones they keep
            picked.setdefault(entry.sha256, matching[entry.sha256])
    return list(picked.values())


def _kind(row) -> str:
    return getattr(row, "kind", "lora") or "lora"


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
           tags: Sequence[str] = (), search: Optional[str] = None,
           embeddings_to: Optional[Path] = None) -> SyncReport:
    """LoRAs into ``to``; embeddings into the UI's embeddings folder (``export.embeddings``) or
    ``embeddings_to``. An embedding named in ``refs`` with no such folder is a usage error before anything is
    written; one a filter matched is reported as skipped."""
    rows = select(registry, refs, family=family, tags=tags, search=search)
    embeddings = select(registry, refs, family=family, tags=tags, search=search, kind="embedding")
    folder = _embeddings_folder(Path(to), embeddings_to, None, embeddings, named=bool(refs))
    wants = plan(registry, rows, layout=layout, sidecars=sidecars)
    report = apply(Path(to).expanduser(), wants, linker=Linker(check_method(link)), prune=False, dry_run=dry_run)
    return _with_embeddings(registry, report, embeddings, folder, layout=layout, link=link, sidecars=sidecars,
                            prune=False, dry_run=dry_run)


def sync(registry, to: Path, *, layout: str = DEFAULT_LAYOUT, link: str = "auto", sidecars: bool = True,
         dry_run: bool = False, family: Optional[str] = None, tags: Sequence[str] = (),
         search: Optional[str] = None, target: Optional[str] = None, anchor: Optional[Path] = None,
         kind: Optional[str] = None, embeddings_to: Optional[Path] = None) -> SyncReport:
    """``to`` holds exactly the LoRAs the filter matches, and the UI's embeddings folder (found from ``to``
    and the target's ``kind``, or ``embeddings_to``) exactly the embeddings it matches."""
    rows = select(registry, family=family, tags=tags, search=search)
    embeddings = select(registry, family=family, tags=tags, search=search, kind="embedding")
    folder = _embeddings_folder(Path(to), embeddings_to, kind, embeddings, named=False)
    wants = plan(registry, rows, layout=layout, sidecars=sidecars)
    report = apply(Path(to).expanduser(), wants, linker=Linker(check_method(link)), prune=True, dry_run=dry_run,
                   target=target, anchor=anchor)
    return _with_embeddings(registry, report, embeddings, folder, layout=layout, link=link, sidecars=sidecars,
                            prune=True, dry_run=dry_run, target=target, anchor=anchor)


def _embeddings_folder(to: Path, embeddings_to: Optional[Path], kind: Optional[str], embeddings: list, *,
                       named: bool) -> Optional[Path]:
    from lorahub_cli.export.embeddings import embeddings_folder

    folder = Path(embeddings_to).expanduser() if embeddings_to is not None else \
        embeddings_folder(to.expanduser().absolute(), kind)
    if folder is None and embeddings and named:
        raise UsageError(f"{embeddings[0].name} is an embedding and {to} is no UI's LoRA folder lora knows, so "
                         "its embeddings folder is unknown",
                         hint="Name it with --embeddings-to DIR (A1111/Forge: <webui>/embeddings, ComfyUI: "
                              "models/embeddings).")
    return folder


def _with_embeddings(registry, report: SyncReport, embeddings: list, folder: Optional[Path], *, layout: str,
                     link: str, sidecars: bool, prune: bool, dry_run: bool, target: Optional[str] = None,
                     anchor: Optional[Path] = None) -> SyncReport:
    """The embeddings placed (and, with ``prune``, the ones lora placed before and no longer wanted removed)
    in their own folder, under their own manifest; the report of that folder rides on ``report``."""
    if folder is None:
        report.skipped = [{"name": e.name, "reason": "no embeddings folder is known for this target (give "
                                                     "--embeddings-to DIR)"} for e in embeddings]
        return report
    if not embeddings and not (prune and folder.is_dir()):   # nothing to place, nothing lora could remove
        return report
    wants = plan(registry, embeddings, layout=layout, sidecars=sidecars)
    report.embeddings = apply(folder, wants, linker=Linker(check_method(link)), prune=prune, dry_run=dry_run,
                              target=target, anchor=anchor)
    return report
