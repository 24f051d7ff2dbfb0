"""the statistics snapshot (helper: stats)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 19:00:00

``GET /api/v1/statistics`` read every instance row for the bytes stored and the top senders,
and every series for the modality mix (1.5-2 s at a million instances on SQLite).
``statistics_snapshots`` keeps those aggregates as of a cutoff in arrival time; a reader adds
what arrived since through the ``received_at`` index (``index/statistics_snapshot.py``).
Ingest does not write it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "statistics_snapshots",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_statistics_snapshots")),
    )


def downgrade() -> None:
    op.drop_table("statistics_snapshots")
