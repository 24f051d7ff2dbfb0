"""The study list's free text: search terms kept per study, matched by prefix.

Each study has its terms in ``search_terms``: the case-folded components and words of its
patient's name (PS3.5 6.2: ``^`` between components, ``=`` between the alphabetic, ideographic
and phonetic groups), the patient ID, the accession number and the words of the study
description; a term with punctuation is kept whole and in its pieces (``CT-THORAX``, ``CT``,
``THORAX``), a term with accents also without them (``MÜLLER``, ``MULLER``). A word of the
search matches a study when one of the study's terms *starts* with it, a range scan of the
table's key; several words must all match.

A study made by ingest is only noted in ``search_backlog`` (one short row appended: writing its
terms in the instance's transaction cost single-instance studies 12-24% of their ingest time
on SQLite, one B-tree page per term); the search indexer (``services/search_index.py``) writes
the terms of the noted studies in batches, off the ingest path, and a search matches the
studies still noted by their values, here in Python, with the same rules. When a study's
patient or its own attributes change (corrections, a replaced instance) its terms are
rewritten at once. The terms go with the study.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, insert, or_, select
from sqlalchemy.engine import Connection

from vesalius.dicom.values import fold
from vesalius.index.prepared import Prepared
from vesalius.index.schema import TERM_LENGTH, patients, search_backlog, search_terms, studies

#: What separates the components and words of a value (PS3.5 6.2 for person names).
_SEPARATORS = re.compile(r"[\s^=]+")
_PIECES = re.compile(r"[^\W_]+")  # letters and digits
#: Above every character: ``[word, word + _LAST)`` holds exactly the terms starting with word
#: when terms compare as bytes (UTF-8 order is code point order).
_LAST = "\U0010ffff"


def unaccented(word: str) -> str:
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


def value_words(value: str) -> Iterator[str]:
    """The words of ``value``, case-folded, without the punctuation around them; a word with
    punctuation inside is followed by its pieces (``CT-THORAX``, ``CT``, ``THORAX``); the
    study list's free text and its ``description`` filter (``index/description.py``) both
    split values so."""
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
        for word in value_words(value):
            found.add(word)
            found.add(unaccented(word))
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


def matching(
    conn: Connection, words: Sequence[str], study_pk: ColumnElement[Any]
) -> ColumnElement[bool]:
    """The condition that ``study_pk`` matches every word: each word starts one of its terms,
    or it is one of the studies in the backlog whose values match (:func:`backlog_matches`)."""
    term = search_terms.c.term
    indexed = and_(
        *[
            study_pk.in_(select(search_terms.c.study_pk).where(term >= word, term < word + _LAST))
            for word in words
        ]
    )
    pending = backlog_matches(conn, words)
    return or_(indexed, study_pk.in_(pending)) if pending else indexed


def _starts(terms: set[str], words: Sequence[str]) -> bool:
    return all(any(t.startswith(w) for t in terms) for w in words)


def backlog_matches(conn: Connection, words: Sequence[str]) -> list[int]:
    """The studies of the backlog (terms not written yet) that match every word, by their
    values: the rule of :func:`matching`, in Python. The backlog is what ingest made since the
    indexer's last batch, normally a few studies."""
    found = _studies(conn, studies.c.pk.in_(select(search_backlog.c.study_pk)))
    return [pk for pk, terms in found if _starts(terms, words)]


def _studies(conn: Connection, where: ColumnElement[bool]) -> Iterator[tuple[int, set[str]]]:
    """Each study matching ``where`` with its terms, from its values."""
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
        yield int(pk), terms_of(name, pid, accession, description)


def _rows(conn: Connection, where: ColumnElement[bool]) -> Iterator[dict[str, Any]]:
    for pk, terms in _studies(conn, where):
        for term in sorted(terms):
            yield {"term": term, "study_pk": pk}


def _write(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    batch = list(rows)
    if batch:
        conn.execute(insert(search_terms), batch)
    return len(batch)


_NOTE_STUDY = Prepared(insert(search_backlog).values(study_pk=bindparam("study_pk")))


def note_study(conn: Connection, study_pk: int) -> None:
    """Note the study ``study_pk``, just made, in the backlog: the indexer writes its terms
    (ingest: the statement compiled once, run on the driver's cursor,
    :mod:`vesalius.index.prepared`)."""
    _NOTE_STUDY.run(conn, {"study_pk": study_pk})


def index_backlog(conn: Connection, limit: int | None = 1000) -> int:
    """Write the terms of up to ``limit`` studies of the backlog (None: all) and take them off
    it; the number of studies done. On PostgreSQL the rows are locked and those another
    node's indexer holds are skipped, so two indexers never write the same study's terms."""
    stmt = select(search_backlog.c.study_pk).order_by(search_backlog.c.study_pk)
    if limit is not None:
        stmt = stmt.limit(limit)
    pks = [int(pk) for pk in conn.execute(stmt.with_for_update(skip_locked=True)).scalars()]
    index_studies(conn, pks)  # which takes them off the backlog
    return len(pks)


def forget(conn: Connection, study_pks: Sequence[int]) -> None:
    """Remove the terms of these studies (removed ones), and their backlog rows: those first,
    the order in which an indexer's batch locks them (no deadlock with a correction on
    PostgreSQL)."""
    if study_pks:
        pks = list(study_pks)
        conn.execute(delete(search_backlog).where(search_backlog.c.study_pk.in_(pks)))
        conn.execute(delete(search_terms).where(search_terms.c.study_pk.in_(pks)))


def index_studies(conn: Connection, study_pks: Sequence[int]) -> None:
    """(Re)write the terms of these studies from their rows (studies of the backlog, or
    changed ones), and take them off the backlog."""
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
