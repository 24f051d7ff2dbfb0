"""Corrections of patient and study attributes (with undo), and de-identification into a new
study or a download.

A correction (``services/corrections.py``) rewrites the index and every stored file it concerns,
pixel data untouched, as a job; the previous files are kept ``corrections.keep_days`` so it can
be undone. ``If-Match`` with the study's ETag (``GET /studies/{uid}``) refuses a correction made
from a stale read (412). De-identification (PS3.15 Annex E, ``services/deidentify.py``) makes a
new study in the archive as a job, or streams a ZIP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.etags import check_if_match, etag_of
from vesalius.api.jobs import Job
from vesalius.api.paging import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, encode_cursor
from vesalius.api.problems import Problem
from vesalius.api.resources import StudyUid, browser, job_of, study_of
from vesalius.dicom.uids import check_uid
from vesalius.errors import InvalidDataError, OutOfResourcesError
from vesalius.services.archive import Archive
from vesalius.services.corrections import Correction as CorrectionRecord
from vesalius.services.corrections import CorrectionService
from vesalius.services.deidentify import OPTIONS, DeidentifyService

router = APIRouter()

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    404: {**_PROBLEM, "description": "No such study or correction"},
    409: {**_PROBLEM, "description": "Conflicts with the archive as it is"},
}
Option = Literal[
    "retain_uids",
    "retain_device",
    "retain_institution",
    "retain_patient_characteristics",
    "retain_full_dates",
    "modify_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
    "retain_safe_private",
]
assert set(get_args(Option)) == set(OPTIONS)


class CorrectionRequest(BaseModel):
    """The attributes to correct (only those given change) and why."""

    model_config = ConfigDict(extra="forbid")

    patient_name: str | None = Field(
        default=None, max_length=324, description="Patient's Name (0010,0010), ``Family^Given``."
    )
    patient_id: str | None = Field(
        default=None,
        max_length=64,
        description="Patient ID (0010,0020). Another patient's ID moves the study to them.",
    )
    patient_birth_date: str | None = Field(
        default=None, max_length=10, description="Patient's Birth Date, ``YYYY-MM-DD`` or empty."
    )
    patient_sex: str | None = Field(
        default=None, max_length=1, description="Patient's Sex (0010,0040): M, F, O or empty."
    )
    accession_number: str | None = Field(
        default=None, max_length=16, description="Accession Number (0008,0050)."
    )
    study_description: str | None = Field(
        default=None, max_length=64, description="Study Description (0008,1030)."
    )
    reason: str | None = Field(default=None, max_length=1000, description="Why (kept with it).")


class Change(BaseModel):
    """One attribute's value before and after (dates as ``YYYYMMDD``, as in DICOM)."""

    old: str
    new: str


class Correction(BaseModel):
    """A correction and the job applying it (or undoing it)."""

    id: int
    study_uid: str
    changes: dict[str, Change] = Field(
        description="Each attribute changed (patient_name, patient_id, patient_birth_date, "
        "patient_sex, accession_number, study_description)."
    )
    state: str = Field(
        description="pending, applied, failed, undoing, undone, or expired (its previous "
        "files removed after corrections.keep_days: it can no longer be undone)."
    )
    reason: str
    message: str = Field(description="What the last run did, or why it failed.")
    created_at: datetime
    created_by: str
    job: Job | None


class AnonymizeRequest(BaseModel):
    """What to keep (PS3.15 E.3 options; none: the Basic Profile)."""

    model_config = ConfigDict(extra="forbid")

    options: list[Option] = Field(default_factory=list, max_length=len(OPTIONS))
    include_burned_in: bool = Field(
        default=False,
        description="Write instances whose pixels may show text too (otherwise left out).",
    )


class Anonymized(BaseModel):
    """The new study's UID and the job making it."""

    study_uid: str
    job: Job


def correction_of(archive: Archive, record: CorrectionRecord) -> Correction:
    row = record.row
    return Correction(
        id=row.pk,
        study_uid=row.study_uid,
        changes={f: Change(old=c["old"], new=c["new"]) for f, c in row.changes.items()},
        state=row.state,
        reason=row.reason,
        message=row.message,
        created_at=row.created_at,
        created_by=row.created_by,
        job=job_of(archive, record.job) if record.job is not None else None,
    )


def corrections(archive: Archive) -> CorrectionService:
    if archive.corrections is None:
        raise OutOfResourcesError("the corrections service is not wired")
    return archive.corrections


def deidentifier(archive: Archive) -> DeidentifyService:
    if archive.deidentify is None:
        raise OutOfResourcesError("de-identification is not wired")
    return archive.deidentify


