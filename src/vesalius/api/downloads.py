"""A study or a selection as a streamed ZIP, or as DICOM media (a DICOMDIR file set,
PS3.10/PS3.11).

``GET /studies/{study_uid}/download`` and ``GET /download?study=…&series=…`` answer
``application/zip`` as it is made (chunked; no length is known ahead), with a
``Content-Disposition`` naming the file, so a browser following a plain link writes it to
disk as it comes. ``format=zip``: the stored files in patient / study / series folders named
from the index; ``format=media``: a DICOM file set (``DICOMDIR`` and ``DICOM/…`` File IDs) to
unpack onto a USB stick or a CD. The work is ``services/downloads.py``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Path, Query
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.problems import MEDIA_TYPE, Problem, problem
from vesalius.dicom.uids import check_uid
from vesalius.identity import Identity
from vesalius.services.archive import Archive
from vesalius.services.downloads import MAX_SELECTED, Download, Selection

router = APIRouter()


class ClosingStream(StreamingResponse):
    """A streamed answer from a blocking generator (read in worker threads) that is closed
    when the answer ends, however it ends: a client that goes away closes it at once, so its
    ``finally`` (the audit record) runs then, not whenever the garbage collector gets to it.
    Starlette leaves a body iterator it did not finish alone."""

    def __init__(self, chunks: Generator[bytes, None, None], **options: Any) -> None:
        self.chunks = chunks
        super().__init__(self._body(), **options)

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            # not abandoned on cancellation: no thread is inside the generator once we end
            chunk = await anyio.to_thread.run_sync(next, self.chunks, None)
            if chunk is None:
                return
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.chunks.close)


FormatQuery = Annotated[
    Literal["zip", "media"],
    Query(
        alias="format",
        description="`zip`: the stored files in patient/study/series folders named from the "
        "index; `media`: a DICOM file set with its DICOMDIR (PS3.10, PS3.11), zipped.",
    ),
]
_ZIP_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The ZIP, streamed as it is made (Content-Disposition: attachment).",
    },
    503: {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": "Not available"},
}


def _answer(archive: Archive, selection: Selection, who: Identity, fmt: str) -> Response:
    if archive.downloads is None:
        return problem(503, "downloads are not configured on this server")
    download: Download = archive.downloads.download(
        selection,
        who,
        "media" if fmt == "media" else "zip",
    )
    return ClosingStream(
        download.chunks,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{download.filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Instances": str(download.instances),
            "X-Stored-Bytes": str(download.size),
        },
    )


@router.get(
    "/studies/{study_uid}/download",
    response_class=StreamingResponse,
    responses=_ZIP_ANSWER,
    summary="Download a study as a ZIP or as DICOM media",
    description="The study's stored files, byte for byte, in a ZIP streamed as it is made "
    "(stored entries, ZIP64 where needed). `format=media` makes it a DICOM file set: "
    "`DICOMDIR` (PS3.3 F: PATIENT, STUDY, SERIES, IMAGE records) and the files under "
    "`DICOM/` with 8-character File IDs (PS3.10 8.5). 404 when no study of this UID is "
    "visible to you. Audited as an Export (PS3.15 A.5.3.8).",
)
def download_study(
    study_uid: Annotated[str, Path(description="Study Instance UID.")],
    archive: ArchiveDep,
    who: Who,
    fmt: FormatQuery = "zip",
) -> Response:
    uid = check_uid(study_uid, "StudyInstanceUID")
    return _answer(archive, Selection(study_uids=(uid,)), who, fmt)


@router.get(
    "/download",
    response_class=StreamingResponse,
    responses=_ZIP_ANSWER,
    summary="Download a selection of studies and series as a ZIP or as DICOM media",
    description="As `GET /studies/{study_uid}/download`, for whole studies (`study`, "
    f"repeated) and single series (`series`, repeated), {MAX_SELECTED} UIDs at most. "
    "400 when none is given or one is not a UID; 404 when none is visible to you.",
)
def download_selection(
    archive: ArchiveDep,
    who: Who,
    study: Annotated[
        list[str], Query(description="Study Instance UID (repeat for more).", max_length=1000)
    ] = [],  # noqa: B006  (FastAPI reads the default, never mutates it)
    series: Annotated[
        list[str], Query(description="Series Instance UID (repeat for more).", max_length=1000)
    ] = [],  # noqa: B006
    fmt: FormatQuery = "zip",
) -> Response:
    for uid in (*study, *series):
        check_uid(uid, "UID")
    return _answer(archive, Selection(tuple(study), tuple(series)), who, fmt)
