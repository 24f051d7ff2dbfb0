"""per-study access labels, label grants and ingest rules (helper: labels)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00

Reserved for issue 14; filled in by the work named above.
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
