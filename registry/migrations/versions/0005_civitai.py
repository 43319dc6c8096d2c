"""What a service (Civitai) says about an entry, its base-model label, the entry it updates, its preview
images, and a cache of lookup answers (including "not found") so that `lora identify` works offline.

Revision ID: 0005_civitai
Revises: 0004_source_etag
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_civitai"
down_revision = "0004_source_etag"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: entries made before this revision have no label and follow no other entry
    op.add_column("adapters", sa.Column("label", sa.String(64), nullable=True))
    op.add_column("adapters", sa.Column("label_source", sa.String(64), nullable=True))
    # no foreign key (adding one to SQLite means rebuilding the table); an older entry's id is never reused
    # while a newer one refers to it, and a removed one simply reads as no previous version
    op.add_column("adapters", sa.Column("previous_id", sa.Integer(), nullable=True))
    op.create_index("ix_adapters_label", "adapters", ["label"])
    op.create_table(
        "remote_facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=True),
        sa.Column("version_id", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name="fk_remote_facts_adapter_id_adapters",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_remote_facts"),
        sa.UniqueConstraint("adapter_id", "service", name="uq_remote_facts_adapter_service"),
    )
    op.create_index("ix_remote_facts_adapter_id", "remote_facts", ["adapter_id"])
    op.create_index("ix_remote_facts_model_id", "remote_facts", ["model_id"])
    op.create_table(
        "previews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("suffix", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name="fk_previews_adapter_id_adapters",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_previews"),
    )
    op.create_index("ix_previews_adapter_id", "previews", ["adapter_id"])
    op.create_table(
        "lookups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=True),    # NULL: the service said "not found"
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lookups"),
        sa.UniqueConstraint("service", "key", name="uq_lookups_service_key"),
    )


def downgrade() -> None:
    op.drop_table("lookups")
    op.drop_index("ix_previews_adapter_id", "previews")
    op.drop_table("previews")
    op.drop_index("ix_remote_facts_model_id", "remote_facts")
    op.drop_index("ix_remote_facts_adapter_id", "remote_facts")
    op.drop_table("remote_facts")
    with op.batch_alter_table("adapters") as batch:
        batch.drop_index("ix_adapters_label")
        batch.drop_column("previous_id")
        batch.drop_column("label_source")
        batch.drop_column("label")
