"""A damaged database is `damaged-library` for every command, never an empty library (issue 13 D3, C3), and
the home is never read as URL text (M3). Real SQLite files, real blobs, the real `lora` entry point."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from tests.registry.helpers import write_kohya_sd1


def _damage(db, how: str) -> None:
    if how == "truncated":
        db.write_bytes(b"")
    elif how == "garbage":
        db.write_bytes(b"not a database, just garbage bytes\n" * 200)
    elif how == "no-schema":  # a valid SQLite file, but not ours (e.g. replaced by another tool's)
        db.unlink()
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("CREATE TABLE notes (x TEXT)")
            conn.commit()
    elif how == "malformed":  # a valid header, pages overwritten (SQLite: "database disk image is malformed")
        data = bytearray(db.read_bytes())
        data[4096:] = b"\x5a" * (len(data) - 4096)
        db.write_bytes(bytes(data))
    elif how == "missing":
        db.unlink()
    elif how == "tables-without-revision":
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("DROP TABLE alembic_version")
            conn.commit()


@pytest.fixture
def library(tmp_home, src, run_cli):
    a = write_kohya_sd1(src / "a.safetensors", seed=1)
    assert run_cli("add", a).returncode == 0
    blobs = sorted(p for p in (tmp_home / "blobs" / "sha256").rglob("*") if p.is_file())
    assert len(blobs) == 1
    return tmp_home, blobs[0]


EVERY = (["list"], ["show", "a"], ["doctor"], ["doctor", "--fix"], ["tag", "a", "+x"], ["rm", "a"])


@pytest.mark.parametrize("how, commands", [("truncated", EVERY), ("garbage", EVERY[:4:3]),
                                           ("no-schema", EVERY[:4:3]), ("missing", EVERY[:4:3]),
                                           ("malformed", EVERY[:4:3]),
                                           ("tables-without-revision", EVERY[:4:3])])
def test_every_command_refuses_a_damaged_database_and_changes_nothing(library, src, run_cli, how, commands):
    home, blob = library
    db = home / "registry.db"
    _damage(db, how)
    before = db.read_bytes() if db.exists() else None
    blob_bytes = blob.read_bytes()
    b = write_kohya_sd1(src / "b.safetensors", seed=2)
    for args in commands:
        r = run_cli(*args, "--json")
        assert r.returncode == 1, (args, r)
        assert json.loads(r.stderr or r.stdout)["error"]["code"] == "damaged-library", (args, r)
        assert "doctor --rebuild" in r.stderr + r.stdout
    r = run_cli("add", b, "--json")
    assert r.returncode != 0 and "damaged-library" in r.stdout + r.stderr, r
    assert blob.read_bytes() == blob_bytes  # doctor --fix deleted no blob
    assert [p for p in (home / "blobs" / "sha256").rglob("*") if p.is_file()] == [blob]
    assert not (home / "quarantine").exists()
    if before is not None:
        assert db.read_bytes() == before  # nothing migrated over it


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_an_empty_or_missing_database_without_blobs_is_a_new_library(tmp_home, run_cli, how):
    tmp_home.mkdir()
    db = tmp_home / "registry.db"
    if how == "truncated":
        db.write_bytes(b"")
    r = run_cli("list", "--json")
    assert r.returncode == 0 and r.json() == [], r


def test_a_garbage_database_is_damaged_even_without_blobs(tmp_home, run_cli):
    tmp_home.mkdir()
    (tmp_home / "registry.db").write_bytes(b"\x00garbage" * 1000)
    r = run_cli("list", "--json")
    assert r.returncode == 1 and json.loads(r.stderr or r.stdout)["error"]["code"] == "damaged-library", r


def test_the_python_api_refuses_a_lost_database_too(library):
    from registry.api import Registry
    from registry.errors import DamagedLibrary

    home, _blob = library
    (home / "registry.db").write_bytes(b"")
    with Registry(home=home) as reg:
        with pytest.raises(DamagedLibrary):
            reg.list()
        with pytest.raises(DamagedLibrary):
            reg.doctor(fix=True)
    assert (home / "registry.db").read_bytes() == b""


@pytest.mark.parametrize("home_name", ["x%2F..%2F..%2Fescaped", "h?mode=ro", "a#b", "pct%25", "sp ace&q=1"])
def test_the_home_is_a_folder_name_never_url_text(tmp_path, src, monkeypatch, home_name):
    """M3: LORAHUB_HOME was pasted into the SQLite URL: `%2F..` put the database elsewhere, `?mode=ro`
    became URL options (and a stray file). The database must be exactly <home>/registry.db."""
    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from registry.db import Database
    from registry.home import database_url

    base = tmp_path / "deep" / "er"
    base.mkdir(parents=True)
    home = base / home_name
    a = write_kohya_sd1(src / "a.safetensors", seed=1)
    with Registry(home=home) as reg:
        ingest(a, reg)
        assert [s.name for s in reg.list()] == ["a"]
    with Registry(home=home) as reg:  # a fresh process's fast read path finds the same file
        assert [s.name for s in reg.list()] == ["a"]
    assert (home / "registry.db").is_file()
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "blobs" not in p.parts)
    assert made == [f"deep/er/{home_name}/registry.db", "src/a.safetensors"], made
    db = Database(database_url(home))
    try:
        assert db.engine.url.database == str(home / "registry.db")
        assert dict(db.engine.url.query) == {}
    finally:
        db.dispose()



def test_a_database_without_our_schema_is_damaged_on_every_backend(registry, db_url, tmp_home, src):
    """The same rule on SQLite and PostgreSQL: an empty database (a new PostgreSQL schema, a SQLite file
    emptied) beside a store holding blobs is a lost library, never migrated into an empty one."""
    from sqlalchemy import MetaData

    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from registry.errors import DamagedLibrary

    ingest(write_kohya_sd1(src / "a.safetensors", seed=1), registry)
    with registry.db.engine.begin() as conn:   # every table gone: a restored-empty or a wrong database
        tables = MetaData()
        tables.reflect(conn)
        tables.drop_all(conn)
    registry.close()
    with Registry(db_url, home=tmp_home) as again:
        with pytest.raises(DamagedLibrary):
            again.list()
        with pytest.raises(DamagedLibrary):
            again.doctor(fix=True)
    assert len(_blob_files(tmp_home)) == 1


def _blob_files(home):
    return [p for p in (home / "blobs" / "sha256").rglob("*") if p.is_file()]
