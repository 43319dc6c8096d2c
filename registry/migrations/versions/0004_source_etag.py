"""Keep a URL source's ETag, so a re-pull of the same URL can ask the server whether it changed and be a
no-op when it did not.

Revision ID: 0004_source_etag
Revises: 0003_source_stats
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_source_etag"
down_revision = "0003_source_stats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: only URL sources have one, and only when the server sent it
    op.add_column("sources", sa.Column("etag", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("etag")
