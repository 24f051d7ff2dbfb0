"""corrections of patient and study attributes, previous file versions kept (helper: changes)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 15:40:00

``corrections`` records each correction of patient and study attributes (what changed, the index
values before and after, its state); ``correction_files`` each file it rewrote, with the blob of
the previous version, kept for ``corrections.keep_days`` so the correction can be undone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), server_default="", nullable=False)


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        _text("study_uid"),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("previous", sa.Text(), nullable=False),
        sa.Column("applied", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("job_pk", PK, nullable=True),
        _text("created_by"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_corrections")),
    )
    op.create_index(op.f("ix_corrections_study_uid"), "corrections", ["study_uid"])
    op.create_index(op.f("ix_corrections_state_created_at"), "corrections", ["state", "created_at"])
    op.create_table(
        "correction_files",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("correction_pk", PK, nullable=False),
        sa.Column("instance_pk", PK, nullable=False),
        sa.Column("old_blob_key", sa.String(64), nullable=False),
        sa.Column("old_blob_store", sa.String(32), nullable=False),
        sa.Column("old_size", sa.BigInteger(), nullable=False),
        sa.Column("old_sha256", sa.String(64), nullable=False),
        _text("old_charset"),
        sa.Column("new_blob_key", sa.String(64), nullable=False),
        sa.Column("new_blob_store", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(
            ["correction_pk"],
            ["corrections.pk"],
            name=op.f("fk_correction_files_correction_pk_corrections"),
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_correction_files")),
    )
    op.create_index(
        op.f("ix_correction_files_correction_pk_instance_pk"),
        "correction_files",
        ["correction_pk", "instance_pk"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_correction_files_correction_pk_instance_pk"), table_name="correction_files"
    )
    op.drop_table("correction_files")
    op.drop_index(op.f("ix_corrections_state_created_at"), table_name="corrections")
    op.drop_index(op.f("ix_corrections_study_uid"), table_name="corrections")
    op.drop_table("corrections")
