"""corrections of patient and study attributes, previous file versions kept (helper: changes)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 15:40:00

Reserved by the issue 15 groundwork; its helper fills it in (and schema.py's section).
"""

from __future__ import annotations

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
