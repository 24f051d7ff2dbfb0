"""who sent each instance, and when, for statistics (helper: statistics)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 15:40:00

``instances.source_ae`` (since 0001) now names every sender, not only DIMSE callers: the
calling AE title of a C-STORE, the user of a STOW-RS request, an upload or an import (the
ingest service writes it from the identity, in the insert it already does). Statistics read
instances by arrival time (ingest per hour and day, the storage forecast) and sum their sizes:
one index on ``(received_at, size)`` answers those from the index alone. ``received_at`` only
grows, so the index is appended to at its end: cheap at ingest.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_instances_received_at_size"), "instances", ["received_at", "size"])


def downgrade() -> None:
    op.drop_index(op.f("ix_instances_received_at_size"), table_name="instances")
