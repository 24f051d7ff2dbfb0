"""The study list's free text: search terms kept per study, matched by prefix.

Each study has its terms in ``search_terms``: the case-folded components and words of its
patient's name (PS3.5 6.2: ``^`` between components, ``=`` between the alphabetic, ideographic
and phonetic groups), the patient ID, the accession number and the words of the study
description; a term with punctuation is kept whole and in its pieces (``CT-THORAX``, ``CT``,
``THORAX``), a term with accents also without them (``MÜLLER``, ``MULLER``). A word of the
search matches a study when one of the study's terms *starts* with it, a range scan of the
table's key; several words must all match. The terms are written when a study is made or its
patient's or its own attributes change (ingest, corrections), never per instance, and go with
the study.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, insert, select
from sqlalchemy.engine import Connection

from vesalius.dicom.values import fold
from vesalius.index.prepared import Prepared
from vesalius.index.schema import TERM_LENGTH, patients, search_terms, studies

#: What separates the components and words of a value (PS3.5 6.2 for person names).
_SEPARATORS = re.compile(r"[\s^=]+")
_PIECES = re.compile(r"\w+")
#: Above every character: ``[word, word + _LAST)`` holds exactly the terms starting with word
#: when terms compare as bytes (UTF-8 order is code point order).
_LAST = "\U0010ffff"


def _plain(word: str) -> str:
    """``word`` without its accents (NFKD without the combining marks)."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _trimmed(chunk: str) -> tuple[str, list[str]]:
    """``chunk`` without the punctuation around it, and its pieces (runs of letters and
    digits); empty when it has no letter or digit."""
    pieces = _PIECES.findall(chunk)
    if not pieces:
        return "", []
    start = chunk.index(pieces[0])
    return chunk[start : chunk.rindex(pieces[-1]) + len(pieces[-1])], pieces


def _words(value: str) -> Iterator[str]:
    for chunk in _SEPARATORS.split(fold(value)):
        word, pieces = _trimmed(chunk)
        if word:
            yield word
            if pieces != [word]:
                yield from pieces


def terms_of(name: str, patient_id: str, accession: str, description: str) -> set[str]:
    """The search terms of a study with these values (each at most ``TERM_LENGTH`` long)."""
    found: set[str] = set()
    for value in (name, patient_id, accession, description):
        for word in _words(value):
            found.add(word)
            found.add(_plain(word))
    found.update(fold(v.strip()) for v in (patient_id, accession))
    return {t[:TERM_LENGTH] for t in found if t}


def query_words(text: str) -> list[str]:
    """The words of a search: split as values are, folded, without the punctuation around
    them (``doe,`` is ``DOE``; a trailing ``*`` says nothing, every word is a prefix); words
    with no letter or digit are dropped."""
    found: list[str] = []
    for chunk in _SEPARATORS.split(fold(text)):
        word = _trimmed(chunk)[0][:TERM_LENGTH]
        if word and word not in found:
            found.append(word)
    return found


def matching(words: Sequence[str], study_pk: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    """One condition per word: ``study_pk`` has a term starting with it."""
    term = search_terms.c.term
    return [
        study_pk.in_(select(search_terms.c.study_pk).where(term >= word, term < word + _LAST))
        for word in words
    ]


def _rows(conn: Connection, where: ColumnElement[bool]) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            studies.c.pk,
            patients.c.patient_name,
            patients.c.patient_id,
            studies.c.accession_number,
            studies.c.study_description,
        )
        .select_from(studies.join(patients, studies.c.patient_pk == patients.c.pk))
        .where(where)
    )
    for pk, name, pid, accession, description in conn.execute(stmt):
        for term in sorted(terms_of(name, pid, accession, description)):
            yield {"term": term, "study_pk": int(pk)}


def _write(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    batch = list(rows)
    if batch:
        conn.execute(insert(search_terms), batch)
    return len(batch)


_INSERT_TERM = Prepared(
    insert(search_terms).values(term=bindparam("term"), study_pk=bindparam("study_pk"))
)


def add_study(
    conn: Connection, study_pk: int, name: str, patient_id: str, accession: str, description: str
) -> None:
    """Write the terms of the study ``study_pk``, just made, with these values (ingest: the
    statement compiled once, run on the driver's cursor, :mod:`vesalius.index.prepared`)."""
    terms = terms_of(name, patient_id, accession, description)
    _INSERT_TERM.run_many(conn, [{"term": t, "study_pk": study_pk} for t in sorted(terms)])


def forget(conn: Connection, study_pks: Sequence[int]) -> None:
    """Remove the terms of these studies (removed ones)."""
    if study_pks:
        conn.execute(delete(search_terms).where(search_terms.c.study_pk.in_(list(study_pks))))


def index_studies(conn: Connection, study_pks: Sequence[int]) -> None:
    """(Re)write the terms of these studies from their rows (a study made, or changed)."""
    if not study_pks:
        return
    forget(conn, study_pks)
    _write(conn, _rows(conn, studies.c.pk.in_(list(study_pks))))


def index_patient(conn: Connection, patient_pk: int) -> None:
    """(Re)write the terms of every study of the patient ``patient_pk`` (its name or ID
    changed)."""
    pks = conn.execute(select(studies.c.pk).where(studies.c.patient_pk == patient_pk))
    index_studies(conn, [int(pk) for pk in pks.scalars()])


def index_all(conn: Connection, batch: int = 2000) -> int:
    """Write the terms of every study, ``batch`` studies at a time, in key order (a new
    index, or the migration that made the table); the number of terms written."""
    written, last = 0, 0
    while True:
        pks = [
            int(pk)
            for pk in conn.execute(
                select(studies.c.pk).where(studies.c.pk > last).order_by(studies.c.pk).limit(batch)
            ).scalars()
        ]
        if not pks:
            return written
        written += _write(conn, _rows(conn, studies.c.pk.between(pks[0], pks[-1])))
        last = pks[-1]
