"""Browsing the index: studies, series and patients as the REST API and the UI list them.

A list is one SELECT: the filters (DICOM matching from :mod:`vesalius.index.queries`, the
engine behind C-FIND and QIDO-RS, plus a free text matched on the search terms of
:mod:`vesalius.index.search`), the access-label
condition of :mod:`vesalius.index.labels` (a study one may not see is absent), and a keyset
position: rows *after* the last one of the previous page in the sort order, so a page deep in
the list costs what the first one does (no OFFSET). The sort key always ends with the primary
key, so it is a total order and a cursor names one place. The total is a second statement,
``COUNT(*)`` under the same conditions, without the order, the page or the per-row columns,
and joining the patients only when a condition needs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, select, tuple_
from sqlalchemy.engine import Connection

from vesalius.index.description import description_condition
from vesalius.index.labels import Labels, visible, visible_counts, visible_patient
from vesalius.index.matching import MatchOptions
from vesalius.index.queries import FilterValue, conditions
from vesalius.index.schema import instances, patients, series, studies
from vesalius.index.search import matching, query_words

StudySort = Literal[
    "-study_date",
    "study_date",
    "patient_name",
    "-patient_name",
    "patient_id",
    "accession_number",
    "-updated",
    "updated",
]
STUDY_SORTS: tuple[str, ...] = StudySort.__args__  # type: ignore[attr-defined]

#: The columns of each sort, the study's primary key last (a total order). Sorts by a patient
#: attribute go on with the patient's key: the order a scan of that patients index joined to
#: ``ix_studies_patient_pk`` yields, so SQLite needs no sort step.
_SORT_COLUMNS: dict[str, tuple[ColumnElement[Any], ...]] = {
    "study_date": (studies.c.study_date, studies.c.study_time, studies.c.pk),
    "patient_name": (patients.c.patient_name_folded, patients.c.pk, studies.c.pk),
    "patient_id": (
        patients.c.patient_id,
        patients.c.issuer_of_patient_id,
        patients.c.pk,
        studies.c.pk,
    ),
    "accession_number": (studies.c.accession_number, studies.c.pk),
    "updated": (studies.c.updated_at, studies.c.pk),
}
#: The kinds of each sort's position (a cursor's): ``s`` text, ``i`` integer, ``t`` time.
SORT_KINDS = {
    "study_date": "ssi",
    "patient_name": "sii",
    "patient_id": "ssii",
    "accession_number": "si",
    "updated": "ti",
}


@dataclass(frozen=True)
class StudyFilters:
    """What a study list is narrowed to. ``matching`` holds DICOM key values by keyword
    (PS3.4 C.2.2.2: wild cards, ranges); ``description`` is a wild card pattern for the whole
    Study Description or words starting its words, case-insensitively
    (:mod:`vesalius.index.description`); each word of ``text`` starts a word of the patient's
    name, the patient ID, the accession number or the description
    (:mod:`vesalius.index.search`)."""

    matching: Mapping[str, FilterValue]
    description: str = ""
    text: str = ""
    #: The keys a rare ``description`` resolved to (:func:`narrowed`), which replace it.
    study_pks: tuple[int, ...] | None = None

    def needs_patient(self) -> bool:
        return any(k.startswith("Patient") for k in self.matching)


@dataclass(frozen=True)
class StudyRow:
    """One study with its patient, as listed."""

    pk: int
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    description: str
    modalities: str
    referring_physician: str
    institution: str | None
    num_series: int
    num_instances: int
    size: int | None
    updated_at: datetime
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    name_folded: str
    patient_pk: int


@dataclass(frozen=True)
class SeriesRow:
    pk: int
    series_uid: str
    number: int | None
    modality: str
    description: str
    body_part: str
    num_instances: int
    first_instance_uid: str | None


@dataclass(frozen=True)
class PatientRow:
    pk: int
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    study_count: int
    name_folded: str


#: A ``description`` matching at most this many studies is resolved to their keys first.
DESCRIBED_FEW = 500


def narrowed(conn: Connection, filters: StudyFilters) -> StudyFilters:
    """``filters`` with its ``description`` replaced by the keys of the studies it matches when
    they are at most :data:`DESCRIBED_FEW` (one pass over the studies that stops at the limit).

    The description is tested on every study it meets (``index/description.py``: no index).
    Matched often, a page in another order meets enough matches soon; matched rarely, it would
    visit every study in that order, each a lookup of its row (SQLite, 50,000 studies: 130 ms),
    where the keys found first make the page and its total a few lookups by key."""
    if not filters.description or filters.study_pks is not None:
        return filters
    described = description_condition(filters.description)
    if described is None:
        return replace(filters, description="")
    found = conn.execute(select(studies.c.pk).where(described).limit(DESCRIBED_FEW + 1)).all()
    if len(found) > DESCRIBED_FEW:
        return filters
    return replace(filters, study_pks=tuple(int(pk) for (pk,) in found))


def study_conditions(
    conn: Connection, filters: StudyFilters, options: MatchOptions, labels: Labels
) -> list[ColumnElement[bool]]:
    """The WHERE of a study list and of its count (the free text reads the search backlog)."""
    where = conditions("STUDY", filters.matching, options)
    if filters.study_pks is not None:
        where.append(studies.c.pk.in_(filters.study_pks))
    elif filters.description:
        described = description_condition(filters.description)
        if described is not None:
            where.append(described)
    words = query_words(filters.text)
    if words:
        where.append(matching(conn, words, studies.c.pk))
    seen = visible(labels, studies.c.pk)
    if seen is not None:
        where.append(seen)
    return where


def _study_size() -> Any:
    own_series = series.alias("size_series")
    return (
        select(func.sum(instances.c.size))
        .select_from(instances.join(own_series, instances.c.series_pk == own_series.c.pk))
        .where(own_series.c.study_pk == studies.c.pk)
        .scalar_subquery()
    )


def _institution() -> Any:
    own_series = series.alias("institution_series")
    return (
        select(func.max(own_series.c.institution_name))
        .where(own_series.c.study_pk == studies.c.pk)
        .scalar_subquery()
    )


_STUDY_COLUMNS = (
    studies.c.pk,
    studies.c.study_uid,
    studies.c.study_date,
    studies.c.study_time,
    studies.c.accession_number,
    studies.c.study_description,
    studies.c.modalities_in_study,
    studies.c.referring_physician_name,
    _institution().label("institution"),
    studies.c.num_series,
    studies.c.num_instances,
    _study_size().label("size"),
    studies.c.updated_at,
    patients.c.patient_id,
    patients.c.issuer_of_patient_id,
    patients.c.patient_name,
    patients.c.patient_birth_date,
    patients.c.patient_sex,
    patients.c.patient_name_folded,
    patients.c.pk,
)
_STUDY_FROM = studies.join(patients, studies.c.patient_pk == patients.c.pk)


def _study_row(row: Sequence[Any]) -> StudyRow:
    (pk, uid, day, clock, accession, description, modalities, referrer, institution) = row[:9]
    (n_series, n_instances, size, updated, pid, issuer, name, birth, sex, folded) = row[9:19]
    patient_pk = row[19]
    return StudyRow(
        pk=int(pk),
        study_uid=uid,
        study_date=day,
        study_time=clock,
        accession_number=accession,
        description=description,
        modalities=modalities,
        referring_physician=referrer,
        institution=institution or None,
        num_series=int(n_series),
        num_instances=int(n_instances),
        size=None if size is None else int(size),
        updated_at=updated,
        patient_id=pid,
        issuer=issuer,
        patient_name=name,
        birth_date=birth,
        sex=sex,
        name_folded=folded,
        patient_pk=int(patient_pk),
    )


def sort_key(row: StudyRow, sort: str) -> list[Any]:
    """The position of ``row`` in ``sort`` (for the cursor of the page after it)."""
    name = sort.lstrip("-")
    if name == "study_date":
        return [row.study_date, row.study_time, row.pk]
    if name == "patient_name":
        return [row.name_folded, row.patient_pk, row.pk]
    if name == "patient_id":
        return [row.patient_id, row.issuer, row.patient_pk, row.pk]
    if name == "accession_number":
        return [row.accession_number, row.pk]
    return [row.updated_at.isoformat(), row.pk]


def _position(sort: str, after: Sequence[Any]) -> list[Any]:
    values = list(after)
    if sort.lstrip("-") == "updated":
        values[0] = datetime.fromisoformat(values[0])
    return values


def list_studies(
    conn: Connection,
    filters: StudyFilters,
    *,
    sort: str,
    after: Sequence[Any] | None,
    limit: int,
    options: MatchOptions,
    labels: Labels,
) -> list[StudyRow]:
    """Up to ``limit`` studies in ``sort`` order after the position ``after`` (see
    :func:`sort_key`; None: from the start).

    One statement in two parts: the page's keys (filters, label condition, keyset position,
    order, limit) in a subquery reading only indexed columns and the row it tests, then the
    studies of those keys with their patient, size and institution, computed for the page's
    rows only (a sort must not carry them for every matching study)."""
    columns = _SORT_COLUMNS[sort.lstrip("-")]
    descending = sort.startswith("-")
    where = study_conditions(conn, filters, options, labels)
    if after is not None:
        key, position = tuple_(*columns), tuple_(*_position(sort, after))
        where.append(key < position if descending else key > position)
    order = [c.desc() for c in columns] if descending else list(columns)
    keys = [c.label(f"k{i}") for i, c in enumerate(columns)]
    page = (
        select(*keys)
        .select_from(_STUDY_FROM)
        .where(*where)
        .order_by(*order)
        .limit(limit)
        .subquery("page")
    )
    outer = [page.c[f"k{i}"] for i in range(len(columns))]
    stmt: Select[Any] = (
        select(*_STUDY_COLUMNS)
        .select_from(
            page.join(studies, studies.c.pk == page.c[f"k{len(columns) - 1}"]).join(
                patients, studies.c.patient_pk == patients.c.pk
            )
        )
        .order_by(*[c.desc() for c in outer] if descending else outer)
    )
    return [_study_row(row) for row in conn.execute(stmt)]


def count_studies(
    conn: Connection, filters: StudyFilters, *, options: MatchOptions, labels: Labels
) -> int:
    """How many studies match ``filters`` (and may be seen with ``labels``)."""
    where = study_conditions(conn, filters, options, labels)
    source = _STUDY_FROM if filters.needs_patient() else studies
    stmt = select(func.count()).select_from(source).where(*where)
    return int(conn.execute(stmt).scalar_one())


def get_study(conn: Connection, study_uid: str, labels: Labels) -> StudyRow | None:
    """The study ``study_uid`` if it is stored and visible with ``labels``."""
    where: list[ColumnElement[bool]] = [studies.c.study_uid == study_uid]
    seen = visible(labels, studies.c.pk)
    if seen is not None:
        where.append(seen)
    found = conn.execute(select(*_STUDY_COLUMNS).select_from(_STUDY_FROM).where(*where)).first()
    return None if found is None else _study_row(found)


def _first_instance() -> Any:
    own = instances.alias("first_instance")
    number = own.c.instance_number
    return (
        select(own.c.sop_instance_uid)
        .where(own.c.series_pk == series.c.pk)
        .order_by(number.is_(None), number, own.c.pk)
        .limit(1)
        .scalar_subquery()
    )


_SERIES_COLUMNS = (
    series.c.pk,
    series.c.series_uid,
    series.c.series_number,
    series.c.modality,
    series.c.series_description,
    series.c.body_part_examined,
    series.c.num_instances,
    _first_instance().label("first_instance_uid"),
)


def list_series(conn: Connection, study_pk: int, series_uid: str | None = None) -> list[SeriesRow]:
    """The series of the study ``study_pk`` by Series Number (unnumbered last), or the one
    ``series_uid`` of it."""
    number = series.c.series_number
    where: list[ColumnElement[bool]] = [series.c.study_pk == study_pk]
    if series_uid is not None:
        where.append(series.c.series_uid == series_uid)
    stmt = select(*_SERIES_COLUMNS).where(*where).order_by(number.is_(None), number, series.c.pk)
    return [
        SeriesRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7])
        for r in conn.execute(stmt)
    ]


# -- patients ---------------------------------------------------------------------------------


def _patient_columns(labels: Labels) -> tuple[Any, ...]:
    count = (
        patients.c.num_studies
        if labels is None
        else visible_counts(labels, patients.c.pk)["NumberOfPatientRelatedStudies"]
    )
    return (
        patients.c.pk,
        patients.c.patient_id,
        patients.c.issuer_of_patient_id,
        patients.c.patient_name,
        patients.c.patient_birth_date,
        patients.c.patient_sex,
        count.label("study_count"),
        patients.c.patient_name_folded,
    )


def _patient_where(
    matching: Mapping[str, FilterValue], options: MatchOptions, labels: Labels
) -> list[ColumnElement[bool]]:
    where = conditions("PATIENT", matching, options)
    seen = visible_patient(labels, patients.c.pk)
    if seen is not None:
        where.append(seen)
    return where


def _patient_row(r: Sequence[Any]) -> PatientRow:
    return PatientRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6] or 0), r[7])


def list_patients(
    conn: Connection,
    matching: Mapping[str, FilterValue],
    *,
    after: Sequence[Any] | None,
    limit: int,
    options: MatchOptions,
    labels: Labels,
) -> list[PatientRow]:
    """Up to ``limit`` patients by name (case-folded), after the position ``after``
    (``[folded name, pk]``)."""
    where = _patient_where(matching, options, labels)
    key = (patients.c.patient_name_folded, patients.c.pk)
    if after is not None:
        where.append(tuple_(*key) > tuple_(*after))
    stmt = select(*_patient_columns(labels)).where(*where).order_by(*key).limit(limit)
    return [_patient_row(r) for r in conn.execute(stmt)]


def count_patients(
    conn: Connection,
    matching: Mapping[str, FilterValue],
    *,
    options: MatchOptions,
    labels: Labels,
) -> int:
    where = _patient_where(matching, options, labels)
    return int(conn.execute(select(func.count()).select_from(patients).where(*where)).scalar_one())


def get_patients(
    conn: Connection, patient_id: str, issuer: str | None, labels: Labels
) -> list[PatientRow]:
    """The patients with ``patient_id`` (and ``issuer`` when given) that have a visible study."""
    where: list[ColumnElement[bool]] = [patients.c.patient_id == patient_id]
    if issuer is not None:
        where.append(patients.c.issuer_of_patient_id == issuer)
    seen = visible_patient(labels, patients.c.pk)
    if seen is not None:
        where.append(seen)
    stmt = select(*_patient_columns(labels)).where(and_(*where)).order_by(patients.c.pk)
    return [_patient_row(r) for r in conn.execute(stmt)]


def has_member(
    conn: Connection, study_pk: int, series_uid: str, sop_instance_uid: str | None
) -> bool:
    """Whether the study ``study_pk`` holds the series ``series_uid`` (and in it the instance
    ``sop_instance_uid`` when given)."""
    stmt = select(series.c.pk).where(
        series.c.study_pk == study_pk, series.c.series_uid == series_uid
    )
    if sop_instance_uid is not None:
        stmt = (
            select(instances.c.pk)
            .select_from(instances.join(series, instances.c.series_pk == series.c.pk))
            .where(
                series.c.study_pk == study_pk,
                series.c.series_uid == series_uid,
                instances.c.sop_instance_uid == sop_instance_uid,
            )
        )
    return conn.execute(stmt.limit(1)).first() is not None
