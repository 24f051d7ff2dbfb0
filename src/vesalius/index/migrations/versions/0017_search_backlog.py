"""study search terms written off the ingest commit: the search backlog

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 19:00:00

``search_backlog`` lists the studies made whose search terms are not written yet: ingest
appends a study's key there instead of writing its terms in the instance's transaction, and
the search indexer writes the terms in batches (``services/search_index.py``). Existing
studies all have their terms (0016 wrote them), so the table starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "search_backlog",
        sa.Column("study_pk", PK, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("study_pk", name=op.f("pk_search_backlog")),
    )


def downgrade() -> None:
    from vesalius.index.search import index_backlog

    index_backlog(op.get_bind(), limit=None)  # 0016's table is complete again
    op.drop_table("search_backlog")
