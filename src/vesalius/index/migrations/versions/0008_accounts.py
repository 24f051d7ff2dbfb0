"""users, groups, API tokens and login sessions (helper: accounts)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:00:00

Reserved for issue 14; filled in by the work named above.
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
