"""who sent each instance, for statistics (helper: statistics)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 15:40:00

Reserved by the issue 15 groundwork; its helper fills it in (and schema.py's section).
"""

from __future__ import annotations

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
