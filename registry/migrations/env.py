"""Alembic environment. At run time ``registry.db`` passes an open connection (already inside a
transaction that holds the migration lock); from the alembic command line the URL comes from the
environment the same way lora finds it."""

from __future__ import annotations

from alembic import context

from registry.models import Base

config = context.config
connection = config.attributes.get("connection")


def _run(conn) -> None:
    context.configure(connection=conn, target_metadata=Base.metadata, compare_type=True,
                      render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # developer use: `alembic -c registry/migrations/alembic.ini ...`
    from sqlalchemy import create_engine

    from registry.home import database_url

    with create_engine(database_url()).begin() as conn:
        _run(conn)
