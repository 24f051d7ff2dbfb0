"""DIMSE over TLS: what the peers table needs (helper: tls)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 12:00:00

Peers called over TLS, and the client certificate Common Name that names a peer over
mutual TLS (issue 14).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.add_column(sa.Column("tls", sa.Boolean(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("certificate_subject", sa.String(), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.drop_column("certificate_subject")
        batch.drop_column("tls")
