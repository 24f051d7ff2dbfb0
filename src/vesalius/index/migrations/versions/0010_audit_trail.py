"""the hash-chained audit trail (helper: audit)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 12:00:00

``audit_records`` holds one audit record a row (PS3.15 A.5 message inside its canonical JSON),
chained by SHA-256 to the row before; ``audit_subjects`` the patients and studies each names,
indexed for ``vesalius audit --patient/--study``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("message", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("who", sa.String(256), nullable=False),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_audit_records"),
    )
    op.create_index("ix_audit_records_time", "audit_records", ["time"])
    op.create_index("ix_audit_records_message", "audit_records", ["message"])
    op.create_index("ix_audit_records_who", "audit_records", ["who"])
    op.create_table(
        "audit_subjects",
        sa.Column("record_pk", PK, nullable=False),
        sa.Column("subject", sa.String(8), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_pk"],
            ["audit_records.pk"],
            name="fk_audit_subjects_record_pk_audit_records",
        ),
    )
    op.create_index("ix_audit_subjects_record_pk", "audit_subjects", ["record_pk"])
    op.create_index("ix_audit_subjects_subject_value", "audit_subjects", ["subject", "value"])


def downgrade() -> None:
    op.drop_table("audit_subjects")
    op.drop_table("audit_records")
