"""STOW-RS: the Store transaction (PS3.18 10.5), answered with a Store Instances Response
Module (PS3.18 Annex I) in DICOM JSON (F.2) or XML (PS3.19 A.1).

The request is ``multipart/related; type="application/dicom"`` (one instance per part, 8.6.1.2),
or, as an extension, a single ``application/dicom`` body. The body streams part by part into
staging files; only once its close delimiter has arrived is each part ingested, in order, by the
same service as C-STORE. So a request that is malformed or truncated (400), over
``http.max_upload_mb`` or ``http.max_inflation_ratio`` (413) or cut off stores nothing;
per-instance problems (not DICOM, another study, duplicate refused, disk full) fail that
instance only (Table I.2-2) and the status says how many got in (10.5.3.1): 200 all, 202 some,
409 none.

A request refused before its body was read is answered at once and the connection closed (the
client may be stalling, or waiting for ``100 Continue``); one refused part way through is
drained for a little while first, so a client still sending reads the answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio.to_thread
from pydicom import dcmread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from vesalius.dicom.uids import is_valid_uid
from vesalius.dicomweb.media import parse_accept, parse_media_type
from vesalius.dicomweb.requests import DICOM_JSON, root_url
from vesalius.dicomweb.store_response import (
    CANNOT_UNDERSTAND,
    DICOM_XML,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    Failed,
    Stored,
    answer,
    response_module,
    status_code,
    warning_header,
)
from vesalius.errors import (
    InvalidDataError,
    NotAcceptableError,
    TooLargeError,
    UnsupportedError,
    VesaliusError,
)
from vesalius.identity import Identity
from vesalius.services.archive import Archive
from vesalius.services.ingest import ContentHash
from vesalius.web.requests import error_response, path_uid, who
from vesalius.web.upload import (
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    TrackedBody,
    check_boundary,
    decoded_body,
    decoders_for,
    drain,
)

log = logging.getLogger(__name__)

DICOM = "application/dicom"
#: Part bytes gathered before one write to the staging file (in a worker thread).
FLUSH = 1 << 20
_PEEK = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
}


# ---------------------------------------------------------------------- request checks


def _response_type(request: Request) -> str:
    """The response media type the client accepts (PS3.18 10.5.4); 406 before any upload."""
    for accepted in parse_accept(request.headers.getlist("accept")):
        if accepted.media_type in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return DICOM_JSON
        if accepted.media_type in (DICOM_XML, "application/xml"):
            return DICOM_XML
    raise NotAcceptableError(f"the store response can be returned as {DICOM_JSON} or {DICOM_XML}")


def _boundary(content_type: str | None) -> bytes | None:
    """The multipart boundary, or None for a single-part ``application/dicom`` body.

    415 for any other media type, including the Metadata and Bulkdata forms of STOW
    (``type="application/dicom+json"`` or ``+xml``), which this archive does not accept.
    """
    if not content_type:
        raise UnsupportedError(f'no Content-Type: send multipart/related; type="{DICOM}"')
    media = parse_media_type(content_type)
    if media.media_type == DICOM:
        return None
    if media.media_type != "multipart/related":
        raise UnsupportedError(
            f"Content-Type {media.media_type} is not supported: "
            f'send multipart/related; type="{DICOM}"'
        )
    if media.part_type not in (None, DICOM):
        raise UnsupportedError("only application/dicom parts are supported")
    return check_boundary(media.params.get("boundary"))


def _part_problem(headers: dict[str, str]) -> str:
    """Why a part cannot be an instance (empty when it can): PS3.18 8.6.1.2, one per part.

    A part without a Content-Type is taken as ``application/dicom`` (the request's type).
    """
    content_type = headers.get("content-type")
    if content_type and parse_media_type(content_type).media_type != DICOM:
        return f"part of type {parse_media_type(content_type).media_type[:40]} is not {DICOM}"
    encoding = headers.get("content-transfer-encoding", "binary").lower()
    if encoding not in ("binary", "8bit", "7bit"):
        return f"part Content-Transfer-Encoding {encoding[:20]} is not supported"
    return ""


# ---------------------------------------------------------------------- receiving


@dataclass
class _Part:
    """A part received into a staging file, hashed on the way (SHA-256, as ingest records)."""

    path: Path
    content: ContentHash = field(default_factory=ContentHash)

    def digest(self) -> tuple[int, str]:
        return self.content.digest()


class _Staging:
    """The parts of one request, in order: staging files, and parts refused on sight.

    A part's bytes gather in memory up to :data:`FLUSH` and go to its file in a worker thread,
    which opens the file on the first write, hashes what it writes and closes the file on the
    last: one thread hop for a small part, and ingest does not read the file again to hash it.
    """

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.entries: list[_Part | Failed] = []
        self._part: _Part | None = None  # the part being received, unless it is skipped
        self._file: IO[bytes] | None = None
        self._pending = bytearray()

    def start(self, headers: dict[str, str]) -> None:
        problem = _part_problem(headers)
        if problem:
            self.entries.append(Failed(CANNOT_UNDERSTAND, problem))
            return
        self._part = _Part(self.archive.ingest.staging_path())
        self.entries.append(self._part)

    async def write(self, data: bytes) -> None:
        if self._part is not None:
            self._pending += data
            if len(self._pending) >= FLUSH:
                await self._flush(last=False)

    async def end(self) -> None:
        if self._part is not None:
            await self._flush(last=True)
        self._part = None

    async def _flush(self, *, last: bool) -> None:
        chunk, self._pending = self._pending, bytearray()
        try:
            await anyio.to_thread.run_sync(self._write_out, chunk, last)
        except OSError as exc:
            self._fail_current(exc)

    def _write_out(self, chunk: bytearray, last: bool) -> None:
        part = self._part
        assert part is not None
        if self._file is None:
            self._file = part.path.open("wb")
        self._file.write(chunk)
        part.content.update(chunk)
        if last:
            file, self._file = self._file, None
            file.close()

    def _fail_current(self, exc: OSError) -> None:
        """Writing the staging file failed (disk full?): the part fails with 0xA700."""
        log.warning("STOW-RS: cannot write a staging file: %s", exc)
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()
        if self._part is not None:
            self._part.path.unlink(missing_ok=True)
            self._part = None
        self.entries[-1] = Failed(OUT_OF_RESOURCES, "cannot write the part to staging")
        self._pending = bytearray()

    def discard(self) -> None:
        """Remove every staging file not yet handed to ingest."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._part = None
        for entry in self.entries:
            if isinstance(entry, _Part):
                entry.path.unlink(missing_ok=True)
        self.entries.clear()


async def _receive(body: AsyncIterator[bytes], boundary: bytes | None, staging: _Staging) -> None:
    """Stream the decoded body into staging; raise for a malformed or truncated body."""
    if boundary is None:
        staging.start({})
        async for piece in body:
            await staging.write(piece)
        await staging.end()
        return
    reader = MultipartReader(boundary)
    async for piece in body:
        for event in reader.feed(piece):
            if isinstance(event, PartStart):
                staging.start(event.headers)
            elif isinstance(event, PartData):
                await staging.write(event.data)
            elif isinstance(event, PartEnd):
                await staging.end()
        if reader.complete:
            break  # the epilogue is not read (what is left is drained)
    reader.close()


# ---------------------------------------------------------------------- ingesting


def _peek(path: Path) -> dict[str, str]:
    """The UIDs of a staged part that can be read (valid ones only), for the response.

    Raw elements only (``get_item``): no value conversion, so this costs a fraction of a
    header parse.
    """
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=list(_PEEK))
        raw = {keyword: ds.get_item(tag) for tag, keyword in _PEEK.items()}
    except Exception:  # anything unreadable is reported by ingest; here it only lacks UIDs
        return {}
    found: dict[str, str] = {}
    for keyword, element in raw.items():
        value = getattr(element, "value", None)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        text = str(value or "").strip("\0 ")
        if is_valid_uid(text):
            found[keyword] = text
    return found


