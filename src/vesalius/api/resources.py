"""Patients, studies and series: list (cursor pages, sorting, filters, a total), search, get,
delete. Instances and their tags are in ``api/instances.py``.

The lists run in the browse service (``services/browse.py``): one SQL statement per page with
the query engine's DICOM matching (PS3.4 C.2.2.2) and the identity's access-label filter, keyset
pages, and a ``COUNT`` for the total. A deletion is a job of the delete service (202 and the
job; follow it at ``/api/v1/jobs/{id}``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.etags import etag_of, not_modified
from vesalius.api.jobs import Job, job_model
from vesalius.api.paging import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, encode_cursor
from vesalius.api.problems import Problem
from vesalius.dicom.uids import check_uid
from vesalius.errors import InvalidDataError, OutOfResourcesError
from vesalius.services.archive import Archive
from vesalius.services.browse import (
    SORT_KINDS,
    STUDY_SORTS,
    BrowseService,
    PatientRow,
    SeriesRow,
    StudyFilters,
    StudyRow,
)
from vesalius.services.jobs import JobRow

router = APIRouter()

#: The kinds of values in the position a cursor holds (``s`` text, ``i`` integer, ``t`` a
#: time as ISO 8601 text), per sort and for the patient list.
POSITIONS = {**{sort: SORT_KINDS[sort.lstrip("-")] for sort in STUDY_SORTS}, "patients": "si"}
_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {**_PROBLEM, "description": "Not found"}}


# -- models ---------------------------------------------------------------------------------


class PatientRef(BaseModel):
    """The patient of a study."""

    patient_id: str = Field(description="Patient ID (0010,0020).")
    issuer: str = Field(description="Issuer of Patient ID (0010,0021); empty when none.")
    name: str = Field(description="Patient's Name (0010,0010), DICOM PN (``Family^Given``).")
    birth_date: str | None = Field(description="Patient's Birth Date, ``YYYY-MM-DD``.")
    sex: str = Field(description="Patient's Sex (0010,0040): M, F, O or empty.")


class Study(BaseModel):
    """A study as the index holds it (PS3.3 C.7.2.1)."""

    study_uid: str
    patient: PatientRef
    study_date: str | None = Field(description="Study Date, ``YYYY-MM-DD``.")
    study_time: str | None = Field(description="Study Time, ``HH:MM[:SS[.ffffff]]``.")
    accession_number: str
    description: str
    modalities: list[str] = Field(description="Modalities in Study, from its series.")
    referring_physician: str = Field(description="Referring Physician's Name (DICOM PN).")
    institution: str | None = Field(description="Institution Name of its series, if any.")
    series_count: int
    instance_count: int
    size: int | None = Field(description="Bytes of its stored files.")
    updated: datetime = Field(
        description="When the study last changed in the index (to the second)."
    )


class Series(BaseModel):
    """A series of a study (PS3.3 C.7.3.1)."""

    series_uid: str
    number: int | None = Field(description="Series Number.")
    modality: str
    description: str
    body_part: str = Field(description="Body Part Examined.")
    instance_count: int
    first_instance_uid: str | None = Field(
        description="Its first instance by Instance Number (for a thumbnail)."
    )


class Patient(BaseModel):
    """A patient and how many of their studies one may see."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str | None
    sex: str
    study_count: int


# -- conversions ----------------------------------------------------------------------------


def iso_date(value: str) -> str | None:
    """``YYYYMMDD`` (DA) as ``YYYY-MM-DD``; None for an empty or malformed value."""
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        return None


def iso_time(value: str) -> str | None:
    """``HHMMSS.FFFFFF`` (TM) as ``HH:MM:SS.FFFFFF`` (as precise as stored); None if malformed."""
    text = value.strip()
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    parts = [whole[i : i + 2] for i in range(0, len(whole), 2)]
    if len(parts) == 1:
        parts.append("00")
    out = ":".join(parts)
    return f"{out}.{fraction}" if fraction and len(whole) == 6 else out


