"""the de-identification pseudonym map (helper: deid)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:00:00

Reserved for issue 14; filled in by the work named above.
"""

from __future__ import annotations

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
