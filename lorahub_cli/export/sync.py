"""Export and sync: make a UI's LoRA folder show library entries, by name, with their sidecars.

    items = plan_items(rows, layout="{family}/{name}", source_for=..., sidecars=True)
    report = apply(Path("~/ComfyUI/models/loras"), items, linker=Linker(), prune=True)

``plan_items`` turns library rows into wanted files (adapter + ``<stem>.json``); two entries whose paths would
be the same (also on a case-blind filesystem) are told apart by ``-<sha8>`` on the later-added one, so adding
an entry never renames an older one. ``apply`` compares the wanted files with the target's manifest
(``export.manifest``) and the disk, then adds, updates and (``prune``: `lora sync`) removes:

- a wanted path where a file exists that lora did not make (or made, but someone changed since) is a
  *collision*: reported, never overwritten;
- only files the manifest lists, still as lora left them, are updated or removed;
- nothing changed: no write at all (a re-run of 5,000 entries is a few thousand lstat calls);
- every folder a file goes into must resolve inside the target (a symlinked folder pointing out is refused);
- per-file problems (a name the filesystem finds too long, a folder that is a file) are reported per file;
  the rest of the sync goes on.

Durability: links are published without fsync (the blobs are on disk), sidecars are written in batches made
durable by one ``sync_filesystem`` before they are named, and each touched folder is fsynced once at the end,
before the manifest is published complete.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from lorahub_cli.errors import TargetNotWritable
from lorahub_cli.export import manifest as mf
from lorahub_cli.export.link import Linker
from lorahub_cli.export.names import ADAPTER_SUFFIX, check_layout, layout_values, render_layout, sanitize
from lorahub_cli.export.sidecars import a1111_json, civitai_info
from registry.faults import kill_point
from registry.publish import fsync_path, sync_filesystem, temp_file

_BATCH = 1000   # sidecars written, then made durable with one sync_filesystem, then named


@dataclass(frozen=True)
class Want:
    """One file the target should hold."""

    rel: str                       # "/"-separated path inside the target
    role: str                      # adapter | preview (linked, like the adapter) | sidecar (written)
    name: str                      # the library entry's name
    sha256: str                    # adapter: its sha256; sidecar: its content's sha256
    source: Optional[str] = None   # adapter, preview: where its bytes are
    content: Optional[bytes] = None  # sidecar: its bytes
    adapter: Optional[str] = None    # sidecar, preview: its adapter's rel


@dataclass
class SyncReport:
    root: str
    dry_run: bool
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    collisions: list[dict] = field(default_factory=list)   # {"path", "name", "reason"}
    released: list[str] = field(default_factory=list)      # files lora made that someone changed: left alone
    errors: list[dict] = field(default_factory=list)       # {"path", "name", "code", "message"}
    methods: dict[str, int] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)       # files an interrupted sync had placed
    embeddings: Optional["SyncReport"] = None              # the UI's embeddings folder, when any was placed there
    skipped: list[dict] = field(default_factory=list)      # {"name", "reason"}: embeddings with nowhere to go

    @property
    def ok(self) -> bool:
        return not self.collisions and not self.errors and (self.embeddings is None or self.embeddings.ok)

    def to_dict(self) -> dict:
        return {"root": self.root, "dry_run": self.dry_run, "added": self.added, "updated": self.updated,
                "removed": self.removed, "unchanged": self.unchanged, "collisions": self.collisions,
                "released": self.released, "errors": self.errors, "methods": self.methods,
                "fallbacks": self.fallbacks, "adopted": self.adopted,
                "embeddings": self.embeddings.to_dict() if self.embeddings is not None else None,
                "skipped": self.skipped}


# --- planning ------------------------------------------------------------------------------------------
def plan_items(rows: Iterable, *, layout: str, source_for: Callable[[object], Optional[str]],
               sidecars: bool = True, civitai: Optional[dict[str, dict]] = None,
               previews: Optional[dict[str, str]] = None) -> list[Want]:
    """The files the target should hold for library ``rows`` (``AdapterSummary``-like). With ``sidecars``:
    each adapter's ``<stem>.json``, its ``<stem>.civitai.info`` where ``civitai`` (name -> what Civitai said)
    knows it, and its ``<stem>.preview<suffix>`` (linked) where ``previews`` (name -> image path) has one."""
    civitai, previews = civitai or {}, previews or {}
    parts = check_layout(layout)
    rows = sorted(rows, key=lambda r: (r.added_at.isoformat() if r.added_at else "", r.sha256))
    taken: set[str] = set()
    out: list[Want] = []
    for row in rows:
        values = layout_values(name=row.name, sha256=row.sha256, family=row.family, format=row.format,
                               network=row.network, tags=list(row.tags), label=getattr(row, "label", None))
        path = render_layout(parts, values)
        if "/".join(path).casefold() in taken:   # a case-blind twin of an earlier entry's path
            path = (*path[:-1], sanitize(f"{path[-1]}-{row.sha256[:8]}", tail=row.sha256[:8]))
        taken.add("/".join(path).casefold())
        rel = "/".join(path)
        out.append(Want(rel + ADAPTER_SUFFIX, "adapter", row.name, row.sha256, source=source_for(row)))
        if sidecars:
            content = a1111_json(name=row.name, sha256=row.sha256, family=row.family,
                                 trigger_words=row.trigger_words, base_model=row.base_model,
                                 preferred_weight=row.preferred_weight)
            out.append(Want(rel + ".json", "sidecar", row.name, hashlib.sha256(content).hexdigest(),
                            content=content, adapter=rel + ADAPTER_SUFFIX))
            if row.name in civitai:
                info = civitai_info(civitai[row.name], trigger_words=row.trigger_words)
                out.append(Want(rel + ".civitai.info", "sidecar", row.name, hashlib.sha256(info).hexdigest(),
                                content=info, adapter=rel + ADAPTER_SUFFIX))
            if row.name in previews:
                image = previews[row.name]
                suffix = os.path.splitext(image)[1].lower()
                out.append(Want(f"{rel}.preview{suffix}", "preview", row.name,
                                os.path.basename(image)[:64], source=image, adapter=rel + ADAPTER_SUFFIX))
    return out


# --- applying ------------------------------------------------------------------------------------------
def check_root(root: Path, *, create: bool, anchor: Optional[Path] = None) -> Path:
    """The target folder, usable: a folder (made when ``create``), writable, no symlink loop. ``anchor``: a
    folder that must exist already (a named target's UI folder: an unmounted drive must not become a folder
    on the system disk)."""
    from lorahub_cli.targets import check_folder_output

    try:
        root = check_folder_output(root, what="the target")
        if anchor is not None and not Path(anchor).is_dir():
            raise TargetNotWritable(f"the target's folder {anchor} does not exist (a drive not mounted?)",
                                    hint="Mount or create it, then sync again; `lora target list` shows the folders.")
        if create:
            root.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError) as exc:   # RuntimeError: Path.resolve meeting a symlink loop
        raise TargetNotWritable(f"the target {root} cannot be used: {_why(exc)}") from None
    if root.exists() and not os.access(root, os.W_OK | os.X_OK) and create:
        raise TargetNotWritable(f"the target {root} is read-only")
    return root


def apply(root: Path, wants: list[Want], *, linker: Linker, prune: bool, dry_run: bool = False,
          target: Optional[str] = None, anchor: Optional[Path] = None) -> SyncReport:
    """Bring ``root`` in step with ``wants`` (see the module docstring); ``prune`` removes lora's own files
    that are no longer wanted. ``dry_run`` reads only and reports the plan. ``anchor`` must exist already
    (``check_root``)."""
    from registry.store import file_lock

    root = check_root(root, create=not dry_run, anchor=anchor)
    report = SyncReport(str(root), dry_run)
    if dry_run:
        _Run(root, mf.load(root) if root.is_dir() else mf.Manifest(), linker, report, dry_run=True).go(wants, prune)
        return report
    try:
        with file_lock(root / mf.LOCK, exclusive=True):
            manifest = mf.load(root)
            manifest.target = target or manifest.target
            _Run(root, manifest, linker, report, dry_run=False).go(wants, prune)
    except PermissionError as exc:
        raise TargetNotWritable(f"the target {root} cannot be written: {_why(exc)}") from None
    report.fallbacks = list(linker.fallbacks)
    return report


class _Run:
    """One apply: the manifest it changes, the folders it touched, the report it fills."""

    def __init__(self, root: Path, manifest: mf.Manifest, linker: Linker, report: SyncReport, *, dry_run: bool):
        self.root, self.manifest, self.linker, self.report, self.dry_run = root, manifest, linker, report, dry_run
        self.real_root = os.path.realpath(root)
        self.touched: set[Path] = set()
        self._inside: dict[Path, Optional[str]] = {}
        self.dirty = False   # the manifest changed (a file released or gone) even if no file needs writing

    def go(self, wants: list[Want], prune: bool) -> None:
        m = self.manifest
        if not m.complete and not self.dry_run:
            self._clean_temps(m.pending)
        adopt = set(m.pending)
        actions: list[tuple[Want, bool]] = []        # (want, replace)
        blocked: set[str] = set()                    # adapters not placed: their sidecars wait too
        for want in wants:
            if want.adapter in blocked:
                continue
            verdict = self._judge(want, adopt)
            if verdict == "add":
                actions.append((want, False))
            elif verdict == "update":
                actions.append((want, True))
            elif verdict in ("same", "kept"):
                self.report.unchanged += 1
            elif want.role == "adapter":
                blocked.add(want.rel)
        wanted = {w.rel for w in wants}
        stale = [rel for rel in m.files if rel not in wanted] if prune else []
        if self.dry_run:
            for want, replace in actions:
                (self.report.updated if replace else self.report.added).append(want.rel)
            self.report.removed += [rel for rel in stale if self._ours(rel)]
            return
        if not actions and not stale and m.complete and not m.pending and not self.dirty:
            return   # in step already: nothing is written, not even the manifest
        m.complete, m.pending = False, sorted({w.rel for w, _ in actions} | set(m.pending) - set(m.files))
        mf.save(self.root, m)
        self._place([a for a in actions if a[0].role != "sidecar"])
        for start in range(0, len(actions), _BATCH):
            self._write_sidecars([a for a in actions[start:start + _BATCH] if a[0].role == "sidecar"])
        for rel in stale:
            self._remove(rel)
        self._prune_dirs()
        for folder in sorted(self.touched):
            fsync_path(folder)
        m.complete, m.pending = True, []
        mf.save(self.root, m)

    # --- judging one wanted file ---
    def _judge(self, want: Want, adopt: set[str]) -> str:
        """add | update | same | kept (a sidecar the user took over) | blocked (a collision or an error,
        already reported)."""
        path = self.root / want.rel
        problem = self._folder_problem(path.parent)
        if problem:
            return self._error(want, "unsafe-path", problem)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return self._error(want, _code(exc), _why(exc))
        rec = self.manifest.files.get(want.rel)
        if st is None:
            if rec is not None:
                del self.manifest.files[want.rel]   # removed by someone: lora puts it back
                self.dirty = True
            if want.rel in self.manifest.released:
                self.manifest.released.remove(want.rel)
                self.dirty = True
            return "add"
        if rec is not None and rec.still_ours(st):
            return "same" if rec.sha256 == want.sha256 and rec.role == want.role else "update"
        if rec is not None:   # lora made it, someone changed it since: theirs now
            del self.manifest.files[want.rel]
            self.report.released.append(want.rel)
            self.dirty = True
            if want.role == "sidecar":   # an edited sidecar is the user's: kept, and not a collision
                self.manifest.released.append(want.rel)
                return "kept"
        elif want.role == "sidecar" and want.rel in self.manifest.released:
            return "kept"
        elif want.rel in adopt and self._is_expected(want, path):
            self.report.adopted.append(want.rel)
            if not self.dry_run:
                self._record(want, path, "adopted")
            return "same"
        self.report.collisions.append({"path": want.rel, "name": want.name,
                                       "reason": "a file lora did not make (or that was changed) is there"})
        return "blocked"

    def _is_expected(self, want: Want, path: Path) -> bool:
        if want.role != "sidecar":
            return want.source is not None and self.linker.expected(want.source, path)
        try:
            return not path.is_symlink() and path.read_bytes() == want.content
        except OSError:
            return False

    def _ours(self, rel: str) -> bool:
        rec = self.manifest.files[rel]
        try:
            return rec.still_ours(os.lstat(self.root / rel))
        except OSError:
            return False

    def _folder_problem(self, folder: Path) -> Optional[str]:
        """None when ``folder`` (existing or not) resolves inside the target; else why not."""
        if folder not in self._inside:
            real = os.path.realpath(folder)
            inside = real == self.real_root or real.startswith(self.real_root.rstrip(os.sep) + os.sep)
            self._inside[folder] = None if inside else f"{folder} leads outside the target (to {real})"
        return self._inside[folder]

    # --- changing the target ---
    def _place(self, actions: list[tuple[Want, bool]]) -> None:
        for want, replace in actions:
            path = self.root / want.rel
            if want.source is None or not os.path.isfile(want.source):
                self._error(want, "missing-blob", f"the library's copy of {want.name} is missing; "
                                                  "run `lora doctor`")
                continue
            if not self._make_dirs(want, path.parent):
                continue
            try:
                how = self.linker.place(want.source, path, replace=replace)
            except FileExistsError:
                self._collided(want)
                continue
            except OSError as exc:
                self._error(want, _code(exc), _why(exc))
                continue
            self._record(want, path, how)
            (self.report.updated if replace else self.report.added).append(want.rel)
            kill_point(f"sync-placed-{len(self.report.added) + len(self.report.updated)}")   # tests only

    def _write_sidecars(self, batch: list[tuple[Want, bool]]) -> None:
        with ExitStack() as stack:
            ready = []
            for want, replace in batch:
                path = self.root / want.rel
                if not self._make_dirs(want, path.parent):
                    continue
                try:
                    tmp = stack.enter_context(temp_file(path.parent, name=path.name))
                    tmp.path.write_bytes(want.content or b"")
                    os.chmod(tmp.path, 0o644)
                except OSError as exc:
                    self._error(want, _code(exc), _why(exc))
                    continue
                ready.append((want, replace, tmp, path))
            kill_point("sync-sidecar-temps")   # tests only: temp files written, none named yet
            if ready:
                sync_filesystem(self.root)   # the bytes of the whole batch are on disk before any gets its name
            for want, replace, tmp, path in ready:
                try:
                    tmp.publish(path, replace=replace, keep_mode=True, durable=False)
                except FileExistsError:
                    self._collided(want)
                    continue
                except OSError as exc:
                    self._error(want, _code(exc), _why(exc))
                    continue
                self._record(want, path, "write")
                (self.report.updated if replace else self.report.added).append(want.rel)

    def _make_dirs(self, want: Want, folder: Path) -> bool:
        if folder.is_dir():
            return True
        made = []
        for above in reversed([folder, *folder.parents]):
            if above == self.root or self.root not in above.parents:
                continue
            if not os.path.lexists(above):
                made.append(above)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._error(want, _code(exc), _why(exc))
            return False
        for d in made:
            self.manifest.dirs.append(d.relative_to(self.root).as_posix())
            self.touched.add(d.parent)
        return True

    def _record(self, want: Want, path: Path, how: str) -> None:
        st = os.lstat(path)
        self.manifest.files[want.rel] = mf.Placed(want.role, want.sha256, how, st.st_ino, st.st_size,
                                                  st.st_mtime_ns)
        self.report.methods[how] = self.report.methods.get(how, 0) + 1
        self.touched.add(path.parent)

    def _remove(self, rel: str) -> None:
        rec = self.manifest.files.pop(rel)
        path = self.root / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError:
            self.manifest.files[rel] = rec
            return
        if not rec.still_ours(st):
            self.report.released.append(rel)
            return
        try:
            path.unlink()
        except OSError as exc:
            self.manifest.files[rel] = rec
            self.report.errors.append({"path": rel, "name": None, "code": _code(exc), "message": _why(exc)})
            return
        self.report.removed.append(rel)
        self.touched.add(path.parent)

    def _prune_dirs(self) -> None:
        """Remove the folders lora made that are now empty (deepest first); never anyone else's."""
        used = {str(Path(rel).parent.as_posix()) for rel in self.manifest.files}
        keep = []
        for d in sorted(set(self.manifest.dirs), key=lambda d: d.count("/"), reverse=True):
            if any(u == d or u.startswith(d + "/") for u in used):
                keep.append(d)
                continue
            try:
                (self.root / d).rmdir()
                self.touched.discard(self.root / d)   # gone: nothing left there to make durable
                self.touched.add((self.root / d).parent)
            except FileNotFoundError:
                pass
            except OSError:   # not empty: someone put files there; it stays, and is no longer ours
                pass
        self.manifest.dirs = keep

    def _clean_temps(self, pending: list[str]) -> None:
        """Remove the temp files a killed sync left beside the names it was writing (registry.publish names
        them ".<name>.<random>.tmp"); nothing else is touched."""
        by_folder: dict[Path, set[str]] = {}
        for rel in pending:
            path = self.root / rel
            by_folder.setdefault(path.parent, set()).add(path.name[:80])
        for folder, names in by_folder.items():
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            for entry in entries:
                m = _TEMP.match(entry)
                if m and m.group(1) in names:
                    try:
                        os.unlink(folder / entry)
                    except OSError:
                        pass

    def _collided(self, want: Want) -> None:
        self.report.collisions.append({"path": want.rel, "name": want.name,
                                       "reason": "a file appeared there while lora was writing"})

    def _error(self, want: Want, code: str, message: str) -> str:
        self.report.errors.append({"path": want.rel, "name": want.name, "code": code, "message": message})
        return "blocked"


_TEMP = re.compile(r"^\.(.+)\.[A-Za-z0-9_]{8,12}\.tmp$")


def _code(exc: OSError) -> str:
    return {errno.ENAMETOOLONG: "name-too-long", errno.ELOOP: "symlink-loop", errno.ENOTDIR: "not-a-folder",
            errno.EACCES: "target-not-writable", errno.EROFS: "target-not-writable",
            errno.ENOSPC: "disk-full"}.get(exc.errno, "os-error")


def _why(exc: BaseException) -> str:
    return getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
