"""The weight a user prefers for an entry (``lora set NAME --weight W``): written into ``<lora:name:w>`` and
A1111 sidecars. Nullable: no entry has one until the user sets it.

Revision ID: 0007_preferred_weight
Revises: 0006_embeddings
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_preferred_weight"
down_revision = "0006_embeddings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapters", sa.Column("preferred_weight", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapters") as batch:
        batch.drop_column("preferred_weight")
