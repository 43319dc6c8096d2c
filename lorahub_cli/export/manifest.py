"""The manifest inside every export or sync target: which files lora made there, so that it removes only those.

``<target>/.lorahub-sync.json`` records, for each file lora placed, its path (relative, ``/``-separated), what it
is ("adapter" or "sidecar"), the adapter's sha256 (or the sidecar's content sha256) and the file's identity as
lora left it (inode, size, mtime). A file whose identity no longer matches was replaced or edited by someone
else: it is no longer lora's, and is never changed or deleted again.

Before a sync changes anything it publishes the manifest with ``complete: false`` and the paths it is about to
write as ``pending``; the finished sync publishes it again, complete. A sync killed in between leaves pending
paths whose files may or may not exist: the next sync adopts one only when it holds exactly what lora would
have put there (the same blob linked, the same sidecar bytes), and removes lora's own temp files beside them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import DamagedManifest
from registry.publish import publish_file

MANIFEST = ".lorahub-sync.json"
LOCK = ".lorahub-sync.lock"
SCHEMA = 1


@dataclass
class Placed:
    """One file lora placed: what it holds, and the identity (lstat) it had when lora left it."""

    role: str                 # adapter | sidecar
    sha256: str               # the adapter's sha256, or the sidecar's content sha256
    how: str                  # hardlink | symlink | copy | write
    ino: int
    size: int
    mtime_ns: int

    def still_ours(self, st: os.stat_result) -> bool:
        return (st.st_ino, st.st_size, st.st_mtime_ns) == (self.ino, self.size, self.mtime_ns)


@dataclass
class Manifest:
    files: dict[str, Placed] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)       # folders lora made (removed again once empty)
    pending: list[str] = field(default_factory=list)    # paths an unfinished sync was writing
    # sidecars lora made that the user edited since (A1111 rewrites <stem>.json when its metadata is edited):
    # the user's now, left alone without being reported as collisions on every sync
    released: list[str] = field(default_factory=list)
    complete: bool = True
    target: Optional[str] = None


def load(root: Path) -> Manifest:
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a schema {SCHEMA} manifest")
        files = {rel: Placed(**rec) for rel, rec in data.get("files", {}).items() if _safe_rel(rel)}
        return Manifest(files=files, dirs=[d for d in data.get("dirs", []) if _safe_rel(d)],
                        pending=[p for p in data.get("pending", []) if _safe_rel(p)],
                        released=[p for p in data.get("released", []) if _safe_rel(p)],
                        complete=bool(data.get("complete", True)), target=data.get("target"))
    except FileNotFoundError:
        return Manifest()
    except (OSError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise DamagedManifest(f"{path} cannot be read ({exc})") from None


def save(root: Path, manifest: Manifest) -> None:
    """Published whole and durably (``registry.publish``): a reader sees the old manifest or the new one."""
    payload = {"schema": SCHEMA, "tool": "lorahub", "target": manifest.target, "complete": manifest.complete,
               "pending": sorted(manifest.pending), "dirs": sorted(set(manifest.dirs)),
               "released": sorted(set(manifest.released)),
               "files": {rel: vars(p) for rel, p in sorted(manifest.files.items())}}   # vars: asdict deep-copies
    publish_file(root / MANIFEST, json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


def _safe_rel(rel: object) -> bool:
    """A manifest path lora could have written: relative, no '..', no empty part (a hand-edited manifest
    must not make sync delete outside its target)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))
