"""instance metadata for WADO-RS

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_metadata",
        sa.Column(
            "instance_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("json", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_pk"],
            ["instances.pk"],
            name=op.f("fk_instance_metadata_instance_pk_instances"),
        ),
        sa.PrimaryKeyConstraint("instance_pk", name=op.f("pk_instance_metadata")),
    )


def downgrade() -> None:
    op.drop_table("instance_metadata")
