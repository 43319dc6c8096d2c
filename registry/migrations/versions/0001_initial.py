"""Initial schema: blobs, in-place files (path only), adapters (+ metadata), sources, tags, trigger words, base models.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("tensor_sha256", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blobs"),
        sa.UniqueConstraint("sha256", name="uq_blobs_sha256"),
    )
    op.create_index("ix_blobs_tensor_sha256", "blobs", ["tensor_sha256"])
    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_files_blob_id_blobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
        sa.UniqueConstraint("path", name="uq_files_path"),
    )
    op.create_index("ix_files_blob_id", "files", ["blob_id"])
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("blob_id", sa.Integer(), nullable=False),
        sa.Column("container", sa.String(16), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("family", sa.String(16), nullable=False),
        sa.Column("family_evidence", sa.Text(), nullable=False),
        sa.Column("components", sa.JSON(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("ranks", sa.JSON(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=True),
        sa.Column("dtype", sa.String(16), nullable=True),
        sa.Column("n_tensors", sa.Integer(), nullable=False),
        sa.Column("n_modules", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.JSON(), nullable=False),
        sa.Column("license", sa.Text(), nullable=True),
        sa.Column("license_source", sa.Text(), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_adapters_blob_id_blobs", ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name="pk_adapters"),
        sa.UniqueConstraint("blob_id", name="uq_adapters_blob_id"),
        sa.UniqueConstraint("name", name="uq_adapters_name"),
    )
    op.create_index("ix_adapters_format", "adapters", ["format"])
    op.create_index("ix_adapters_family", "adapters", ["family"])
    op.create_index("ix_adapters_rank", "adapters", ["rank"])
    op.create_index("ix_adapters_added_at", "adapters", ["added_at"])
    op.create_table(
        "adapter_metadata",
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name="fk_adapter_metadata_adapter_id_adapters",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("adapter_id", name="pk_adapter_metadata"),
    )
    for table, extra in (
        ("sources", [sa.Column("kind", sa.String(16), nullable=False), sa.Column("path", sa.Text()),
                     sa.Column("url", sa.Text()), sa.Column("repo", sa.Text()), sa.Column("revision", sa.String(64)),
                     sa.Column("filename", sa.Text()), sa.Column("original_sha256", sa.String(64)),
                     sa.Column("added_at", sa.DateTime(), nullable=False)]),
        ("tags", [sa.Column("tag", sa.String(64), nullable=False), sa.Column("source", sa.String(64), nullable=False),
                  sa.UniqueConstraint("adapter_id", "tag", name="uq_tags_adapter_tag")]),
        ("trigger_words", [sa.Column("word", sa.Text(), nullable=False),
                           sa.Column("source", sa.String(64), nullable=False),
                           sa.Column("position", sa.Integer(), nullable=False),
                           sa.UniqueConstraint("adapter_id", "word", "source", name="uq_trigger_words_adapter_word")]),
        ("base_models", [sa.Column("model_id", sa.String(256), nullable=False),
                         sa.Column("source", sa.String(64), nullable=False),
                         sa.Column("position", sa.Integer(), nullable=False),
                         sa.UniqueConstraint("adapter_id", "model_id", "source", name="uq_base_models_adapter_model")]),
    ):
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("adapter_id", sa.Integer(), nullable=False),
            *extra,
            sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name=f"fk_{table}_adapter_id_adapters",
                                    ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        )
        op.create_index(f"ix_{table}_adapter_id", table, ["adapter_id"])
    op.create_index("ix_tags_tag", "tags", ["tag"])
    op.create_index("ix_base_models_model_id", "base_models", ["model_id"])


def downgrade() -> None:
    for table in ("base_models", "trigger_words", "tags", "sources", "adapter_metadata", "adapters", "files",
                  "blobs"):
        op.drop_table(table)
