"""Alembic migrations of the registry schema (shipped in the package; applied by ``registry.db``)."""
