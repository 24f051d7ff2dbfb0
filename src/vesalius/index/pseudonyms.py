"""The pseudonym map (table ``pseudonyms``, migration 0011): what each de-identified study was,
for re-identification by authorised users (PS3.15 Annex E; the service checks ``admin``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.engine import Connection

from vesalius.index.schema import pseudonyms


@dataclass(frozen=True)
class PseudonymRow:
    """One de-identified study: the original and what it became."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    pseudonym: str
    study_uid: str
    new_study_uid: str
    date_offset: int
    options: str
    created_by: str
    created_at: datetime


_COLUMNS = (
    pseudonyms.c.patient_id,
    pseudonyms.c.issuer_of_patient_id,
    pseudonyms.c.patient_name,
    pseudonyms.c.pseudonym,
    pseudonyms.c.study_uid,
    pseudonyms.c.new_study_uid,
    pseudonyms.c.date_offset,
    pseudonyms.c.options,
    pseudonyms.c.created_by,
    pseudonyms.c.created_at,
)


def _row(found: Sequence[Any]) -> PseudonymRow:
    return PseudonymRow(*(tuple(found)))


def add_pseudonym(conn: Connection, row: PseudonymRow) -> None:
    conn.execute(insert(pseudonyms).values({c.name: getattr(row, c.name) for c in _COLUMNS}))


def find_pseudonyms(conn: Connection, key: str) -> list[PseudonymRow]:
    """The rows whose pseudonym or new Study Instance UID is ``key``, oldest first."""
    query = (
        select(*_COLUMNS)
        .where(or_(pseudonyms.c.pseudonym == key, pseudonyms.c.new_study_uid == key))
        .order_by(pseudonyms.c.pk)
    )
    return [_row(found) for found in conn.execute(query)]
