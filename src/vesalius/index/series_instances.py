"""The instances of one series, for the REST API: a page at a time in instance order (Instance
Number, unnumbered last, then arrival), by keyset, so any page costs one index range scan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, func, select, tuple_
from sqlalchemy.engine import Connection

from vesalius.index.labels import Labels, visible
from vesalius.index.schema import instances, patients, series, studies

#: Where an instance sorts in its series: unnumbered last, then by number, then by arrival.
Position = tuple[int, int, int]


@dataclass(frozen=True)
class SeriesRef:
    """A series found by its UIDs: its row, its instance count and whose it is."""

    pk: int
    instance_count: int
    patient_id: str


@dataclass(frozen=True)
class InstanceRow:
    """One instance as the index holds it."""

    pk: int
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    frames: int | None
    size: int
    sha256: str
    transfer_syntax_uid: str
    blob_store: str
    blob_key: str

    @property
    def position(self) -> Position:
        number = self.instance_number
        return (int(number is None), number or 0, self.pk)


_UNNUMBERED = case((instances.c.instance_number.is_(None), 1), else_=0)
_NUMBER = func.coalesce(instances.c.instance_number, 0)
_COLUMNS = (
    instances.c.pk,
    instances.c.sop_instance_uid,
    instances.c.sop_class_uid,
    instances.c.instance_number,
    instances.c.rows,
    instances.c.columns,
    instances.c.number_of_frames,
    instances.c.size,
    instances.c.sha256,
    instances.c.transfer_syntax_uid,
    instances.c.blob_store,
    instances.c.blob_key,
)


def _row(found: Any) -> InstanceRow:
    pk, sop_instance, sop_class, number, rows, columns, frames, size, *rest = found
    sha256, syntax, store, key = rest
    return InstanceRow(
        int(pk),
        sop_instance,
        sop_class,
        number,
        rows,
        columns,
        frames,
        int(size),
        sha256,
        syntax,
        store,
        key,
    )


def find_series(
    conn: Connection, study_uid: str, series_uid: str, labels: Labels = None
) -> SeriesRef | None:
    """The series ``series_uid`` of study ``study_uid``, if it exists and its study is
    visible with ``labels`` (``index/labels.py``)."""
    where: list[ColumnElement[bool]] = [
        series.c.series_uid == series_uid,
        studies.c.study_uid == study_uid,
    ]
    seen = visible(labels, studies.c.pk)
    if seen is not None:
        where.append(seen)
    stmt = (
        select(series.c.pk, series.c.num_instances, patients.c.patient_id)
        .select_from(series.join(studies).join(patients))
        .where(*where)
    )
    found = conn.execute(stmt).first()
    if found is None:
        return None
    return SeriesRef(int(found[0]), int(found[1]), str(found[2]))


def list_instances(
    conn: Connection, series_pk: int, limit: int, after: Position | None = None
) -> list[InstanceRow]:
    """Up to ``limit`` instances of the series, in order, after ``after`` when given."""
    stmt = select(*_COLUMNS).where(instances.c.series_pk == series_pk)
    if after is not None:
        stmt = stmt.where(tuple_(_UNNUMBERED, _NUMBER, instances.c.pk) > tuple_(*after))
    stmt = stmt.order_by(_UNNUMBERED, _NUMBER, instances.c.pk).limit(limit)
    return [_row(found) for found in conn.execute(stmt)]


def find_instance(conn: Connection, series_pk: int, sop_instance_uid: str) -> InstanceRow | None:
    """One instance of the series by its SOP Instance UID."""
    stmt = select(*_COLUMNS).where(
        instances.c.series_pk == series_pk, instances.c.sop_instance_uid == sop_instance_uid
    )
    found = conn.execute(stmt).first()
    return None if found is None else _row(found)
