"""Resolving retrieve keys to the stored instances they name (PS3.4 C.4.2.2.1, C.4.3.2.1).

Retrieve identifiers carry unique keys only: Patient ID at PATIENT level, a list of Study,
Series or SOP Instance UIDs at the level retrieved, and optionally the unique keys of the
levels above, which narrow the match. So the lookup is plain equality on indexed columns, never
wildcards or ranges (those are C-FIND's). Results come in a stable order: study, then series by
Series Number, then instance by Instance Number (unnumbered last, then in arrival order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.engine import Connection

from vesalius.dicom.model import Level
from vesalius.errors import QueryError
from vesalius.index.labels import Labels, visible
from vesalius.index.prepared import Prepared
from vesalius.index.schema import instance_metadata, instances, patients, series, studies

#: Values per ``IN (…)`` clause: well under SQLite's and PostgreSQL's parameter limits.
CHUNK = 500


@dataclass(frozen=True)
class RetrieveKeys:
    """The unique keys of a retrieve request; empty means "not given" (no constraint)."""

    level: Level
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceLocation:
    """One matched instance: what it is and where its file is (the key ``blob_key`` in the
    blob store ``blob_store``)."""

    pk: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    blob_store: str
    blob_key: str
    size: int
    study_uid: str
    patient_id: str
    series_uid: str = ""


def _level_list(keys: RetrieveKeys) -> tuple[ColumnElement[Any] | None, tuple[str, ...]]:
    """The column and values of the list at the retrieve level (PATIENT has no list)."""
    if keys.level == "STUDY":
        return studies.c.study_uid, keys.study_uids
    if keys.level == "SERIES":
        return series.c.series_uid, keys.series_uids
    if keys.level == "IMAGE":
        return instances.c.sop_instance_uid, keys.sop_instance_uids
    return None, ()


def _chunks(values: Sequence[str]) -> list[tuple[str, ...]]:
    unique = tuple(dict.fromkeys(values))
    return [unique[i : i + CHUNK] for i in range(0, len(unique), CHUNK)]


_LOCATION_COLUMNS = (
    instances.c.pk,
    instances.c.sop_class_uid,
    instances.c.sop_instance_uid,
    instances.c.transfer_syntax_uid,
    instances.c.blob_store,
    instances.c.blob_key,
    instances.c.size,
    studies.c.study_uid,
    patients.c.patient_id,
    series.c.series_uid,
    patients.c.issuer_of_patient_id,
)

#: One instance by its UID (unique in the index): the frame, rendered, WADO-URI and
#: single-instance retrieve path, run on the driver's cursor (``index/prepared.py``).
_ONE_INSTANCE = Prepared(
    select(*_LOCATION_COLUMNS)
    .select_from(instances.join(series).join(studies).join(patients))
    .where(instances.c.sop_instance_uid == bindparam("uid"))
)


def _one_instance(conn: Connection, keys: RetrieveKeys, uid: str) -> list[InstanceLocation]:
    """:func:`find_instances` for a single SOP Instance UID: the keys of the levels above
    narrow the one row, as they do in the general query."""
    found = []
    for row in _ONE_INSTANCE.run(conn, {"uid": uid}):
        study, patient, ser, issuer = row[7:11]
        if (
            (keys.study_uids and study not in keys.study_uids)
            or (keys.series_uids and ser not in keys.series_uids)
            or (keys.patient_id and patient != keys.patient_id)
            or (keys.issuer_of_patient_id and issuer != keys.issuer_of_patient_id)
        ):
            continue
        found.append(_location(row))
    return found


def _location(row: Sequence[Any]) -> InstanceLocation:
    """An :class:`InstanceLocation` from a row that starts with :data:`_LOCATION_COLUMNS`."""
    pk, sop_class, sop_instance, syntax, store, key, size, study, patient, ser = row[:10]
    return InstanceLocation(
        int(pk), sop_class, sop_instance, syntax, store, key, int(size), study, patient, ser
    )


def find_instances(
    conn: Connection, keys: RetrieveKeys, limit: int | None = None, labels: Labels = None
) -> list[InstanceLocation]:
    """The instances ``keys`` name, in study/series/instance order, of the studies visible
    with ``labels`` (None: every study; ``index/labels.py``): a study one may not see is
    absent, as if it did not exist.

    With ``limit``, at most ``limit + 1`` rows are read, so a caller can tell "too many" without
    loading an archive's worth of rows.
    """
    if keys.level == "IMAGE" and len(set(keys.sop_instance_uids)) == 1 and labels is None:
        return _one_instance(conn, keys, keys.sop_instance_uids[0])
    level_column, level_values = _level_list(keys)
    if keys.level == "PATIENT" and not keys.patient_id:
        raise QueryError("PATIENT level retrieve without a Patient ID")
    if level_column is not None and not level_values:
        raise QueryError(f"{keys.level} level retrieve without its unique key")

    where: list[ColumnElement[bool]] = []
    if keys.patient_id:
        where.append(patients.c.patient_id == keys.patient_id)
    if keys.issuer_of_patient_id:
        where.append(patients.c.issuer_of_patient_id == keys.issuer_of_patient_id)
    for column, values, level in (
        (studies.c.study_uid, keys.study_uids, "STUDY"),
        (series.c.series_uid, keys.series_uids, "SERIES"),
        (instances.c.sop_instance_uid, keys.sop_instance_uids, "IMAGE"),
    ):
        if values and level != keys.level:
            where.append(column.in_(tuple(dict.fromkeys(values))))
    seen = visible(labels, studies.c.pk)
    if seen is not None:
        where.append(seen)

    base = (
        select(
            *_LOCATION_COLUMNS,
            instances.c.instance_number,
            series.c.pk.label("series_pk"),
            series.c.series_number,
            studies.c.pk.label("study_pk"),
            studies.c.study_date,
        )
        .select_from(instances.join(series).join(studies).join(patients))
        .where(*where)
    )
    statements = (
        [base.where(level_column.in_(chunk)) for chunk in _chunks(level_values)]
        if level_column is not None
        else [base]
    )
    rows: list[Any] = []
    for stmt in statements:
        if limit is not None:
            stmt = stmt.limit(limit + 1 - len(rows))
        rows.extend(conn.execute(stmt).all())
        if limit is not None and len(rows) > limit:
            break
    rows.sort(
        key=lambda r: (
            r.study_date,
            r.study_pk,
            r.series_number is None,
            r.series_number or 0,
            r.series_pk,
            r.instance_number is None,
            r.instance_number or 0,
            r.pk,
        )
    )
    return [_location(r) for r in rows]


@dataclass(frozen=True)
class MetadataRow:
    """One instance's stored metadata (``None``: not computed yet) and what auditing needs."""

    pk: int
    blob_store: str
    blob_key: str
    sop_instance_uid: str
    patient_id: str
    study_uid: str
    metadata: bytes | None


