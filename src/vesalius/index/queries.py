"""The search behind C-FIND and QIDO-RS: one SELECT per query over the index (PS3.4 C.6.1/C.6.2).

Every attribute a query can match or return is declared once in :data:`ATTRIBUTES`, with its
level, its column and its matching kind (:mod:`vesalius.index.matching` turns key values into
conditions). A query at a level selects from that level's table joined to its parents, so keys
of higher levels restrict it and their values come back in the same row: one statement, no
per-row lookups. ModalitiesInStudy and SOPClassesInStudy match through the series and instances
tables (EXISTS), so ``MR`` finds a study whose stored list is ``CT\\MR``. Rows stream from the
database as ``keyword -> value`` records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Column, ColumnElement, FromClause, Select, select
from sqlalchemy.engine import Connection, Row

from vesalius.dicom.model import LEVELS, Level
from vesalius.index.labels import Labels, visible, visible_counts, visible_patient
from vesalius.index.matching import Kind, MatchOptions, combined_datetime, condition
from vesalius.index.schema import instances, patients, series, studies

#: A key value: raw DICOM text, or the keys of a sequence's single item (PS3.4 C.2.2.2.6).
FilterValue = str | Mapping[str, str]
Via = Literal["modalities", "sop_classes"]


@dataclass(frozen=True)
class Attribute:
    """A queryable attribute: where it lives and how it matches.

    ``multi`` columns hold a backslash-joined list and return it as values; ``via`` names the
    child table a study-level list is matched through.
    """

    keyword: str
    level: Level
    kind: Kind
    column: Column[Any]
    folded: Column[Any] | None = None
    multi: bool = False
    via: Via | None = None


def _attributes(level: Level, table: Any, *entries: tuple[Any, ...]) -> list[Attribute]:
    found = []
    for keyword, kind, name, *rest in entries:
        extra: dict[str, Any] = rest[0] if rest else {}
        found.append(Attribute(keyword, level, kind, table.c[name], **extra))
    return found


ATTRIBUTES: dict[str, Attribute] = {
    a.keyword: a
    for a in [
        *_attributes(
            "PATIENT",
            patients,
            ("PatientID", "text", "patient_id"),
            ("IssuerOfPatientID", "text", "issuer_of_patient_id"),
            ("PatientName", "pn", "patient_name", {"folded": patients.c.patient_name_folded}),
            ("PatientBirthDate", "date", "patient_birth_date"),
            ("PatientSex", "text", "patient_sex"),
            ("NumberOfPatientRelatedStudies", "int", "num_studies"),
            ("NumberOfPatientRelatedSeries", "int", "num_series"),
            ("NumberOfPatientRelatedInstances", "int", "num_instances"),
        ),
        *_attributes(
            "STUDY",
            studies,
            ("StudyInstanceUID", "uid", "study_uid"),
            ("StudyDate", "date", "study_date"),
            ("StudyTime", "time", "study_time"),
            ("AccessionNumber", "text", "accession_number"),
            ("StudyID", "text", "study_id"),
            ("StudyDescription", "text", "study_description"),
            (
                "ReferringPhysicianName",
                "pn",
                "referring_physician_name",
                {"folded": studies.c.referring_physician_name_folded},
            ),
            (
                "ModalitiesInStudy",
                "text",
                "modalities_in_study",
                {"multi": True, "via": "modalities"},
            ),
            (
                "SOPClassesInStudy",
                "uid",
                "sop_classes_in_study",
                {"multi": True, "via": "sop_classes"},
            ),
            ("NumberOfStudyRelatedSeries", "int", "num_series"),
            ("NumberOfStudyRelatedInstances", "int", "num_instances"),
        ),
        *_attributes(
            "SERIES",
            series,
            ("SeriesInstanceUID", "uid", "series_uid"),
            ("Modality", "text", "modality"),
            ("SeriesNumber", "int", "series_number"),
            ("SeriesDescription", "text", "series_description"),
            ("SeriesDate", "date", "series_date"),
            ("SeriesTime", "time", "series_time"),
            ("BodyPartExamined", "text", "body_part_examined"),
            ("StationName", "text", "station_name"),
            ("InstitutionName", "text", "institution_name"),
            ("PerformedProcedureStepStartDate", "date", "performed_procedure_step_start_date"),
            ("PerformedProcedureStepStartTime", "time", "performed_procedure_step_start_time"),
            ("NumberOfSeriesRelatedInstances", "int", "num_instances"),
        ),
        *_attributes(
            "IMAGE",
            instances,
            ("SOPInstanceUID", "uid", "sop_instance_uid"),
            ("SOPClassUID", "uid", "sop_class_uid"),
            ("InstanceNumber", "int", "instance_number"),
            ("ContentDate", "date", "content_date"),
            ("ContentTime", "time", "content_time"),
            ("Rows", "int", "rows"),
            ("Columns", "int", "columns"),
            ("NumberOfFrames", "int", "number_of_frames"),
            ("AvailableTransferSyntaxUID", "uid", "transfer_syntax_uid"),
        ),
    ]
}

#: Sequences matched item by item (PS3.4 C.2.2.2.6): the index keeps the first item's keys.
SEQUENCES: dict[str, tuple[Level, dict[str, Attribute]]] = {
    "RequestAttributesSequence": (
        "SERIES",
        {
            a.keyword: a
            for a in _attributes(
                "SERIES",
                series,
                ("RequestedProcedureID", "text", "requested_procedure_id"),
                ("ScheduledProcedureStepID", "text", "scheduled_procedure_step_id"),
            )
        },
    ),
}

#: Date and time pairs matched as one datetime under combined matching (C.2.2.2.5.1).
DATE_TIME_PAIRS = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("ContentDate", "ContentTime"),
    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
)


def depth(level: Level) -> int:
    return LEVELS.index(level)


def attribute_at(keyword: str, level: Level) -> Attribute | None:
    """The attribute ``keyword`` if a query at ``level`` can match and return it (its own level
    or a level above)."""
    found = ATTRIBUTES.get(keyword)
    return found if found is not None and depth(found.level) <= depth(level) else None


def sequence_at(keyword: str, level: Level) -> dict[str, Attribute] | None:
    """The item attributes of sequence ``keyword`` if a query at ``level`` can use it."""
    found = SEQUENCES.get(keyword)
    return found[1] if found is not None and depth(found[0]) <= depth(level) else None


def _from(level: Level) -> FromClause:
    joined: FromClause = patients
    if depth(level) >= 1:
        joined = studies.join(patients, studies.c.patient_pk == patients.c.pk)
    if depth(level) >= 2:
        joined = series.join(joined, series.c.study_pk == studies.c.pk)
    if depth(level) >= 3:
        joined = instances.join(joined, instances.c.series_pk == series.c.pk)
    return joined


def _order(level: Level) -> list[ColumnElement[Any]]:
    if level == "PATIENT":
        return [patients.c.pk]
    if level == "STUDY":
        return [studies.c.study_date, studies.c.study_time, studies.c.pk]
    if level == "SERIES":
        number = series.c.series_number
        return [series.c.study_pk, number.is_(None), number, series.c.pk]
    number = instances.c.instance_number
    return [instances.c.series_pk, number.is_(None), number, instances.c.pk]


def _through_children(attribute: Attribute, raw: str) -> ColumnElement[bool] | None:
    """ModalitiesInStudy / SOPClassesInStudy: some series (instance) of the study matches."""
    child_series = series.alias(f"{attribute.via}_series")
    if attribute.via == "modalities":
        matched = condition("text", child_series.c.modality, raw, keyword=attribute.keyword)
        if matched is None:
            return None
        return (
            select(child_series.c.pk)
            .where(child_series.c.study_pk == studies.c.pk, matched)
            .exists()
        )
    child = instances.alias(f"{attribute.via}_instances")
    matched = condition("uid", child.c.sop_class_uid, raw, keyword=attribute.keyword)
    if matched is None:
        return None
    return (
        select(child.c.pk)
        .select_from(child.join(child_series, child.c.series_pk == child_series.c.pk))
        .where(child_series.c.study_pk == studies.c.pk, matched)
        .exists()
    )


def _match(attribute: Attribute, raw: str, options: MatchOptions) -> ColumnElement[bool] | None:
    if attribute.via is not None:
        return _through_children(attribute, raw)
    return condition(
        attribute.kind,
        attribute.column,
        raw,
        keyword=attribute.keyword,
        folded=attribute.folded,
        options=options,
    )


def conditions(
    level: Level,
    filters: Mapping[str, FilterValue],
    options: MatchOptions,
    combined: bool = False,
) -> list[ColumnElement[bool]]:
    """The WHERE conditions for the keys of ``filters`` a query at ``level`` supports; other
    keys are left to the caller (they are not supported for matching)."""
    found: list[ColumnElement[bool]] = []
    paired: set[str] = set()
    if combined:
        for date_key, time_key in DATE_TIME_PAIRS:
            date_attr, time_attr = attribute_at(date_key, level), attribute_at(time_key, level)
            date_raw, time_raw = filters.get(date_key), filters.get(time_key)
            if date_attr is None or time_attr is None:
                continue
            if not isinstance(date_raw, str) or not isinstance(time_raw, str):
                continue
            both = combined_datetime(
                date_attr.column, time_attr.column, date_raw, time_raw, date_key
            )
            if both is not None:
                found.append(both)
                paired.update((date_key, time_key))
    for keyword, raw in filters.items():
        if keyword in paired:
            continue
        attribute = attribute_at(keyword, level)
        items = sequence_at(keyword, level)
        matched: ColumnElement[bool] | None = None
        if attribute is not None and isinstance(raw, str):
            matched = _match(attribute, raw, options)
            if matched is not None:
                found.append(matched)
        elif items is not None and isinstance(raw, Mapping):
            for sub_keyword, sub_raw in raw.items():
                sub = items.get(sub_keyword)
                matched = _match(sub, sub_raw, options) if sub is not None else None
                if matched is not None:
                    found.append(matched)
    return found


def _sequence_keys(
    keyword: str, items: dict[str, Attribute], filters: Mapping[str, FilterValue]
) -> list[str]:
    requested = filters.get(keyword)
    if isinstance(requested, Mapping) and requested:
        return list(requested)
    return list(items)


def build_select(
    level: Level,
    filters: Mapping[str, FilterValue],
    returns: Iterable[str],
    *,
    options: MatchOptions | None = None,
    combined: bool = False,
    limit: int | None = None,
    offset: int = 0,
    labels: Labels = None,
) -> Select[Any]:
    """The one SELECT for a query at ``level``: matching ``filters``, returning ``returns``
    (keywords the level supports; others are ignored), in a stable order.

    ``labels`` restricts it to the studies visible with those access labels (None: every
    study; ``index/labels.py``): a patient shows only with a visible study, and its related
    counts are over its visible studies."""
    options = options or MatchOptions()
    columns: list[ColumnElement[Any]] = []
    wanted = dict.fromkeys(returns)
    counted = (
        visible_counts(labels, patients.c.pk)
        if labels is not None and any(k.startswith("NumberOfPatientRelated") for k in wanted)
        else {}
    )
    for keyword in wanted:
        attribute = attribute_at(keyword, level)
        items = sequence_at(keyword, level)
        if keyword in counted:
            columns.append(counted[keyword].label(keyword))
        elif attribute is not None:
            columns.append(attribute.column.label(keyword))
        elif items is not None:
            for sub_keyword in _sequence_keys(keyword, items, filters):
                if sub_keyword in items:
                    columns.append(items[sub_keyword].column.label(f"{keyword}.{sub_keyword}"))
    level_pk = {"PATIENT": patients, "STUDY": studies, "SERIES": series, "IMAGE": instances}
    columns.append(level_pk[level].c.pk.label("_pk"))
    where = conditions(level, filters, options, combined)
    seen = (
        visible_patient(labels, patients.c.pk)
        if level == "PATIENT"
        else visible(labels, studies.c.pk)
    )
    if seen is not None:
        where.append(seen)
    stmt = select(*columns).select_from(_from(level)).where(*where).order_by(*_order(level))
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt


def _record(
    row: Row[Any], level: Level, returns: Iterable[str], filters: Mapping[str, FilterValue]
) -> dict[str, Any]:
    found = row._mapping
    record: dict[str, Any] = {}
    for keyword in returns:
        attribute = attribute_at(keyword, level)
        items = sequence_at(keyword, level)
        if attribute is not None:
            value = found[keyword]
            record[keyword] = [v for v in value.split("\\") if v] if attribute.multi else value
        elif items is not None:
            item = {
                sub: found[f"{keyword}.{sub}"] if sub in items else None
                for sub in _sequence_keys(keyword, items, filters)
            }
            record[keyword] = [item] if any(item.values()) else []
    return record


def search(
    conn: Connection,
    level: Level,
    filters: Mapping[str, FilterValue],
    returns: Iterable[str],
    *,
    options: MatchOptions | None = None,
    combined: bool = False,
    limit: int | None = None,
    offset: int = 0,
    batch: int = 256,
    labels: Labels = None,
) -> Iterator[dict[str, Any]]:
    """Run the query and yield one record per match, streaming from the database (a
    server-side cursor on PostgreSQL). Records hold the supported ``returns`` keys; only
    studies visible with ``labels`` match (see :func:`build_select`)."""
    keys = [k for k in dict.fromkeys(returns) if attribute_at(k, level) or sequence_at(k, level)]
    stmt = build_select(
        level,
        filters,
        keys,
        options=options,
        combined=combined,
        limit=limit,
        offset=offset,
        labels=labels,
    )
    result = conn.execution_options(yield_per=batch).execute(stmt)
    try:
        for row in result:
            yield _record(row, level, keys, filters)
    finally:
        result.close()
