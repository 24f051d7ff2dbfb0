"""A series' instances: list, get, and all tags of one as DICOM JSON (PS3.18 F.2)."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.etags import etag_of, not_modified
from vesalius.api.paging import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, encode_cursor
from vesalius.api.problems import PROBLEM_RESPONSES
from vesalius.dicom.dictionary import names
from vesalius.dicom.metadata import with_root
from vesalius.dicom.uids import check_uid
from vesalius.errors import InvalidDataError, UnsupportedError
from vesalius.services.instances import InstanceRow, InstanceService, Position
from vesalius.web.requests import base_url

router = APIRouter()

#: Where DICOMweb answers, below the server's base URL (the BulkDataURIs point there).
DICOMWEB_ROOT = "/dicom-web"

StudyUid = Annotated[str, Path(description="Study Instance UID.", max_length=64)]
SeriesUid = Annotated[str, Path(description="Series Instance UID.", max_length=64)]
InstanceUid = Annotated[str, Path(description="SOP Instance UID.", max_length=64)]


class Instance(BaseModel):
    """One stored instance, as the index holds it."""

    sop_instance_uid: str
    sop_class_uid: str
    number: int | None = Field(description="Instance Number (0020,0013).")
    rows: int | None
    columns: int | None
    frames: int | None = Field(description="Number of Frames (0028,0008); null: single frame.")
    size: int = Field(description="Size of the stored file in bytes.")
    transfer_syntax_uid: str = Field(description="Transfer syntax the file is stored in.")


class DicomAttribute(BaseModel):
    """One attribute of a DICOM JSON data set (PS3.18 F.2.2): its VR and a ``Value`` array
    (items of a sequence are data sets), or a ``BulkDataURI`` (F.2.6) or ``InlineBinary``."""

    model_config = ConfigDict(populate_by_name=True)

    vr: str
    value: list[Any] | None = Field(default=None, alias="Value")
    bulk_data_uri: str | None = Field(default=None, alias="BulkDataURI")
    inline_binary: str | None = Field(default=None, alias="InlineBinary")


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: PROBLEM_RESPONSES[404]
    | {"description": "No such study, series or instance (or not visible)."}
}


def _service(archive: ArchiveDep) -> InstanceService:
    if archive.instances is None:
        raise UnsupportedError("this archive lists no instances")
    return archive.instances


def _uids(study: str, series: str, instance: str | None = None) -> tuple[str, ...]:
    """The path's UIDs checked (PS3.5 9.1): 400 for one that is not a UID."""
    checked = [check_uid(study, "study_uid"), check_uid(series, "series_uid")]
    if instance is not None:
        checked.append(check_uid(instance, "sop_instance_uid"))
    return tuple(checked)


def _instance(row: InstanceRow) -> Instance:
    return Instance(
        sop_instance_uid=row.sop_instance_uid,
        sop_class_uid=row.sop_class_uid,
        number=row.instance_number,
        rows=row.rows,
        columns=row.columns,
        frames=row.frames,
        size=row.size,
        transfer_syntax_uid=row.transfer_syntax_uid,
    )


def _position(cursor: str | None) -> Position | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    after = position.get("after")
    if (
        not isinstance(after, list)
        or len(after) != 3
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in after)
        or not all(-(1 << 62) < n < 1 << 62 for n in after)
    ):
        raise InvalidDataError("cursor: not a cursor this server gave")
    return (after[0], after[1], after[2])


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances",
    response_model=Page[Instance],
    summary="A series' instances",
    description="The instances of a series in Instance Number order (unnumbered last), a page "
    "at a time: pass `next` back as `cursor` for the page after. `total` counts the series.",
    responses=_NOT_FOUND,
)
def list_instances(
    study_uid: StudyUid,
    series_uid: SeriesUid,
    archive: ArchiveDep,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = (
        DEFAULT_LIMIT
    ),
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next` of the previous page.")
    ] = None,
) -> Page[Instance]:
    study, series = _uids(study_uid, series_uid)
    page = _service(archive).page(study, series, who, limit=limit, after=_position(cursor))
    return Page[Instance](
        items=[_instance(row) for row in page.items],
        total=page.total,
        next=encode_cursor({"after": list(page.after)}) if page.after else None,
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}",
    response_model=Instance,
    summary="One instance",
    description="What the index holds of one instance. The ETag changes when its file does.",
    responses=_NOT_FOUND | {304: {"description": "Not modified (If-None-Match)."}},
)
def get_instance(
    study_uid: StudyUid,
    series_uid: SeriesUid,
    sop_instance_uid: InstanceUid,
    request: Request,
    archive: ArchiveDep,
    who: Who,
) -> Response:
    study, series, sop = _uids(study_uid, series_uid, sop_instance_uid)
    row = _service(archive).get(study, series, sop, who)
    etag = etag_of(row.sop_instance_uid, row.sha256)
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    body = _instance(row).model_dump(mode="json")
    return JSONResponse(body, headers={"ETag": etag})


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}/tags",
    response_model=dict[str, DicomAttribute],
    summary="All tags of one instance (DICOM JSON)",
    description="The data set of the instance's stored file in the DICOM JSON model "
    "(PS3.18 F.2), keyed by tag (`GGGGEEEE`): sequences nested, private elements with their "
    "Private Creator, and values over 1 KiB and the pixel data as `BulkDataURI`s pointing at "
    "this server's DICOMweb bulk data resources (PS3.18 10.4.1.1.5). The File Meta "
    "Information (group 0002) is not part of the data set; Available Transfer Syntax UID "
    "(0008,3002) names the stored transfer syntax.",
    responses=_NOT_FOUND | {304: {"description": "Not modified (If-None-Match)."}},
)
def instance_tags(
    study_uid: StudyUid,
    series_uid: SeriesUid,
    sop_instance_uid: InstanceUid,
    request: Request,
    archive: ArchiveDep,
    who: Who,
) -> Response:
    study, series, sop = _uids(study_uid, series_uid, sop_instance_uid)
    row, document = _service(archive).tags(study, series, sop, who)
    etag = etag_of("tags", row.sop_instance_uid, row.sha256)
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    root = base_url(request) + DICOMWEB_ROOT
    text = with_root(json.dumps(document, separators=(",", ":"), ensure_ascii=False), root)
    return Response(text, media_type="application/json", headers={"ETag": etag})


@functools.cache
def _dictionary() -> tuple[str, str]:
    """The dictionary's JSON text and its ETag (made once)."""
    text = json.dumps(names(), separators=(",", ":"), sort_keys=True)
    return text, etag_of(text)


@router.get(
    "/dictionary",
    response_model=dict[str, list[str]],
    summary="The DICOM data dictionary",
    description="Each tag's keyword and name (PS3.6), keyed `GGGGEEEE`; repeating groups "
    "under their mask (`60xx3000`: `x` stands for any hex digit). For showing the tags of "
    "an instance to people; cacheable.",
    responses={304: {"description": "Not modified (If-None-Match)."}},
)
def dictionary(request: Request) -> Response:
    text, etag = _dictionary()
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    headers = {"ETag": etag, "Cache-Control": "max-age=86400"}
    return Response(text, media_type="application/json", headers=headers)