def _ingest(
    archive: Archive, part: _Part, identity: Identity, study: str | None
) -> Stored | Failed:
    """Ingest one staged part (blocking); a study in the path must match (Table I.2-2, A9xx).

    The UIDs of a Failed SOP Sequence item come with the error when ingest had read them, or
    from the refused file, which ingest leaves in staging (``keep_refused``) for this.
    """
    path = part.path
    try:
        result = archive.ingest.ingest_staged(
            path, identity, expected_study=study, digest=part.digest(), keep_refused=True
        )
    except VesaliusError as exc:
        if exc.instance is not None:
            sop_class, sop_instance = exc.instance
            return _failed(exc, {"SOPClassUID": sop_class, "SOPInstanceUID": sop_instance})
        return _failed(exc, _peek(path))
    except Exception as exc:
        log.exception("STOW-RS: ingest failed unexpectedly")
        return _failed(exc, _peek(path))
    finally:
        path.unlink(missing_ok=True)  # moved into storage, or refused
    header = result.header
    return Stored(
        header.sop_class_uid,
        header.sop_instance_uid,
        header.study_uid,
        header.series_uid,
        result.outcome,
    )


def _failed(exc: Exception, uids: dict[str, str]) -> Failed:
    if isinstance(exc, VesaliusError):
        reason, message = exc.dimse_status, exc.message
    else:
        reason, message = PROCESSING_FAILURE, "processing failure"
    return Failed(reason, message, uids.get("SOPClassUID", ""), uids.get("SOPInstanceUID", ""))


