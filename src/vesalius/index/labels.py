"""Per-study access labels in the index: the visibility condition every query and retrieve
statement carries, and the tables behind it (``study_labels``, ``label_grants``,
``label_rules``), read and written in one place.

Visibility (``services/policy.py``, :meth:`Policy.visible_labels`): ``None`` sees every study;
a set of labels sees a study that has no label, or has one of the set. The condition tests
``studies.label_set`` (the study's labels, each between spaces; empty for none), inside the
same statement as the query it restricts: a column of the row the query reads anyway, so an
unlabeled study costs a comparison and a labeled one a substring test, never a probe of
``study_labels``. ``label_set`` is kept here from ``study_labels`` (the labels as listed and
counted) in the transaction that changes them (:func:`add_labels`, :func:`remove_labels`, the
study's row locked; a deleted study takes both with it).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from vesalius.index.schema import label_grants, label_rules, studies, study_labels

#: Who a label can be granted to.
GRANTEE_KINDS = ("user", "group", "peer")

#: Visible labels: None for "every study".
Labels = frozenset[str] | None


#: The studies a patient-level condition looks through (built once: aliases are costly).
_OWN = studies.alias("visible_studies")
_COUNTED = studies.alias("counted_studies")


def visible(labels: Labels, study_pk: Any) -> ColumnElement[bool] | None:
    """The condition "the study ``study_pk`` (a column) is visible with ``labels``", or None
    when ``labels`` is None (no condition). Built once per set of labels and column (an
    identity asks with the same set each time), so a query pays for its SQL only."""
    if labels is None:
        return None
    return _visible(labels, study_pk)


@functools.lru_cache(maxsize=512)
def _visible(labels: frozenset[str], study_pk: Any) -> ColumnElement[bool]:
    # The study's own row says which labels it has: no subquery, no probe, no join. (One NOT
    # EXISTS on study_labels probed it for every candidate study, 1.25x-1.38x on paging at a
    # million instances; an EXISTS of a granted label became a hashed subplan of every study
    # labeled so on PostgreSQL, built anew by each query.)
    label_set = study_pk.table.c.label_set
    unlabeled: ColumnElement[bool] = label_set == ""
    if not labels:
        return unlabeled
    granted = [_Has(label_set, literal(f" {label} ")) for label in sorted(labels)]
    return or_(unlabeled, *granted)


class _Has(ColumnElement[bool]):
    """``text`` holds ``part``, case and all: ``instr`` (SQLite), ``strpos`` (PostgreSQL).
    Not LIKE, which SQLite matches without regard to case ("a" would find " A ")."""

    type = Boolean()
    inherit_cache = True

    def __init__(self, text: ColumnElement[str], part: ColumnElement[str]) -> None:
        self.text, self.part = text, part

    _traverse_internals = [
        ("text", InternalTraversal.dp_clauseelement),
        ("part", InternalTraversal.dp_clauseelement),
    ]


@compiles(_Has)
def _has_sqlite(element: _Has, compiler: Any, **kw: Any) -> str:
    return f"instr({_operands(element, compiler, **kw)}) > 0"


@compiles(_Has, "postgresql")
def _has_postgresql(element: _Has, compiler: Any, **kw: Any) -> str:
    return f"strpos({_operands(element, compiler, **kw)}) > 0"


def _operands(element: _Has, compiler: Any, **kw: Any) -> str:
    return f"{compiler.process(element.text, **kw)}, {compiler.process(element.part, **kw)}"


def visible_patient(labels: Labels, patient_pk: Any) -> ColumnElement[bool] | None:
    """The condition "the patient ``patient_pk`` has a study visible with ``labels``": a
    patient whose only studies one may not see is absent too."""
    if labels is None:
        return None
    return _visible_patient(labels, patient_pk)


@functools.lru_cache(maxsize=512)
def _visible_patient(labels: frozenset[str], patient_pk: Any) -> ColumnElement[bool]:
    seen = _visible(labels, _OWN.c.pk)
    return select(_OWN.c.pk).where(_OWN.c.patient_pk == patient_pk, seen).exists()


@functools.lru_cache(maxsize=512)
def visible_counts(labels: frozenset[str], patient_pk: Any) -> dict[str, Any]:
    """The patient's related studies, series and instances counted over its visible studies
    only (the stored counters would tell of studies one may not see). Do not change the
    dictionary returned: it is kept for the next query with these labels."""
    own = _COUNTED
    seen = _visible(labels, own.c.pk)
    where = (own.c.patient_pk == patient_pk, seen)

    def total(expression: Any) -> Any:
        return select(func.coalesce(expression, 0)).where(*where).scalar_subquery()

    return {
        "NumberOfPatientRelatedStudies": total(func.count(own.c.pk)),
        "NumberOfPatientRelatedSeries": total(func.sum(own.c.num_series)),
        "NumberOfPatientRelatedInstances": total(func.sum(own.c.num_instances)),
    }


# -- the labels of studies --------------------------------------------------------------------


def _study_pk(conn: Connection, study_uid: str) -> int | None:
    # Locked (PostgreSQL) until the transaction ends: two changes of one study's labels take
    # turns, so ``studies.labeled`` always tells what the last one left.
    stmt = select(studies.c.pk).where(studies.c.study_uid == study_uid).with_for_update()
    found = conn.execute(stmt).first()
    return None if found is None else int(found[0])


def add_labels(conn: Connection, study_uid: str, labels: Iterable[str]) -> int | None:
    """Give the study ``labels`` (those it has already are kept once); the number added, or
    None when no such study is stored."""
    pk = _study_pk(conn, study_uid)
    if pk is None:
        return None
    wanted = list(dict.fromkeys(labels))
    if not wanted:
        return 0
    make: Any = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    added = 0
    for label in wanted:  # kept once, whoever adds the same label at the same time
        stmt = make(study_labels).values(study_pk=pk, label=label).on_conflict_do_nothing()
        # Counted by the rows returned: psycopg's rowcount is 0 here (ON CONFLICT DO NOTHING).
        added += len(conn.execute(stmt.returning(study_labels.c.label)).all())
    if added:
        _keep_label_set(conn, pk)
    return added


def remove_labels(conn: Connection, study_uid: str, labels: Collection[str]) -> int | None:
    """Take ``labels`` off the study; the number removed, or None when no such study."""
    pk = _study_pk(conn, study_uid)
    if pk is None:
        return None
    gone = conn.execute(
        delete(study_labels)
        .where(study_labels.c.study_pk == pk, study_labels.c.label.in_(list(labels)))
        .returning(study_labels.c.label)
    )
    removed = len(gone.all())
    if removed:
        _keep_label_set(conn, pk)
    return removed


def label_set(labels: Iterable[str]) -> str:
    """``studies.label_set`` for a study with ``labels``: each between spaces (a label has
    none), or empty for none."""
    found = sorted(set(labels))
    return f" {' '.join(found)} " if found else ""


def _keep_label_set(conn: Connection, pk: int) -> None:
    """Write the study's ``label_set`` from its rows in ``study_labels`` (same transaction)."""
    rows = conn.execute(select(study_labels.c.label).where(study_labels.c.study_pk == pk))
    value = label_set(str(label) for (label,) in rows)
    conn.execute(update(studies).where(studies.c.pk == pk).values(label_set=value))


