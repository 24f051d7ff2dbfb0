"""the hash-chained audit trail (helper: audit)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 12:00:00

Reserved for issue 14; filled in by the work named above.
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
