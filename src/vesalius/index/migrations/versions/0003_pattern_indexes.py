"""PostgreSQL: prefix-matching indexes for wildcard person-name queries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 00:55:00

A DICOM wild card ``DOE*`` becomes ``LIKE 'DOE%'``. PostgreSQL can use a plain btree index for
that only under the C collation; with the usual locale collations it needs an index with the
``text_pattern_ops`` operator class (seen in bench scenario 6: ~150 ms at a million instances
without it). SQLite's LIKE optimisation uses the existing indexes, so nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PATTERN_COLUMNS = (
    ("patients", "patient_name"),
    ("patients", "patient_name_folded"),
    ("patients", "patient_id"),
    ("studies", "referring_physician_name_folded"),
    ("studies", "accession_number"),
    ("studies", "study_description"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in PATTERN_COLUMNS:
        op.create_index(
            f"ix_{table}_{column}_pattern",
            table,
            [column],
            postgresql_ops={column: "text_pattern_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in PATTERN_COLUMNS:
        op.drop_index(f"ix_{table}_{column}_pattern", table_name=table)
