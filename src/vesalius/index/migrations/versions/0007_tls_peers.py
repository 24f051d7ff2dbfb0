"""DIMSE over TLS: what the peers table needs (helper: tls)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 12:00:00

Reserved for issue 14; filled in by the work named above.
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
