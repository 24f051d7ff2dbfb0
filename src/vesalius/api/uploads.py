"""Uploads from the UI and scripts: DICOM files and zips (or a folder's files, one by one)
into the archive through the ingest and import services, with what was refused and why.

The body is ``application/dicom`` (one Part 10 file, PS3.10 7.1), ``application/zip``, or
``multipart/form-data`` (RFC 7578) of several files, each a DICOM file or a zip. It streams
into the spool as STOW-RS bodies do (``web/upload.py``: Content-Encoding undone, within
``http.max_upload_mb`` and ``http.max_inflation_ratio``), one staging file per file, memory
bounded by a piece of about a MiB; only once the body has arrived whole is anything stored, so
a malformed, truncated or oversized request stores nothing (4xx, the reason in a problem).
Each file is then stored or refused on its own (``services/uploads.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable
from email.message import Message
from pathlib import Path as FilePath
from typing import IO, Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.problems import MEDIA_TYPE, Problem, problem
from vesalius.errors import InvalidDataError, TooLargeError, UnsupportedError, VesaliusError
from vesalius.services.ingest import ContentHash
from vesalius.services.uploads import Received, UploadReport, UploadService
from vesalius.web.upload import (
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    TrackedBody,
    decoded_body,
    drain,
)

router = APIRouter()

#: Bytes gathered before one write to a staging file (in a worker thread).
FLUSH = 1 << 20
#: Most files one request may carry.
MAX_FILES = 10_000
#: ``http.max_upload_mb = 0``: no limit.
UNLIMITED = 1 << 62
SINGLE_TYPES = {
    "application/dicom": "upload.dcm",
    "application/zip": "upload.zip",
    "application/x-zip-compressed": "upload.zip",
    "application/octet-stream": "upload",
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/dicom": _BINARY,
        "application/zip": _BINARY,
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "DICOM files and zips of them (any field name).",
                    }
                },
            }
        },
    },
}


class StoredItem(BaseModel):
    """A file (or zip member) stored."""

    name: str = Field(description="The file's name as sent (`zip name/member` in a zip).")
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    outcome: str = Field(description="created, replaced, or kept (already stored as is).")


class RefusedItem(BaseModel):
    """A file (or zip member) not stored, and why."""

    name: str
    reason: str


class UploadResult(BaseModel):
    """What an upload stored and refused."""

    stored: list[StoredItem]
    refused: list[RefusedItem]
    study_uids: list[str] = Field(description="The studies instances were stored in.")


def _media(header: str) -> tuple[str, Message]:
    """The media type (lower case) and a message holding the header's parameters."""
    message = Message()
    message["content-type"] = header
    return message.get_content_type(), message


def _file_name(headers: dict[str, str]) -> str | None:
    """The ``filename`` of a form-data part (RFC 7578 4.2), or None for a plain field."""
    disposition = headers.get("content-disposition", "")
    message = Message()
    message["content-disposition"] = disposition
    name = message.get_filename()
    if name is None:
        return None
    with contextlib.suppress(UnicodeError):  # browsers send UTF-8; headers were read as Latin-1
        name = name.encode("latin-1").decode("utf-8")
    return name or "(unnamed)"


class _Incoming:
    """The files of one request, each received into a staging file and hashed on the way."""

    def __init__(self, uploads: UploadService) -> None:
        self.uploads = uploads
        self.files: list[Received] = []
        self._path: FilePath | None = None
        self._name = ""
        self._file: IO[bytes] | None = None
        self._content = ContentHash()
        self._pending = bytearray()

    async def start(self, name: str) -> None:
        if len(self.files) >= MAX_FILES:
            raise TooLargeError(f"more than {MAX_FILES} files in one request")
        self._path = await anyio.to_thread.run_sync(self.uploads.staging_path)
        self._name, self._content, self._file = name, ContentHash(), None

    async def write(self, data: bytes) -> None:
        if self._path is not None:
            self._pending += data
            if len(self._pending) >= FLUSH:
                await self._flush(last=False)

    async def end(self) -> None:
        if self._path is None:
            return
        await self._flush(last=True)
        self.files.append(Received(self._name, self._path, self._content.digest()))
        self._path = None

    async def _flush(self, *, last: bool) -> None:
        chunk, self._pending = self._pending, bytearray()
        await anyio.to_thread.run_sync(self._write_out, chunk, last)

    def _write_out(self, chunk: bytearray, last: bool) -> None:
        assert self._path is not None
        if self._file is None:
            self._file = self._path.open("wb")
        self._file.write(chunk)
        self._content.update(chunk)
        if last:
            file, self._file = self._file, None
            file.close()

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None
        for received in self.files:
            received.path.unlink(missing_ok=True)
        self.files.clear()