def study_label_list(conn: Connection, study_uid: str | None = None) -> list[tuple[str, str]]:
    """(study UID, label) pairs, of one study or of all, in order."""
    stmt = (
        select(studies.c.study_uid, study_labels.c.label)
        .select_from(study_labels.join(studies, studies.c.pk == study_labels.c.study_pk))
        .order_by(studies.c.study_uid, study_labels.c.label)
    )
    if study_uid is not None:
        stmt = stmt.where(studies.c.study_uid == study_uid)
    return [(str(uid), str(label)) for uid, label in conn.execute(stmt)]


def label_counts(conn: Connection) -> list[tuple[str, int]]:
    """Every label in use and how many studies carry it."""
    stmt = (
        select(study_labels.c.label, func.count())
        .group_by(study_labels.c.label)
        .order_by(study_labels.c.label)
    )
    return [(str(label), int(n)) for label, n in conn.execute(stmt)]


# -- grants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """A label granted to a user, a group or a peer."""

    label: str
    kind: str
    grantee: str


def add_grant(conn: Connection, grant: Grant) -> bool:
    """Record ``grant``; False when it existed already."""
    exists = conn.execute(
        select(label_grants.c.label).where(
            label_grants.c.label == grant.label,
            label_grants.c.grantee_kind == grant.kind,
            label_grants.c.grantee == grant.grantee,
        )
    ).first()
    if exists is not None:
        return False
    conn.execute(
        insert(label_grants).values(
            label=grant.label,
            grantee_kind=grant.kind,
            grantee=grant.grantee,
            created_at=datetime.now(UTC),
        )
    )
    return True


def remove_grant(conn: Connection, grant: Grant) -> bool:
    gone = conn.execute(
        delete(label_grants).where(
            label_grants.c.label == grant.label,
            label_grants.c.grantee_kind == grant.kind,
            label_grants.c.grantee == grant.grantee,
        )
    )
    return bool(gone.rowcount)


def all_grants(conn: Connection) -> list[Grant]:
    stmt = select(label_grants.c.label, label_grants.c.grantee_kind, label_grants.c.grantee)
    stmt = stmt.order_by(label_grants.c.grantee_kind, label_grants.c.grantee, label_grants.c.label)
    return [Grant(str(a), str(b), str(c)) for a, b, c in conn.execute(stmt)]


# -- ingest rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Label a study ``label`` when ``keyword`` of an arriving instance matches ``pattern``."""

    pk: int
    label: str
    keyword: str
    pattern: str


def add_rule(conn: Connection, label: str, keyword: str, pattern: str) -> int:
    result = conn.execute(
        insert(label_rules)
        .values(label=label, keyword=keyword, pattern=pattern, created_at=datetime.now(UTC))
        .returning(label_rules.c.pk)
    )
    return int(result.scalar_one())


def remove_rule(conn: Connection, pk: int) -> bool:
    return bool(conn.execute(delete(label_rules).where(label_rules.c.pk == pk)).rowcount)


def all_rules(conn: Connection) -> list[Rule]:
    stmt = select(
        label_rules.c.pk, label_rules.c.label, label_rules.c.keyword, label_rules.c.pattern
    ).order_by(label_rules.c.pk)
    return [Rule(int(pk), str(a), str(b), str(c)) for pk, a, b, c in conn.execute(stmt)]


def study_label_sets(conn: Connection, study_uids: Collection[str]) -> dict[str, frozenset[str]]:
    """The labels of each of these studies that exists (the live updates' visibility test)."""
    query = select(studies.c.study_uid, studies.c.label_set).where(
        studies.c.study_uid.in_(tuple(study_uids))
    )
    return {str(uid): frozenset(str(found or "").split()) for uid, found in conn.execute(query)}