def study_of(row: StudyRow) -> Study:
    return Study(
        study_uid=row.study_uid,
        patient=PatientRef(
            patient_id=row.patient_id,
            issuer=row.issuer,
            name=row.patient_name,
            birth_date=iso_date(row.birth_date),
            sex=row.sex,
        ),
        study_date=iso_date(row.study_date),
        study_time=iso_time(row.study_time),
        accession_number=row.accession_number,
        description=row.description,
        modalities=[m for m in row.modalities.split("\\") if m],
        referring_physician=row.referring_physician,
        institution=row.institution,
        series_count=row.num_series,
        instance_count=row.num_instances,
        size=row.size,
        updated=_utc(row.updated_at),
    )


def _utc(moment: datetime) -> datetime:
    """The index keeps UTC; SQLite hands it back without its zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def series_of(row: SeriesRow) -> Series:
    return Series(
        series_uid=row.series_uid,
        number=row.number,
        modality=row.modality,
        description=row.description,
        body_part=row.body_part,
        instance_count=row.num_instances,
        first_instance_uid=row.first_instance_uid,
    )


def patient_of(row: PatientRow) -> Patient:
    return Patient(
        patient_id=row.patient_id,
        issuer=row.issuer,
        name=row.name,
        birth_date=iso_date(row.birth_date),
        sex=row.sex,
        study_count=row.study_count,
    )


def job_of(archive: Archive, row: JobRow) -> Job:
    """The shared job model (``api/jobs.py``) of a deletion job."""
    return job_model(row, archive.jobs.action_for(row.kind))


def browser(archive: Archive) -> BrowseService:
    if archive.browse is None:
        raise OutOfResourcesError("the browse service is not wired")
    return archive.browse


def text_parameter(name: str, value: str | None) -> str:
    """A filter's text, refused (400) when it holds control characters (never SQL's business)."""
    text = (value or "").strip()
    if not _plain(text):
        raise InvalidDataError(f"{name}: control characters are not allowed")
    return text


def _fits(value: Any, kind: str) -> bool:
    if kind == "i":
        return isinstance(value, int) and not isinstance(value, bool)
    if not isinstance(value, str) or not _plain(value):
        return False
    if kind == "t":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
    return True


def position(cursor: str | None, sort: str) -> list[Any] | None:
    """The sort position a cursor names; 400 for one of another list or sort, or not ours."""
    found = decode_cursor(cursor)
    if found is None:
        return None
    key, kinds = found.get("k"), POSITIONS[sort]
    if (
        found.get("s") != sort
        or not isinstance(key, list)
        or len(key) != len(kinds)
        or not all(_fits(v, kind) for v, kind in zip(key, kinds, strict=True))
    ):
        raise InvalidDataError("cursor: not a cursor of this list and sort")
    return key


def _plain(text: str) -> bool:
    """Text without control characters that encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def next_cursor(sort: str, after: list[Any] | None) -> str | None:
    return None if after is None else encode_cursor({"s": sort, "k": after})


def date_range(start: date | None, end: date | None) -> str:
    """A StudyDate range (PS3.4 C.2.2.2.5) from two optional ISO dates."""
    if start is None and end is None:
        return ""
    if start is not None and end is not None and start > end:
        raise InvalidDataError("study_date_from is after study_date_to")
    low = start.isoformat().replace("-", "") if start else ""
    high = end.isoformat().replace("-", "") if end else ""
    return f"{low}-{high}"


StudyUid = Annotated[str, Path(description="Study Instance UID.")]
SeriesUid = Annotated[str, Path(description="Series Instance UID.")]
InstanceUid = Annotated[str, Path(description="SOP Instance UID.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-1000).")]
Cursor = Annotated[str | None, Query(description="The `next` of the previous page.")]


# -- studies --------------------------------------------------------------------------------


