"""known remote AEs (peers) shared by every node

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peers",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("permissions", sa.String(), server_default="", nullable=False),
        sa.Column("source", sa.String(16), server_default="admin", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_peers")),
    )
    op.create_index(op.f("ix_peers_name"), "peers", ["name"], unique=True)
    op.create_index(op.f("ix_peers_ae_title"), "peers", ["ae_title"])


def downgrade() -> None:
    op.drop_index(op.f("ix_peers_ae_title"), table_name="peers")
    op.drop_index(op.f("ix_peers_name"), table_name="peers")
    op.drop_table("peers")
