"""peers reachable over DICOMweb (a STOW-RS URL) for sends (helper: jobs-peers)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 15:40:00

A peer may also be reached over DICOMweb (PS3.18): ``dicomweb_url`` is its service's base
URL (STOW-RS appends ``/studies``), or null for a DIMSE-only peer. The jobs get an index on
``updated_at``: the live updates (``GET /api/v1/events``) read the jobs changed since their
last look, once a second.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.add_column(sa.Column("dicomweb_url", sa.Text(), nullable=True))
    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_updated_at", table_name="jobs")
    with op.batch_alter_table("peers") as batch:
        batch.drop_column("dicomweb_url")
