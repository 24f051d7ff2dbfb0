"""per-study access labels, label grants and ingest rules (helper: labels)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00

Three tables (``index/schema.py``, "issue 14, labels"): ``study_labels`` (a study's labels,
removed with the study), ``label_grants`` (labels granted to users, groups and peers) and
``label_rules`` (labels set at ingest from an attribute of the arriving instance); and
``studies.label_set``, the study's labels between spaces, which the query filter tests
instead of probing ``study_labels``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("label_set", sa.Text(), server_default="", nullable=False))
    op.create_table(
        "study_labels",
        sa.Column(
            "study_pk",
            PK,
            sa.ForeignKey(
                "studies.pk", name="fk_study_labels_study_pk_studies", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("label", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("study_pk", "label", name="pk_study_labels"),
    )
    op.create_index("ix_study_labels_label", "study_labels", ["label"])
    op.create_table(
        "label_grants",
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("grantee_kind", sa.String(8), nullable=False),
        sa.Column("grantee", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("label", "grantee_kind", "grantee", name="pk_label_grants"),
    )
    op.create_table(
        "label_rules",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("keyword", sa.String(64), nullable=False),
        sa.Column("pattern", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_label_rules"),
    )


def downgrade() -> None:
    op.drop_table("label_rules")
    op.drop_table("label_grants")
    op.drop_index("ix_study_labels_label", table_name="study_labels")
    op.drop_table("study_labels")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("label_set")