@router.get(
    "/studies",
    response_model=Page[Study],
    summary="Search the studies",
    description="The study list: filters combine (AND); `patient_name`, `patient_id`, "
    "`accession_number` and `modality` match as DICOM does (PS3.4 C.2.2.2: exact, or with "
    "`*` and `?` wild cards; names case-insensitively); each word of `description` must "
    "start a word of the Study Description, or with `*`/`?` it is a wild card pattern for the "
    "whole description (both case-insensitive); each word of `q` must start a word of the "
    "patient's name (its components: `doe jan` finds `Doe^Jane`), the patient ID, the "
    "accession number or the "
    "description, case-insensitively (`müller`, `MÜLLER` and `muller` find `Müller`). "
    "Studies the caller may not see are absent.",
)
def list_studies(
    archive: ArchiveDep,
    who: Who,
    patient_name: Annotated[str | None, Query(description="Patient's Name (wild cards).")] = None,
    patient_id: Annotated[str | None, Query(description="Patient ID.")] = None,
    accession_number: Annotated[str | None, Query(description="Accession Number.")] = None,
    study_date_from: Annotated[date | None, Query(description="First study date.")] = None,
    study_date_to: Annotated[date | None, Query(description="Last study date.")] = None,
    modality: Annotated[str | None, Query(description="A modality in the study (CT, MR…).")] = None,
    description: Annotated[
        str | None, Query(description="Word starts of the description, or a `*`/`?` pattern.")
    ] = None,
    q: Annotated[
        str | None, Query(description="Free text: word starts in name, ID, accession, description.")
    ] = None,
    sort: Annotated[
        str,
        Query(
            description="Order: " + ", ".join(STUDY_SORTS) + " (`-`: descending).",
            json_schema_extra={"enum": list(STUDY_SORTS)},
        ),
    ] = "-study_date",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Study]:
    if sort not in STUDY_SORTS:
        raise InvalidDataError(f"sort: one of {', '.join(STUDY_SORTS)}")
    matching = {
        "PatientName": text_parameter("patient_name", patient_name),
        "PatientID": text_parameter("patient_id", patient_id),
        "AccessionNumber": text_parameter("accession_number", accession_number),
        "ModalitiesInStudy": text_parameter("modality", modality),
        "StudyDate": date_range(study_date_from, study_date_to),
    }
    filters = StudyFilters(
        {k: v for k, v in matching.items() if v},
        description=text_parameter("description", description),
        text=text_parameter("q", q),
    )
    after = position(cursor, sort)
    listed = browser(archive).studies(filters, who, sort=sort, after=after, limit=limit)
    return Page[Study](
        items=[study_of(r) for r in listed.rows],
        total=listed.total,
        next=next_cursor(sort, listed.after),
    )


@router.get(
    "/studies/{study_uid}",
    response_model=Study,
    summary="One study",
    description="The study with its patient; `ETag` for `If-None-Match` and for the "
    "`If-Match` of a correction.",
    responses={**_NOT_FOUND, 304: {"description": "Not modified (If-None-Match)"}},
)
def get_study(
    study_uid: StudyUid, archive: ArchiveDep, who: Who, request: Request, response: Response
) -> Any:
    uid = check_uid(study_uid, "study_uid")
    study = study_of(browser(archive).study(uid, who))
    etag = etag_of(study.model_dump_json())
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    response.headers["ETag"] = etag
    return study


@router.get(
    "/studies/{study_uid}/series",
    response_model=list[Series],
    summary="The series of a study",
    description="Every series of the study by Series Number (unnumbered last).",
    responses=_NOT_FOUND,
)
def list_series(study_uid: StudyUid, archive: ArchiveDep, who: Who) -> list[Series]:
    uid = check_uid(study_uid, "study_uid")
    _study, found = browser(archive).series(uid, who)
    return [series_of(r) for r in found]


