"""The rows a download writes: each instance of a selection (whole studies, single series)
with what its folder names and DICOMDIR records are made of (PS3.3 F.5: the PATIENT, STUDY,
SERIES and IMAGE keys), read a page at a time in (patient, study, series, instance) order, so
a download of any size holds one page, and no read transaction stays open while it is sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, tuple_
from sqlalchemy.engine import Connection

from vesalius.index.labels import Labels, visible
from vesalius.index.schema import instances, patients, series, studies


@dataclass(frozen=True)
class DownloadRow:
    """One instance and its patient, study and series, as the index has them."""

    patient_pk: int
    patient_id: str
    patient_name: str
    study_pk: int
    study_uid: str
    study_date: str
    study_time: str
    study_id: str
    accession_number: str
    study_description: str
    series_pk: int
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    instance_pk: int
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    specific_character_set: str
    blob_store: str
    blob_key: str
    size: int

    @property
    def position(self) -> tuple[int, int, int, int]:
        """Where the row is in the download's order (the keyset of the next page)."""
        return (self.patient_pk, self.study_pk, self.series_pk, self.instance_pk)


_COLUMNS = (
    patients.c.pk,
    patients.c.patient_id,
    patients.c.patient_name,
    studies.c.pk,
    studies.c.study_uid,
    studies.c.study_date,
    studies.c.study_time,
    studies.c.study_id,
    studies.c.accession_number,
    studies.c.study_description,
    series.c.pk,
    series.c.series_uid,
    series.c.modality,
    series.c.series_number,
    series.c.series_description,
    instances.c.pk,
    instances.c.sop_instance_uid,
    instances.c.sop_class_uid,
    instances.c.instance_number,
    instances.c.transfer_syntax_uid,
    instances.c.specific_character_set,
    instances.c.blob_store,
    instances.c.blob_key,
    instances.c.size,
)


def _selected(
    study_uids: Sequence[str], series_uids: Sequence[str], labels: Labels
) -> list[ColumnElement[bool]]:
    chosen: list[ColumnElement[bool]] = []
    if study_uids:
        chosen.append(studies.c.study_uid.in_(tuple(study_uids)))
    if series_uids:
        chosen.append(series.c.series_uid.in_(tuple(series_uids)))
    where: list[ColumnElement[bool]] = [or_(*chosen)] if chosen else [studies.c.pk < 0]
    seen = visible(labels, studies.c.pk)
    if seen is not None:
        where.append(seen)
    return where


def download_page(
    conn: Connection,
    study_uids: Sequence[str],
    series_uids: Sequence[str],
    *,
    labels: Labels = None,
    after: tuple[int, int, int, int] | None = None,
    limit: int = 500,
) -> list[DownloadRow]:
    """Up to ``limit`` instances of the studies ``study_uids`` and the series ``series_uids``
    (either may be empty) visible with ``labels``, after the position ``after``, in
    (patient, study, series, instance) order: a patient's records stay together."""
    where = _selected(study_uids, series_uids, labels)
    order = (patients.c.pk, studies.c.pk, series.c.pk, instances.c.pk)
    if after is not None:
        where.append(tuple_(*order) > tuple_(*after))
    stmt = (
        select(*_COLUMNS)
        .select_from(instances.join(series).join(studies).join(patients))
        .where(*where)
        .order_by(*order)
        .limit(limit)
    )
    return [_row(r) for r in conn.execute(stmt)]


def download_totals(
    conn: Connection,
    study_uids: Sequence[str],
    series_uids: Sequence[str],
    *,
    labels: Labels = None,
) -> tuple[int, int, list[str], list[str]]:
    """The instances and bytes a selection holds, and its studies and patients (for the
    audit record and the answer's name)."""
    where = _selected(study_uids, series_uids, labels)
    joined = instances.join(series).join(studies).join(patients)
    count, size = conn.execute(
        select(func.count(instances.c.pk), func.coalesce(func.sum(instances.c.size), 0))
        .select_from(joined)
        .where(*where)
    ).one()
    named = conn.execute(
        select(studies.c.study_uid, patients.c.patient_id)
        .distinct()
        .select_from(joined)
        .where(*where)
        .order_by(studies.c.study_uid)
    ).all()
    return (
        int(count),
        int(size or 0),
        [str(r[0]) for r in named],
        sorted({str(r[1]) for r in named}),
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> int | None:
    return None if value is None else int(value)


def _row(r: Sequence[Any]) -> DownloadRow:
    t = [_text(v) for v in r]
    return DownloadRow(
        patient_pk=int(r[0]),
        patient_id=t[1],
        patient_name=t[2],
        study_pk=int(r[3]),
        study_uid=t[4],
        study_date=t[5],
        study_time=t[6],
        study_id=t[7],
        accession_number=t[8],
        study_description=t[9],
        series_pk=int(r[10]),
        series_uid=t[11],
        modality=t[12],
        series_number=_number(r[13]),
        series_description=t[14],
        instance_pk=int(r[15]),
        sop_instance_uid=t[16],
        sop_class_uid=t[17],
        instance_number=_number(r[18]),
        transfer_syntax_uid=t[19],
        specific_character_set=t[20],
        blob_store=t[21],
        blob_key=t[22],
        size=int(r[23]),
    )
