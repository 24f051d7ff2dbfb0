"""peers reachable over DICOMweb (a STOW-RS URL) for sends (helper: transfers)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 15:40:00

Reserved by the issue 15 groundwork; its helper fills it in (and schema.py's section).
"""

from __future__ import annotations

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
