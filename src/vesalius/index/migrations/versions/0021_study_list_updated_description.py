"""the study list: an index for the "updated" sort, the description's words (helper: listsort)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 19:00:00

``ix_studies_updated_at_pk`` serves the study list's ``-updated``/``updated`` sort and its
keyset pages (a sort of every study before). Ingest now moves ``updated_at`` at most once a
second per study, so storing an instance seldom changes an indexed column of its study.
``study_description_folded`` and ``study_description_words`` (``index/description.py``) serve
the ``description`` filter: a wild card pattern on the folded description, or word starts on the
words; the upgrade fills them for the studies already stored, 2,000 at a time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from vesalius.index.description import fill_columns

    op.add_column(
        "studies",
        sa.Column("study_description_folded", sa.String(), nullable=False, server_default=""),
    )
    op.add_column(
        "studies",
        sa.Column("study_description_words", sa.Text(), nullable=False, server_default=""),
    )
    op.create_index(op.f("ix_studies_updated_at_pk"), "studies", ["updated_at", "pk"])
    fill_columns(op.get_bind())


def downgrade() -> None:
    op.drop_index(op.f("ix_studies_updated_at_pk"), table_name="studies")
    # ALTER TABLE ... DROP COLUMN, SQLite's own since 3.35: a batch copy of ``studies`` would
    # drop the table the series refer to, which its foreign keys refuse once studies exist.
    op.drop_column("studies", "study_description_words")
    op.drop_column("studies", "study_description_folded")
