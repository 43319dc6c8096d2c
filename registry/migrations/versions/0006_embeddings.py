"""Entries of two kinds: ``lora`` (every entry so far) and ``embedding`` (textual inversion), with an
embedding's vector count and widths (768, 1024, 768+1280), which say which bases it fits.

Revision ID: 0006_embeddings
Revises: 0005_civitai
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_embeddings"
down_revision = "0005_civitai"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # not null with a server default: every entry made before this revision is a LoRA
    op.add_column("adapters", sa.Column("kind", sa.String(16), nullable=False, server_default="lora"))
    op.add_column("adapters", sa.Column("vectors", sa.Integer(), nullable=True))
    op.add_column("adapters", sa.Column("widths", sa.JSON(), nullable=True))
    op.create_index("ix_adapters_kind", "adapters", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_adapters_kind", table_name="adapters")
    with op.batch_alter_table("adapters") as batch:
        batch.drop_column("widths")
        batch.drop_column("vectors")
        batch.drop_column("kind")
