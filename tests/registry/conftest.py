"""Registry test fixtures: every registry test runs against SQLite and a real PostgreSQL server.

PostgreSQL: ``LORAHUB_TEST_PG_URL`` (CI's `.ci/run` starts a server and sets it; the same default URL is
tried when it is unset). Each test gets its own freshly created schema (other runs may share the server),
selected through the URL's ``search_path`` option and dropped afterwards. The PostgreSQL leg is skipped,
with the reason, only when no server answers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest

PG_URL = os.environ.get("LORAHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_problem: Optional[str] = None
_pg_checked = False


def _pg_unavailable() -> Optional[str]:
    global _pg_checked, _pg_problem
    if not _pg_checked:
        _pg_checked = True
        try:
            from sqlalchemy import create_engine, text

            engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as err:  # no driver, no server, no database: all mean "cannot have one"
            _pg_problem = f"no PostgreSQL server at {PG_URL} ({type(err).__name__}: {str(err).splitlines()[0]})"
    return _pg_problem


class PgSchema:
    """A throw-away schema on the shared server; ``url`` points the registry at it."""

    def __init__(self) -> None:
        from sqlalchemy import create_engine, text

        self.name = f"lorahub_test_{uuid.uuid4().hex[:12]}"
        self._text = text
        self.admin = create_engine(PG_URL)
        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        sep = "&" if "?" in PG_URL else "?"
        self.url = f"{PG_URL}{sep}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(self._text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        self.admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    if request.param == "postgres":
        problem = _pg_unavailable()
        if problem:
            pytest.skip(f"PostgreSQL leg skipped: {problem}")
    return request.param


@pytest.fixture
def db_url(backend, tmp_home, monkeypatch) -> Iterator[Optional[str]]:
    """None for SQLite (the default database in the test's home), else a fresh PostgreSQL schema's URL.
    Also exported as LORAHUB_DATABASE_URL, so CLI runs in this test use the same database."""
    if backend == "sqlite":
        yield None
        return
    schema = PgSchema()
    monkeypatch.setenv("LORAHUB_DATABASE_URL", schema.url)
    try:
        yield schema.url
    finally:
        schema.drop()


@pytest.fixture
def registry(db_url, tmp_home):
    from registry.api import Registry

    reg = Registry(db_url, home=tmp_home)
    yield reg
    reg.close()


@pytest.fixture
def src(tmp_path) -> Path:
    """A folder for source adapter files (outside the library home)."""
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `lora ARGS...` in this process (fast; the subprocess tests cover the real entry point).
    Returns (exit code, stdout, stderr)."""
    from lorahub_cli.__main__ import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
