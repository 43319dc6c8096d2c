"""The schema revision this code expects, known without importing Alembic (a test keeps it in step with
``migrations/versions``). Start-up compares the database's ``alembic_version`` with ``HEAD`` in one SELECT
and runs Alembic only when they differ."""

from __future__ import annotations

REVISIONS = ("0001_initial", "0002_in_place_stats", "0003_source_stats", "0004_source_etag",
             "0005_civitai", "0006_embeddings", "0007_preferred_weight")   # oldest first
HEAD = REVISIONS[-1]