CorrectionId = Annotated[int, Path(ge=1, le=2**62, description="The correction's id.")]


@router.post(
    "/studies/{study_uid}/corrections",
    response_model=Correction,
    status_code=202,
    summary="Correct a study's patient and study attributes",
    description="Changes the attributes given, in the index and in every stored file they "
    "concern (pixel data untouched), as a job; the previous files are kept "
    "`corrections.keep_days` for an undo. The patient's name, birth date and sex change for "
    "all their studies; a Patient ID of another patient moves the study to that patient. "
    "`If-Match` with the study's ETag refuses a correction of a study changed since (412).",
    responses={
        **_CONFLICT,
        412: {**_PROBLEM, "description": "The study changed since it was read (If-Match)"},
    },
)
def correct_study(
    study_uid: StudyUid, body: CorrectionRequest, request: Request, archive: ArchiveDep, who: Who
) -> Correction:
    uid = check_uid(study_uid, "study_uid")
    if request.headers.get("if-match"):
        current = study_of(browser(archive).study(uid, who))
        check_if_match(request, etag_of(current.model_dump_json()))
    values = body.model_dump(exclude_none=True, exclude={"reason"})
    record = corrections(archive).submit(uid, values, who, body.reason or "")
    return correction_of(archive, record)


@router.get(
    "/studies/{study_uid}/corrections",
    response_model=Page[Correction],
    summary="A study's corrections",
    description="Newest first, with each one's job.",
    responses=_CONFLICT,
)
def list_corrections(
    study_uid: StudyUid,
    archive: ArchiveDep,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[Correction]:
    uid = check_uid(study_uid, "study_uid")
    position = decode_cursor(cursor)
    before = None
    if position is not None:
        before = position.get("before")
        if not isinstance(before, int) or isinstance(before, bool) or not 0 < before < 2**62:
            raise InvalidDataError("cursor: not a cursor this server gave")
    found, total = corrections(archive).list(uid, who, limit=limit, before=before)
    more = len(found) == limit and found[-1].row.pk > 1
    return Page[Correction](
        items=[correction_of(archive, c) for c in found],
        total=total,
        next=encode_cursor({"before": found[-1].row.pk}) if more else None,
    )


@router.get(
    "/corrections/{correction_id}",
    response_model=Correction,
    summary="One correction",
    description="The correction, its state and its job's progress.",
    responses=_CONFLICT,
)
def get_correction(correction_id: CorrectionId, archive: ArchiveDep, who: Who) -> Correction:
    return correction_of(archive, corrections(archive).get(correction_id, who))


@router.post(
    "/corrections/{correction_id}/undo",
    response_model=Correction,
    status_code=202,
    summary="Undo a correction",
    description="Puts back the previous files and index values, as a job. Only the latest "
    "applied correction of a study, within `corrections.keep_days`.",
    responses=_CONFLICT,
)
def undo_correction(correction_id: CorrectionId, archive: ArchiveDep, who: Who) -> Correction:
    return correction_of(archive, corrections(archive).undo(correction_id, who))


@router.post(
    "/studies/{study_uid}/anonymize",
    response_model=Anonymized,
    status_code=202,
    summary="De-identify a study into a new study",
    description="PS3.15 Annex E Basic Profile with the options chosen, into a new study of "
    "this archive (its UID is returned at once; the job makes it). Instances whose pixels may "
    "show text are left out unless `include_burned_in`.",
    responses=_CONFLICT,
)
def anonymize_study(
    study_uid: StudyUid, body: AnonymizeRequest, archive: ArchiveDep, who: Who
) -> Anonymized:
    uid = check_uid(study_uid, "study_uid")
    submitted = deidentifier(archive).submit(uid, list(body.options), body.include_burned_in, who)
    return Anonymized(study_uid=submitted.study_uid, job=job_of(archive, submitted.job))


@router.get(
    "/studies/{study_uid}/anonymized.zip",
    summary="Download a study de-identified, as a ZIP",
    description="PS3.15 Annex E Basic Profile with the `options` chosen (repeat the "
    "parameter), streamed as it is made; files `S001/I00001.dcm`... Instances whose pixels "
    "may show text are left out.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "The ZIP"},
        **_CONFLICT,
    },
)
def anonymized_zip(
    study_uid: StudyUid,
    archive: ArchiveDep,
    who: Who,
    options: Annotated[list[Option] | None, Query(max_length=len(OPTIONS))] = None,
) -> StreamingResponse:
    uid = check_uid(study_uid, "study_uid")
    pieces = deidentifier(archive).stream(uid, list(options or []), who)
    return StreamingResponse(
        pieces,
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="anonymized.zip"'},
    )
