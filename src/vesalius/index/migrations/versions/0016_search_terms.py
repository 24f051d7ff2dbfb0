"""the study list's free text: search terms per study (helper: search)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 16:40:00

``search_terms`` holds each study's words (its patient's name components, patient ID,
accession number, description words), case-folded, keyed ``(term, study_pk)``: the study
list's ``q`` finds the studies with a term starting with each word by a range scan of the key
instead of ``LIKE '%word%'`` over every study. PostgreSQL compares the terms in the ``C``
collation (bytes), so the range is "starts with" in any database locale. The upgrade writes
the terms of the studies already stored, 2,000 at a time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TERM = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def upgrade() -> None:
    from vesalius.index.search import index_all

    op.create_table(
        "search_terms",
        sa.Column("term", TERM, nullable=False),
        sa.Column("study_pk", PK, nullable=False),
        sa.PrimaryKeyConstraint("term", "study_pk", name=op.f("pk_search_terms")),
    )
    op.create_index(op.f("ix_search_terms_study_pk"), "search_terms", ["study_pk"])
    index_all(op.get_bind())


def downgrade() -> None:
    op.drop_index(op.f("ix_search_terms_study_pk"), table_name="search_terms")
    op.drop_table("search_terms")
