"""Engine and sessions from a SQLAlchemy URL, and automatic migration on first use.

SQLite: WAL (readers never block the writer), foreign keys on, a busy timeout, and write transactions that
start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of failing when a
read lock cannot be upgraded. PostgreSQL: ordinary transactions; migrations serialise on an advisory lock.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session

from registry.errors import DatabaseError
from registry.home import DATABASE_URL_ENV, HOME_ENV
from registry.schema import HEAD, REVISIONS

BUSY_TIMEOUT_MS = 60_000
_MIGRATION_LOCK = 0x6C6F7261  # pg advisory lock key ("lora")


def make_engine(url: str) -> Engine:
    try:
        return _make_engine(url)
    except (ArgumentError, ImportError) as err:  # unparseable, unknown dialect (NoSuchModuleError), no driver
        # the URL itself is not shown: it may hold a password
        raise DatabaseError(f"the library database URL is not usable: {err}",
                            hint=f"Set {DATABASE_URL_ENV} to a SQLAlchemy URL such as "
                                 "postgresql+psycopg://user@host/dbname, or unset it to use SQLite in "
                                 f"{HOME_ENV}.") from None


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_events(engine)
        if engine.url.database and engine.url.database != ":memory:":
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def stored_revision(engine: Engine) -> str | None:
    """The database's schema revision; None when it has none yet (a new database)."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def ensure_schema(engine: Engine) -> None:
    """Bring the database to HEAD; cheap (one SELECT) when it is there already."""
    current = stored_revision(engine)
    if current == HEAD:
        return
    if current is not None and current not in REVISIONS:
        raise DatabaseError(f"the library database is at schema revision {current!r}, newer than this "
                            f"version of lora understands ({HEAD!r})", hint="Upgrade lorahub-cli.")
    migrate(engine)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run Alembic in one transaction holding the migration lock, so concurrent first uses migrate once."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    try:
        with engine.connect().execution_options(write=True) as conn:
            with conn.begin():  # SQLite: BEGIN IMMEDIATE is the lock; DDL is transactional in both
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    except DBAPIError as err:
        raise DatabaseError(f"could not migrate the library database: {err.orig}") from err


class Database:
    """An engine plus read/write session helpers. Sessions expire nothing on commit: callers copy what
    they need into plain dataclasses before the session closes."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        ensure_schema(self.engine)
        self._write_engine = self.engine.execution_options(write=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with Session(self._write_engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