async def _receive(
    body: AsyncIterable[bytes], content_type: str, name: str | None, incoming: _Incoming
) -> None:
    """Stream the decoded body into staging files; raise for a malformed or truncated one."""
    media, message = _media(content_type)
    if media in SINGLE_TYPES:
        await incoming.start(name or SINGLE_TYPES[media])
        async for piece in body:
            await incoming.write(piece)
        await incoming.end()
        if not incoming.files[-1].digest or not incoming.files[-1].digest[0]:
            raise InvalidDataError("the request body is empty")
        return
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise InvalidDataError("multipart/form-data without a boundary parameter")
    if len(boundary) > 200 or not boundary.isascii() or not boundary.isprintable():
        raise InvalidDataError("multipart boundary is too long or not printable ASCII")
    reader = MultipartReader(boundary.encode("ascii"))
    filed = False  # whether the current part is a file (plain fields are skipped)
    async for piece in body:
        for event in reader.feed(piece):
            if isinstance(event, PartStart):
                file_name = _file_name(event.headers)
                filed = file_name is not None
                if file_name is not None:
                    await incoming.start(file_name)
            elif isinstance(event, PartData):
                if filed:
                    await incoming.write(event.data)
            elif isinstance(event, PartEnd):
                if filed:
                    await incoming.end()
                filed = False
        if reader.complete:
            break
    reader.close()


def _check_type(content_type: str) -> None:
    if not content_type:
        raise UnsupportedError(
            "no Content-Type: send application/dicom, application/zip or multipart/form-data"
        )
    media, _ = _media(content_type)
    if media not in SINGLE_TYPES and media != "multipart/form-data":
        raise UnsupportedError(
            f"Content-Type {media[:60]} is not supported: send application/dicom, "
            "application/zip or multipart/form-data"
        )


def _result(report: UploadReport) -> dict[str, Any]:
    return UploadResult(
        stored=[StoredItem(**vars(item)) for item in report.stored],
        refused=[RefusedItem(**vars(item)) for item in report.refused],
        study_uids=report.study_uids,
    ).model_dump(mode="json")


def _refusal(exc: VesaliusError, raw: TrackedBody) -> Response:
    kind = type(exc).__name__.removesuffix("Error").lower() or "error"
    headers = None if raw.ended or not raw.started else {"Connection": "close"}
    return problem(exc.http_status, exc.message, kind=kind, headers=headers)


_PROBLEM = {"model": Problem, "content": {MEDIA_TYPE: {}}}


@router.post(
    "/uploads",
    response_model=UploadResult,
    summary="Upload DICOM files and zips",
    description="Store the DICOM files of the body: one `application/dicom` file, an "
    "`application/zip` of them, or `multipart/form-data` with several files, each a DICOM "
    "file or a zip (folders inside zips are walked). The body is received whole before "
    "anything is stored: a malformed, truncated or too large request stores nothing. Then "
    "each file is stored or refused on its own, with the reason (not DICOM, not Part 10, "
    "a DICOMDIR, a corrupt or oversized zip, refused by ingest). 200 when something was "
    "stored or nothing was refused; 409 with the same body when every file was refused.",
    responses={
        409: {"model": UploadResult, "description": "Every file was refused."},
        413: _PROBLEM | {"description": "Over http.max_upload_mb"},
        415: _PROBLEM | {"description": "Not DICOM, a zip or a form"},
        507: _PROBLEM | {"description": "Storage is full"},
    },
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def upload(
    request: Request,
    archive: ArchiveDep,
    who: Who,
    name: Annotated[
        str | None,
        Query(max_length=255, description="Name of a single-file body, shown back."),
    ] = None,
) -> Response:
    uploads = archive.uploads
    if uploads is None:
        raise UnsupportedError("this archive takes no uploads")
    raw = TrackedBody(request.stream())
    incoming = _Incoming(uploads)
    try:
        content_type = request.headers.get("content-type", "")
        _check_type(content_type)
        limit = uploads.max_bytes or UNLIMITED
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise TooLargeError(f"request body is over the {limit >> 20} MiB limit")
        await anyio.to_thread.run_sync(uploads.may_upload, who)
        encoding = request.headers.get("content-encoding", "")
        body = decoded_body(raw, encoding, limit, uploads.max_inflation_ratio)
        await _receive(body, content_type, name, incoming)
        if not incoming.files:
            raise InvalidDataError("the request holds no files")
        await drain(raw)  # an epilogue, if any
        if not raw.ended:  # the close delimiter came but the body did not end (RFC 9112 8)
            raise InvalidDataError("the request body did not end after its close delimiter")
    except VesaliusError as exc:
        incoming.discard()
        if raw.started and not raw.ended:
            await drain(raw)
        return _refusal(exc, raw)
    except ClientDisconnect as exc:
        incoming.discard()
        raise InvalidDataError("the client disconnected before the request body ended") from exc
    except BaseException:
        incoming.discard()
        raise
    report = await anyio.to_thread.run_sync(uploads.store, incoming.files, who)
    status = 409 if report.refused and not report.stored else 200
    return JSONResponse(_result(report), status_code=status)