async def _ingest_all(
    archive: Archive, staging: _Staging, identity: Identity, study: str | None
) -> list[Stored | Failed]:
    results: list[Stored | Failed] = []
    try:
        while staging.entries:
            entry = staging.entries.pop(0)
            if isinstance(entry, Failed):
                results.append(entry)
                continue
            try:
                results.append(
                    await anyio.to_thread.run_sync(_ingest, archive, entry, identity, study)
                )
            finally:
                entry.path.unlink(missing_ok=True)  # _ingest moved or removed it: a backstop
    finally:
        staging.discard()
    return results


# ---------------------------------------------------------------------- the transaction


#: ``http.max_upload_mb = 0``: no limit on the body size.
UNLIMITED = 1 << 62


@dataclass(frozen=True)
class UploadLimits:
    """How much a STOW-RS request may carry: ``max_bytes`` decoded (0: no limit,
    ``http.max_upload_mb``) and at most ``max_inflation_ratio`` times the bytes received once
    decoded (``http.max_inflation_ratio``)."""

    max_bytes: int = 4096 << 20
    max_inflation_ratio: int = 100


async def store(
    archive: Archive, request: Request, limits: UploadLimits = UploadLimits()
) -> Response:
    """``POST /studies`` and ``POST /studies/{study}`` (PS3.18 10.5)."""
    raw = TrackedBody(request.stream())
    staging = _Staging(archive)
    try:
        media_type = _response_type(request)
        study = path_uid(request, "study") if "study" in request.path_params else None
        boundary = _boundary(request.headers.get("content-type"))
        encoding = request.headers.get("content-encoding", "")
        decoders_for(encoding)  # 415 for an unknown coding, before anything is read
        limit = limits.max_bytes or UNLIMITED
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise TooLargeError(f"request body is over the {limit >> 20} MiB limit")
        archive.ingest.may_store(who(request))  # 403 before reading a byte of the body
        await anyio.to_thread.run_sync(archive.ingest.check_space)
        ratio = limits.max_inflation_ratio
        await _receive(decoded_body(raw, encoding, limit, ratio), boundary, staging)
    except VesaliusError as exc:
        staging.discard()
        # Refused before reading: nothing to wait for (a client waiting for "100 Continue", or
        # one that stalls, would keep the answer back). Part way: let a sender read the answer.
        if raw.started and not raw.ended:
            await drain(raw)
        return _closing(error_response(exc), raw)
    except ClientDisconnect as exc:
        staging.discard()
        raise InvalidDataError("the client disconnected before the request body ended") from exc
    except BaseException:
        staging.discard()
        raise
    await drain(raw)  # an epilogue, if any
    if not raw.ended:
        # The close delimiter came but the body did not end (a chunked body without its last
        # chunk, a Content-Length never reached): an incomplete request (RFC 9112 8) stores
        # nothing, so the answer (this, or the server's 408) is never a failure after a store.
        staging.discard()
        problem = InvalidDataError("the request body did not end after its close delimiter")
        return _closing(error_response(problem), raw)
    results = await _ingest_all(archive, staging, who(request), study)
    module = response_module(results, root_url(request), study)
    response = answer(module, status_code(results), media_type, warning_header(results))
    return _closing(response, raw)


def _closing(response: Response, raw: TrackedBody) -> Response:
    """``response``, closing the connection unless the request body was read to its end."""
    if not raw.ended:
        response.headers["connection"] = "close"
    return response
