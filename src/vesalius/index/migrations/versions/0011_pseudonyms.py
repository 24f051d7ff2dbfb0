"""the de-identification pseudonym map (helper: deid)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:00:00

The pseudonym map of de-identification (PS3.15 Annex E): each de-identified study's original
patient (ID, issuer, name) and Study Instance UID beside its pseudonym and new Study Instance
UID, the date offset used, who made it and when; read back only by administrators.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pseudonyms",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("patient_id", sa.String(), server_default="", nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(), server_default="", nullable=False),
        sa.Column("patient_name", sa.String(), server_default="", nullable=False),
        sa.Column("pseudonym", sa.String(), server_default="", nullable=False),
        sa.Column("study_uid", sa.String(), server_default="", nullable=False),
        sa.Column("new_study_uid", sa.String(), server_default="", nullable=False),
        sa.Column("date_offset", sa.Integer(), server_default="0", nullable=False),
        sa.Column("options", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.String(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pseudonyms")),
    )
    op.create_index(op.f("ix_pseudonyms_pseudonym"), "pseudonyms", ["pseudonym"])
    op.create_index(op.f("ix_pseudonyms_new_study_uid"), "pseudonyms", ["new_study_uid"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pseudonyms_new_study_uid"), table_name="pseudonyms")
    op.drop_index(op.f("ix_pseudonyms_pseudonym"), table_name="pseudonyms")
    op.drop_table("pseudonyms")