def find_metadata(conn: Connection, keys: RetrieveKeys, labels: Labels = None) -> list[MetadataRow]:
    """The stored metadata of the instances of a study, series or instance, in series and
    instance order: one statement (WADO-RS metadata is on the viewer's first-image path),
    restricted to the studies visible with ``labels`` (as :func:`find_instances`)."""
    where: list[ColumnElement[bool]] = [studies.c.study_uid.in_(keys.study_uids)]
    seen = visible(labels, studies.c.pk)
    if seen is not None:
        where.append(seen)
    if keys.series_uids:
        where.append(series.c.series_uid.in_(keys.series_uids))
    if keys.sop_instance_uids:
        where.append(instances.c.sop_instance_uid.in_(keys.sop_instance_uids))
    stmt = (
        select(
            instances.c.pk,
            instances.c.blob_store,
            instances.c.blob_key,
            instances.c.sop_instance_uid,
            patients.c.patient_id,
            studies.c.study_uid,
            instance_metadata.c.json,
        )
        .select_from(
            instances.join(series)
            .join(studies)
            .join(patients)
            .outerjoin(instance_metadata, instance_metadata.c.instance_pk == instances.c.pk)
        )
        .where(*where)
        .order_by(
            series.c.series_number,
            series.c.pk,
            instances.c.instance_number,
            instances.c.pk,
        )
    )
    return [
        MetadataRow(int(r[0]), *r[1:6], None if r[6] is None else bytes(r[6]))
        for r in conn.execute(stmt)
    ]
