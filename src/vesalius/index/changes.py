"""The change feed of studies deleted or corrected (table ``study_changes``): written in the
transaction that makes the change, read by the live updates of every process and node
(``services/live.py``) by time, as they read the jobs, and pruned after a while.

A row carries the study's access labels as they were (``studies.label_set``'s form): a deleted
study's can no longer be looked up, and the live updates tell each listener only of the studies
it may see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.engine import Connection

from vesalius.index.schema import studies, study_changes

#: Rows read per statement while catching up.
PAGE = 1000


@dataclass(frozen=True)
class StudyChange:
    """One row of the feed."""

    pk: int
    study_uid: str
    change: str
    labels: frozenset[str]
    changed_at: datetime


def label_sets(conn: Connection, study_uids: Iterable[str]) -> dict[str, str]:
    """``studies.label_set`` of each of these studies that exists (read before a deletion)."""
    wanted = tuple(sorted(set(study_uids)))
    if not wanted:
        return {}
    query = select(studies.c.study_uid, studies.c.label_set).where(studies.c.study_uid.in_(wanted))
    return {str(uid): str(found or "") for uid, found in conn.execute(query)}


def note(conn: Connection, change: str, labels: Mapping[str, str]) -> None:
    """Note ``change`` (``deleted``, ``corrected``) of each study of ``labels`` (study UID ->
    its ``label_set``), in the caller's transaction."""
    if labels:
        at = datetime.now(UTC)
        conn.execute(
            insert(study_changes),
            [
                {"study_uid": uid, "change": change, "label_set": found, "changed_at": at}
                for uid, found in sorted(labels.items())
            ],
        )


def note_existing(conn: Connection, change: str, study_uids: Iterable[str]) -> None:
    """:func:`note` for the studies among ``study_uids`` that exist (their labels read now)."""
    note(conn, change, label_sets(conn, study_uids))


def since(conn: Connection, when: datetime) -> list[StudyChange]:
    """The changes noted at or after ``when``, oldest first (read a page at a time through
    the index on ``changed_at``)."""
    found: list[StudyChange] = []
    after: tuple[datetime, int] | None = None
    while True:
        query = select(study_changes).where(study_changes.c.changed_at >= when)
        if after is not None:
            query = query.where(
                or_(
                    study_changes.c.changed_at > after[0],
                    and_(study_changes.c.changed_at == after[0], study_changes.c.pk > after[1]),
                )
            )
        query = query.order_by(study_changes.c.changed_at, study_changes.c.pk).limit(PAGE)
        rows = conn.execute(query).all()
        for pk, uid, change, label_set, at in rows:
            found.append(
                StudyChange(int(pk), str(uid), str(change), _labels(label_set), _aware(at))
            )
        if len(rows) < PAGE:
            return found
        after = (rows[-1].changed_at, int(rows[-1].pk))


def prune(conn: Connection, before: datetime) -> int:
    """Remove the changes noted before ``before``; how many."""
    return int(
        conn.execute(delete(study_changes).where(study_changes.c.changed_at < before)).rowcount
    )


def _labels(label_set: str | None) -> frozenset[str]:
    return frozenset(str(label_set or "").split())


def _aware(when: datetime) -> datetime:
    """SQLite gives the time back without its zone: it was written in UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
