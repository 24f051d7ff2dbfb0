"""the change feed of studies deleted or corrected, for every node's live updates (helper: live)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 18:50:00

``study_changes`` gets a row per study in the transaction that deletes its instances or applies
or undoes a correction of it, with the study's access labels then; the live updates
(``GET /api/v1/events``) of every process and node read the rows since their last look through
the index on ``changed_at``, as they read ``jobs.updated_at``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "study_changes",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("study_uid", sa.String(), server_default="", nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("label_set", sa.Text(), server_default="", nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_study_changes")),
    )
    op.create_index(op.f("ix_study_changes_changed_at"), "study_changes", ["changed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_study_changes_changed_at"), table_name="study_changes")
    op.drop_table("study_changes")
