"""WADO-RS bulk data (PS3.18 10.4.1.1.5): the values BulkDataURIs in metadata point at.

Answers ``multipart/related; type="application/octet-stream"`` (the standard's form) or, when the
client accepts it, single-part ``application/octet-stream``, which supports HTTP Range
(RFC 9110 14) so large values can be fetched in pieces. Native pixel data streams straight from
its place in the file; encapsulated pixel data is returned frame by frame (multipart only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vesalius.dicom import frames as pixel_frames
from vesalius.dicom.bulkdata import read_bulk_value
from vesalius.dicom.structure import PIXEL_DATA_TAGS, find_pixel_data
from vesalius.dicomweb import multipart
from vesalius.dicomweb.frames import OCTET, choose_form
from vesalius.dicomweb.media import parse_accept
from vesalius.dicomweb.retrieve import plan_for
from vesalius.errors import NotAcceptableError, NotFoundError
from vesalius.services.archive import Archive
from vesalius.services.retrieve import InstanceLocation

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    """The Range header asks for bytes past the end (HTTP 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end exclusive) of a single ``bytes=`` range, or None for the whole value.
    Several ranges are answered with the whole value (RFC 9110 allows ignoring Range)."""
    if not header or "," in header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.group(0) == "bytes=-":
        return None
    first, last = match.groups()
    if first == "":
        length = min(int(last), size)
        return (size - length, size) if length else None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise RangeNotSatisfiable
    return start, end


def _wants_single(request: Request) -> bool:
    for accepted in parse_accept(request.headers.getlist("accept")):
        if accepted.media_type == OCTET:
            return True
        if accepted.media_type in ("multipart/related", "*/*", "multipart/*") and (
            accepted.part_type in (None, OCTET, "*/*")
        ):
            return False
    raise NotAcceptableError(
        'bulk data can be returned as multipart/related; type="application/octet-stream" '
        "or application/octet-stream"
    )


def _ranged(request: Request, size: int) -> tuple[int, int, int, dict[str, str]]:
    """Status, start, end and headers for a single-part answer of ``size`` bytes."""
    try:
        span = parse_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        return 416, 0, 0, {"Content-Range": f"bytes */{size}"}
    headers = {"Accept-Ranges": "bytes"}
    if span is None:
        headers["Content-Length"] = str(size)
        return 200, 0, size, headers
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    return 206, start, end, headers


def _pixel_data(
    archive: Archive, request: Request, instance: InstanceLocation, single: bool
) -> Response:
    with archive.retrieve.open(instance) as stored:
        element = find_pixel_data(stored, instance.transfer_syntax_uid)
        count = pixel_frames.frame_count(stored)
    if count == 0:
        raise NotFoundError("the instance has no pixel data")
    if element is not None and not element.encapsulated and single:
        status, start, end, headers = _ranged(request, element.length)
        if status == 416:
            return Response(status_code=416, headers=headers)

        span = archive.retrieve.open_range(instance, element.offset + start, element.offset + end)
        return StreamingResponse(span, status_code=status, media_type=OCTET, headers=headers)
    if single:
        raise NotAcceptableError(
            "encapsulated pixel data is returned frame by frame, as multipart/related only"
        )
    form = choose_form(
        parse_accept([f"multipart/related; type={OCTET}; transfer-syntax=*"]),
        instance.transfer_syntax_uid,
    )
    boundary = multipart.new_boundary()

    def parts() -> Iterator[multipart.Part]:
        with (
            archive.retrieve.open(instance) as stored,
            pixel_frames.open_frames(stored, lean=True) as reader,
        ):
            for number in range(1, count + 1):
                yield multipart.Part(form.part_content_type, [reader.read(number)])

    return StreamingResponse(
        multipart.stream(parts(), boundary), media_type=multipart.content_type(OCTET, boundary)
    )


def bulkdata(archive: Archive, request: Request) -> Response:
    """``GET …/instances/{instance}/bulkdata/{tag path}``."""
    tag_path = request.path_params["path"]
    single = _wants_single(request)
    plan = plan_for(archive, request, "WADO-RS bulkdata")
    instance = plan.instances[0]
    with archive.retrieve.transfer(plan) as tally:  # audited as asked, whatever comes back
        tally.sent()
    if tag_path.upper() in {f"{t:08X}" for t in PIXEL_DATA_TAGS}:
        return _pixel_data(archive, request, instance, single)
    with archive.retrieve.open(instance) as stored:
        value = read_bulk_value(stored, tag_path)
    if single:
        status, start, end, headers = _ranged(request, len(value))
        if status == 416:
            return Response(status_code=416, headers=headers)
        return Response(value[start:end], status_code=status, media_type=OCTET, headers=headers)
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream([multipart.Part(OCTET, [value])], boundary))
    return Response(body, media_type=multipart.content_type(OCTET, boundary))
