"""The study list's ``description`` filter: words of the Study Description, or a DICOM pattern.

Two columns of each study, written with its row (the INSERT of a new study, the UPDATE of a
replaced instance or a correction: never an extra statement or an extra index per stored
instance), serve it:

* ``study_description_folded``: the description case-folded, for a pattern with the wild cards
  ``*`` and ``?`` (PS3.4 C.2.2.2.4), matched against the whole description case-insensitively.
* ``study_description_words``: the description's words, case-folded, each between spaces
  (`` CT-THORAX CT THORAX W CONTRAST `` for ``CT-Thorax w/ contrast``: punctuation around a
  word is dropped); a word with punctuation inside is also kept in its pieces,
  a word with accents also without them. A search word *starts* a word of the description when
  ``LIKE '% WORD%'`` holds on it: no word splitting in SQL (SQLite has no Unicode case folding
  either), the same rules on both backends.

Plain text (no wild card) is split into words the same way and each must start a word of the
description: ``thorax`` and ``thor`` find ``CT-Thorax w/ contrast``, ``ct thorax`` too; ``hora``
does not (``*hora*`` does). The test is a scan of the studies (an index would cost a B-tree
page per stored study); ``browse.narrowed`` takes the keys of a rarely matched description
first, so the list does not test every study in its own order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, select, update
from sqlalchemy.engine import Connection

from vesalius.dicom.values import fold
from vesalius.index.matching import ESCAPE, has_wildcard, like_pattern
from vesalius.index.schema import studies
from vesalius.index.search import query_words, unaccented, value_words


def description_columns(description: str) -> dict[str, str]:
    """The derived columns of a study with this Study Description."""
    found: list[str] = []
    for word in value_words(description):
        for form in (word, unaccented(word)):
            if form not in found:
                found.append(form)
    return {
        "study_description_folded": fold(description),
        "study_description_words": f" {' '.join(found)} " if found else "",
    }


def _escaped(word: str) -> str:
    return "".join(ESCAPE + c if c in ("%", "_", ESCAPE) else c for c in word)


def description_condition(text: str) -> ColumnElement[bool] | None:
    """The studies whose description matches ``text``: a DICOM pattern when it holds ``*`` or
    ``?`` (the whole description, case-insensitively; ``*`` alone is universal, C.2.2.2.3),
    else each of its words starting a word of the description (None: no condition)."""
    text = text.strip()
    if has_wildcard(text):
        if text.strip("*") == "":
            return None
        return studies.c.study_description_folded.like(like_pattern(fold(text)), escape=ESCAPE)
    column = studies.c.study_description_words
    conditions = [column.like(f"% {_escaped(w)}%", escape=ESCAPE) for w in query_words(text)]
    return and_(*conditions) if conditions else None


def fill_columns(conn: Connection, batch: int = 2000) -> int:
    """Write the derived columns of every study, ``batch`` at a time in key order (the
    migration that made them); the number of studies."""
    done, last = 0, 0
    stmt = (
        update(studies)
        .where(studies.c.pk == bindparam("key"))
        .values(
            study_description_folded=bindparam("folded"),
            study_description_words=bindparam("words"),
        )
    )
    while True:
        rows = conn.execute(
            select(studies.c.pk, studies.c.study_description)
            .where(studies.c.pk > last)
            .order_by(studies.c.pk)
            .limit(batch)
        ).all()
        if not rows:
            return done
        values: list[dict[str, Any]] = []
        for pk, description in rows:
            derived = description_columns(description or "")
            values.append(
                {
                    "key": pk,
                    "folded": derived["study_description_folded"],
                    "words": derived["study_description_words"],
                }
            )
        conn.execute(stmt, values)
        done += len(rows)
        last = int(rows[-1][0])
