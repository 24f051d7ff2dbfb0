"""Send to a peer (C-STORE or STOW-RS) as a job, query a remote AE (C-FIND, synchronous), and
retrieve from it (C-MOVE into Vesalius, or C-GET) as a job."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.jobs import Job, job_model
from vesalius.api.problems import MEDIA_TYPE, Problem
from vesalius.dicom.uids import check_uid
from vesalius.errors import NotFoundError
from vesalius.services.remote import RemoteService
from vesalius.services.retrieve import RetrieveKeys

router = APIRouter()

_BAD_GATEWAY: dict[int | str, dict[str, Any]] = {
    502: {
        "model": Problem,
        "content": {MEDIA_TYPE: {}},
        "description": "The peer refused, failed, or did not answer in time",
    }
}


class Target(BaseModel):
    """A known peer as the send and Query/Retrieve dialogs offer it."""

    name: str = Field(description="The peer's name.")
    ae_title: str = Field(description="Its AE title.")
    dicomweb: bool = Field(description="Whether it has a DICOMweb URL (STOW-RS possible).")


class SendRequest(BaseModel):
    """What to send where."""

    peer: str = Field(min_length=1, max_length=64, description="A known peer's name or AE title.")
    series_uids: list[str] | None = Field(
        default=None,
        max_length=1000,
        description="Only these series of the study (default: the whole study).",
    )
    via: Literal["dimse", "dicomweb"] = Field(
        default="dimse",
        description="``dimse``: C-STORE to the peer's AE; ``dicomweb``: STOW-RS to its "
        "DICOMweb URL.",
    )


class QueryRequest(BaseModel):
    """A C-FIND on a remote AE (Study Root)."""

    level: Literal["study", "series"] = Field(default="study", description="Query level.")
    keys: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Matching keys by DICOM keyword (``PatientName``: ``DOE*``, ``StudyDate``: "
        "``20240101-20241231``, ``ModalitiesInStudy``: ``CT``…; PS3.4 C.2.2.2). A series "
        "query needs ``StudyInstanceUID``. The usual return keys of the level are asked for "
        "besides.",
        examples=[{"PatientName": "DOE*", "StudyDate": "20240101-"}],
    )


class QueryAnswer(BaseModel):
    """The matches of a remote query."""

    items: list[dict[str, Any]] = Field(
        description="One flat object per match, keyed by DICOM keyword: text values (a person "
        "name in its DICOM form, ``Family^Given``; dates as ``YYYYMMDD``), numbers for "
        "counts, a list where there are several values."
    )
    truncated: bool = Field(
        default=False,
        description="More matched than ``query.remote_max_results``: the C-FIND was cancelled.",
    )


class RetrieveRequest(BaseModel):
    """What to retrieve from a remote AE into this archive, and how."""

    study_uid: str = Field(min_length=1, max_length=64, description="Study Instance UID.")
    series_uid: str | None = Field(
        default=None, max_length=64, description="Only this series of the study."
    )
    method: Literal["move", "get"] = Field(
        default="move",
        description="``move``: C-MOVE with this archive's AE title as destination (the peer "
        "must know it); ``get``: C-GET, the instances come back on the same association.",
    )


@router.get(
    "/transfers/peers",
    response_model=list[Target],
    summary="The peers one may send to, query and retrieve from",
    description="Every known peer's name and AE title, and whether it has a DICOMweb URL, "
    "for whoever may query (``GET /peers``, with addresses and permissions, is for "
    "administrators).",
)
def targets(archive: ArchiveDep, who: Who) -> list[Target]:
    return [
        Target(name=p.name, ae_title=p.ae_title, dicomweb=bool(p.dicomweb_url))
        for p in _remote(archive).targets(who)
    ]


@router.post(
    "/studies/{study_uid}/send",
    response_model=Job,
    status_code=202,
    summary="Send a study (or some of its series) to a peer, as a job",
    description="Queues a job of kind ``send`` (C-STORE sub-operations to the peer's AE, "
    "PS3.4 B) or ``send-dicomweb`` (STOW-RS to the peer's DICOMweb URL, PS3.18 10.5). "
    "Follow it with ``GET /jobs/{id}`` or the event stream. 404 when the peer is unknown or "
    "nothing stored matches; 400 when ``via`` is ``dicomweb`` and the peer has no DICOMweb URL.",
)
def send(study_uid: str, body: SendRequest, archive: ArchiveDep, who: Who) -> Job:
    study = check_uid(study_uid, "StudyInstanceUID")
    if body.series_uids:
        series = tuple(check_uid(uid, "SeriesInstanceUID") for uid in body.series_uids)
        keys = RetrieveKeys("SERIES", study_uids=(study,), series_uids=series)
    else:
        keys = RetrieveKeys("STUDY", study_uids=(study,))
    return job_model(archive.sending.submit(keys, body.peer, who, body.via))


@router.post(
    "/peers/{name}/query",
    response_model=QueryAnswer,
    summary="Query a remote AE (C-FIND)",
    description="A Study Root C-FIND (PS3.4 C.4.1) on the peer, answered within "
    "``query.remote_timeout`` seconds; at most ``query.remote_max_results`` matches. 502 when "
    "the peer cannot be reached, refuses or fails the query, or does not answer in time.",
    responses=_BAD_GATEWAY,
)
def query(name: str, body: QueryRequest, archive: ArchiveDep, who: Who) -> QueryAnswer:
    remote = _remote(archive)
    found = remote.query(name, body.level, body.keys, who)
    return QueryAnswer(items=found.items, truncated=found.truncated)


@router.post(
    "/peers/{name}/retrieve",
    response_model=Job,
    status_code=202,
    summary="Retrieve a study or series from a remote AE into this archive, as a job",
    description="Queues a job of kind ``retrieve``: a C-MOVE to this archive's own AE title "
    "(PS3.4 C.4.2; the peer must know our AE title, host and port) or a C-GET (PS3.4 C.4.3). "
    "Its progress (``done`` of ``total``) comes from the peer's pending responses. Needs the "
    "``store`` permission: the instances join this archive.",
)
def retrieve(name: str, body: RetrieveRequest, archive: ArchiveDep, who: Who) -> Job:
    remote = _remote(archive)
    row = remote.retrieve(
        name, body.study_uid, who, series_uid=body.series_uid or None, method=body.method
    )
    return job_model(row)


def _remote(archive: ArchiveDep) -> RemoteService:
    if archive.remote is None:
        raise NotFoundError("querying and retrieving from remote AEs is not set up here")
    return archive.remote