@router.get(
    "/studies/{study_uid}/series/{series_uid}",
    response_model=Series,
    summary="One series",
    description="A series of the study.",
    responses=_NOT_FOUND,
)
def get_series(study_uid: StudyUid, series_uid: SeriesUid, archive: ArchiveDep, who: Who) -> Series:
    uid = check_uid(study_uid, "study_uid")
    one = check_uid(series_uid, "series_uid")
    _study, found = browser(archive).series(uid, who, one)
    return series_of(found[0])


# -- deleting -------------------------------------------------------------------------------

_DELETED: dict[str, Any] = {
    "status_code": 202,
    "response_model": Job,
    "responses": _NOT_FOUND,
}


@router.delete(
    "/studies/{study_uid}",
    summary="Delete a study",
    description="Queues the deletion of the study's instances and files (a `delete` job of "
    "the delete service, audited; follow it at `/api/v1/jobs/{id}`). Needs `delete`.",
    **_DELETED,
)
def delete_study(study_uid: StudyUid, archive: ArchiveDep, who: Who) -> Job:
    uid = check_uid(study_uid, "study_uid")
    return job_of(archive, browser(archive).delete(who, uid))


@router.delete(
    "/studies/{study_uid}/series/{series_uid}",
    summary="Delete a series",
    description="Queues the deletion of the series (a `delete` job). Needs `delete`.",
    **_DELETED,
)
def delete_series(study_uid: StudyUid, series_uid: SeriesUid, archive: ArchiveDep, who: Who) -> Job:
    uid = check_uid(study_uid, "study_uid")
    one = check_uid(series_uid, "series_uid")
    return job_of(archive, browser(archive).delete(who, uid, one))


@router.delete(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}",
    summary="Delete an instance",
    description="Queues the deletion of one instance (a `delete` job). Needs `delete`.",
    **_DELETED,
)
def delete_instance(
    study_uid: StudyUid,
    series_uid: SeriesUid,
    sop_instance_uid: InstanceUid,
    archive: ArchiveDep,
    who: Who,
) -> Job:
    uid = check_uid(study_uid, "study_uid")
    one = check_uid(series_uid, "series_uid")
    instance = check_uid(sop_instance_uid, "sop_instance_uid")
    return job_of(archive, browser(archive).delete(who, uid, one, instance))


# -- patients -------------------------------------------------------------------------------


@router.get(
    "/patients",
    response_model=Page[Patient],
    summary="Search the patients",
    description="Patients by name; `patient_name` and `patient_id` match as DICOM does "
    "(wild cards `*`, `?`). A patient shows only with a study the caller may see, and "
    "`study_count` counts those.",
)
def list_patients(
    archive: ArchiveDep,
    who: Who,
    patient_name: Annotated[str | None, Query(description="Patient's Name (wild cards).")] = None,
    patient_id: Annotated[str | None, Query(description="Patient ID (wild cards).")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Patient]:
    matching = {
        "PatientName": text_parameter("patient_name", patient_name),
        "PatientID": text_parameter("patient_id", patient_id),
    }
    after = position(cursor, "patients")
    listed = browser(archive).patients(
        {k: v for k, v in matching.items() if v}, who, after=after, limit=limit
    )
    return Page[Patient](
        items=[patient_of(r) for r in listed.rows],
        total=listed.total,
        next=next_cursor("patients", listed.after),
    )


@router.get(
    "/patients/{patient_id}",
    response_model=Patient,
    summary="One patient",
    description="The patient with this Patient ID (and `issuer`, needed when several issuers "
    "use the ID: 409 otherwise).",
    responses={**_NOT_FOUND, 409: {**_PROBLEM, "description": "Several patients have this ID"}},
)
def get_patient(
    patient_id: Annotated[str, Path(description="Patient ID.")],
    archive: ArchiveDep,
    who: Who,
    issuer: Annotated[str | None, Query(description="Issuer of Patient ID.")] = None,
) -> Patient:
    wanted = text_parameter("patient_id", patient_id)
    if not wanted:
        raise InvalidDataError("patient_id is empty")
    given = None if issuer is None else text_parameter("issuer", issuer)
    return patient_of(browser(archive).patient(wanted, given, who))
