"""Engine and sessions from a SQLAlchemy URL, and automatic migration on first use.

SQLite: WAL (readers never block the writer), foreign keys on, a busy timeout, and write transactions that
start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of failing when a
read lock cannot be upgraded. PostgreSQL: ordinary transactions; migrations serialise on an advisory lock.

Every database error passes through one hook (``handle_error``) that turns a full disk, a read-only home and a
damaged file into ``DiskFull`` / ``ReadOnly`` / ``DamagedLibrary`` (``registry.failures``), whichever query
met it. A database without our schema while the store holds blobs is damaged too: migrating it would make an
empty library out of a lost one, and ``doctor --fix`` would then take every blob for an orphan.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session

from registry import failures
from registry.errors import DatabaseError
from registry.home import DATABASE_URL_ENV, HOME_ENV, sqlite_file
from registry.schema import HEAD, REVISIONS
from registry.store import any_blob

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
    path: Optional[Path] = None
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None and path.is_file() and not failures.writable(path.parent):
            return _read_only_engine(path)
        if path is not None:  # the path as the fast read path reads it, never re-parsed as URL text
            from sqlalchemy.engine import URL

            url = URL.create("sqlite", database=str(path))
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_events(engine)
        if engine.url.database and engine.url.database != ":memory:":
            folder = Path(engine.url.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise failures.from_os_error(err, "cannot create the library folder", folder) or err
        if engine.url.database and engine.url.database != ":memory:":
            path = Path(engine.url.database)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    _translate_errors(engine, path)
    return engine


def _read_only_engine(path: Path) -> Engine:
    """A home this process cannot write (a read-only mount, another user's folder): SQLite opened read-only
    (no switch to WAL, no -shm file to create), so checks read; any write fails as ``ReadOnly``."""
    from registry.snapshot import connect_read_only

    engine = create_engine("sqlite://", creator=lambda: connect_read_only(path))
    _sqlite_events(engine, wal=False)
    _translate_errors(engine, path)
    return engine


def _translate_errors(engine: Engine, path: Optional[Path]) -> None:
    """Raise our error in place of a driver error that means a full disk, a read-only home or damage."""
    is_sqlite = engine.dialect.name == "sqlite"

    @event.listens_for(engine, "handle_error")
    def _handle(ctx) -> None:
        orig = ctx.original_exception
        ours = failures.from_sqlite_error(orig, path) if is_sqlite else failures.from_postgres_error(orig)
        if ours is not None:
            raise ours from orig


def _sqlite_events(engine: Engine, *, wal: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if wal:
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


def ensure_schema(engine: Engine, blobs: Optional[Path] = None) -> None:
    """Bring the database to HEAD; cheap (one SELECT) when it is there already. ``blobs``: the store's
    objects folder; a database without our schema while it holds blobs is refused as damaged."""
    current = stored_revision(engine)
    if current == HEAD:
        return
    if current is not None and current not in REVISIONS:
        raise DatabaseError(f"the library database is at schema revision {current!r}, newer than this "
                            f"version of lora understands ({HEAD!r})", hint="Upgrade lorahub-cli.")
    migrate(engine, blobs=blobs)


def refuse_damaged(conn, blobs: Optional[Path]) -> None:
    """Before creating the schema: a database that has none must also have no tables of ours and, when
    ``blobs`` is given, the store no blobs (else the records were lost, not never made)."""
    from sqlalchemy import inspect

    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables and conn.execute(text("SELECT version_num FROM alembic_version")).scalar():
        return  # a schema is there (another process migrated first): Alembic upgrades it
    where = _describe(conn)
    if tables & {"adapters", "blobs"}:
        raise failures.damaged(where, "it has the library's tables but no schema revision")
    if blobs is not None and any_blob(blobs):
        raise failures.damaged(where, f"it holds no records, but the store holds adapters ({blobs})")


def _describe(conn) -> str:
    database = conn.engine.url.database
    return database if conn.dialect.name == "sqlite" and database else f"at {DATABASE_URL_ENV}"


def migrate(engine: Engine, revision: str = "head", *, blobs: Optional[Path] = None) -> None:
    """Run Alembic in one transaction holding the migration lock, so concurrent first uses migrate once.
    ``blobs``: see ``refuse_damaged``, checked under that lock."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    try:
        with engine.connect().execution_options(write=True) as conn:
            with conn.begin():  # SQLite: BEGIN IMMEDIATE is the lock; DDL is transactional in both
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                refuse_damaged(conn, blobs)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    except DBAPIError as err:
        raise DatabaseError(f"could not migrate the library database: {err.orig}") from err


class Database:
    """An engine plus read/write session helpers. Sessions expire nothing on commit: callers copy what
    they need into plain dataclasses before the session closes."""

    def __init__(self, url: str, *, blobs: Optional[Path] = None):
        self.url = url
        path = sqlite_file(url)
        if path is not None:
            from registry.snapshot import refuse_damaged_file

            refuse_damaged_file(path, blobs)  # before the engine's first connect writes to the file
        self.engine = make_engine(url)
        try:
            ensure_schema(self.engine, blobs)
        except BaseException:
            self.engine.dispose()  # refused: leave no pooled connection behind
            raise
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
