"""Remember the size and mtime of in-place files (a rescan re-hashes only what changed); user family override.

Revision ID: 0002_in_place_stats
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_in_place_stats"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: files registered before this revision have no stat yet, so their next rescan hashes them once
    op.add_column("files", sa.Column("size", sa.BigInteger(), nullable=True))
    op.add_column("files", sa.Column("mtime_ns", sa.BigInteger(), nullable=True))
    op.add_column("adapters", sa.Column("family_user", sa.String(16), nullable=True))
    op.create_index("ix_adapters_family_user", "adapters", ["family_user"])


def downgrade() -> None:
    with op.batch_alter_table("adapters") as batch:
        batch.drop_index("ix_adapters_family_user")
        batch.drop_column("family_user")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("mtime_ns")
        batch.drop_column("size")
