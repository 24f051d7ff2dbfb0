"""the blob store of each instance

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 09:00:00

Each instance row records the id of the blob store that holds its file, so reads and deletes
resolve the store by the row (``storage/stores.py``). Every row stored before lives in the
folder store under ``<data_dir>/storage``, whose id is ``folder``: the server default fills
them in (PostgreSQL 11+ and SQLite add such a column without rewriting the table). The notes
of blobs left to delete (``deleted_blobs``), written with an empty store until now, name the
folder store too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column("blob_store", sa.String(32), server_default="folder", nullable=False),
    )
    op.execute("UPDATE deleted_blobs SET store = 'folder' WHERE store = ''")
    with op.batch_alter_table("deleted_blobs") as batch:
        batch.alter_column(
            "store", existing_type=sa.String(32), existing_nullable=False, server_default="folder"
        )


def downgrade() -> None:
    with op.batch_alter_table("deleted_blobs") as batch:
        batch.alter_column(
            "store", existing_type=sa.String(32), existing_nullable=False, server_default=""
        )
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("blob_store")
