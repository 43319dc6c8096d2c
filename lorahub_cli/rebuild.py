"""``lora doctor --rebuild``: make the library's records again from its stored blobs, after the database was
lost or damaged. Every blob is a safetensors file named by its sha256, and its header says what it is.

1. The old database (with its ``-wal``/``-shm`` files) is moved aside to
   ``registry.db.before-rebuild-<UTC time>``: it is never deleted, and what only it knew (tags, the user's
   names and overrides, sources, files registered in place) can still be read from it.
2. A new, empty database is made at the current schema.
3. Each blob whose bytes hash to its name goes in through the one way in (``lorahub_cli.ingest``), from a hard
   link named after the adapter: its name in the old database where that can still be read, else the file's
   ``modelspec.title`` / ``ss_output_name`` metadata, else its sha256's first 12 digits. A blob that is
   damaged or that inspection refuses stays in the store and is reported, never deleted.

Run it while no other ``lora`` command uses the library. SQLite libraries only: a PostgreSQL database is
restored from the server's backups instead.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from lorahub_cli.errors import HashMismatch, LoraError, UsageError

_TITLE_KEYS = ("modelspec.title", "ss_output_name")


@dataclass
class Rebuilt:
    """One blob: ``recorded`` under ``name``, or ``skipped`` with the ``error`` that kept it out."""

    sha256: str
    status: str
    name: Optional[str] = None
    path: Optional[str] = None
    error: Optional[dict] = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RebuildReport:
    backup: Optional[str]                      # where the old database went (None: there was none)
    entries: list[Rebuilt] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"backup": self.backup, "entries": [e.to_dict() for e in self.entries]}


def rebuild(home: Optional[Path] = None) -> RebuildReport:
    from registry.api import Registry
    from registry.db import Database
    from registry.failures import read_only, writable
    from registry.home import sqlite_file

    with Registry(home=home) as registry:
        db_path = sqlite_file(registry.url)
        if db_path is None:
            raise UsageError("`lora doctor --rebuild` rebuilds a SQLite library; restore a PostgreSQL library "
                             "from the server's backups", hint="Unset LORAHUB_DATABASE_URL to rebuild the SQLite one.")
        if db_path.parent.is_dir() and not writable(db_path.parent):
            raise read_only(db_path.parent)
        _refuse_healthy(db_path)
        old_names = _old_names(db_path)
        backup = _move_aside(db_path)
        Database(registry.url).dispose()  # a new database at the current schema (no "damaged" check: it is ours)
        report = RebuildReport(str(backup) if backup else None)
        blobs = sorted(registry.store.iter_blobs(), key=lambda b: b[0] not in old_names)  # old names first
        for sha, blob in blobs:
            report.entries.append(_record_blob(registry, sha, blob, old_names.get(sha)))
    return report


def _refuse_healthy(db_path: Path) -> None:
    """A database that reads at the current schema and holds entries is not lost: rebuilding it would drop
    what only it knows (tags, sources, in-place files)."""
    from registry.schema import HEAD
    from registry.snapshot import open_snapshot

    if not db_path.is_file():
        return
    try:
        conn, revision = open_snapshot(db_path)
    except (LoraError, sqlite3.Error):
        return  # damaged: that is what --rebuild is for
    try:
        entries = conn.execute("SELECT COUNT(*) FROM adapters").fetchone()[0] if revision == HEAD else 0
    except sqlite3.Error:
        entries = 0
    finally:
        conn.close()
    if entries:
        raise UsageError(f"the library's records read fine ({entries} entries): --rebuild is for a lost or "
                         "damaged database", hint="Run `lora doctor` to see what is wrong, `lora doctor --fix` to repair it.")


def _old_names(db_path: Path) -> dict[str, str]:
    """sha256 -> name from the old database, where it can still be read (best effort: it is damaged)."""
    if not db_path.is_file():
        return {}
    from registry.names import validate_name

    try:
        uri = "file:" + quote(str(db_path.absolute()), safe="/") + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            rows = conn.execute("SELECT b.sha256, a.name FROM adapters a JOIN blobs b ON a.blob_id = b.id").fetchall()
    except sqlite3.Error:
        return {}
    names = {}
    for sha, name in rows:
        try:
            names[str(sha)] = validate_name(str(name)) or str(name)
        except LoraError:
            continue  # not a name this version accepts: named afresh
    return names


def _move_aside(db_path: Path) -> Optional[Path]:
    if not db_path.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    backup = db_path.with_name(f"{db_path.name}.before-rebuild-{stamp}")
    for suffix in ("-wal", "-shm", ""):  # the database last: until then the old one is still whole
        part = Path(f"{db_path}{suffix}")
        if part.exists():
            os.rename(part, f"{backup}{suffix}")
    return backup


def _record_blob(registry, sha: str, blob: Path, old_name: Optional[str]) -> Rebuilt:
    from lorahub_cli.ingest import ingest
    from lorahub_cli.inspect import inspect_file
    from registry.records import SourceRecord
    from registry.store import work_folder

    try:
        # hashes it too: damaged bytes are not recorded under their old name; embeddings are entries too
        report = inspect_file(blob, embeddings=True)
        if report.sha256 != sha:
            raise HashMismatch(f"the stored bytes do not match their name (they hash to {report.sha256})",
                               hint="Left in the store; `lora doctor` reports it.")
        with work_folder(registry.staging_dir) as work:
            named = work / f"{_title(report, old_name, sha)}.safetensors"
            _link_or_copy(blob, named)
            result = ingest(named, registry, source=SourceRecord(kind="rebuilt", path=str(blob)),
                            name=old_name, link=True, with_entry=False)
        return Rebuilt(sha, "recorded", name=result.name, path=str(blob))
    except LoraError as err:
        return Rebuilt(sha, "skipped", path=str(blob), error=err.to_dict())


def _title(report, old_name: Optional[str], sha: str) -> str:
    from registry.names import default_name

    for text in (old_name, *(report.metadata.get(k) for k in _TITLE_KEYS)):
        if text and text.strip():
            return default_name(Path(text.strip().replace("/", "_") + ".x"))
    return sha[:12]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
