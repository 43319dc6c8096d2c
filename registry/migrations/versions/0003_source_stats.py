"""Remember the size and mtime of a pickle registered in place (its converted copy is what the store
keeps), so a rescan skips an unchanged pickle without re-reading and re-converting it.

Revision ID: 0003_source_stats
Revises: 0002_in_place_stats
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_source_stats"
down_revision = "0002_in_place_stats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: only local sources scanned in place have a stat; older rows get one on their next rescan
    op.add_column("sources", sa.Column("size", sa.BigInteger(), nullable=True))
    op.add_column("sources", sa.Column("mtime_ns", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("mtime_ns")
        batch.drop_column("size")
