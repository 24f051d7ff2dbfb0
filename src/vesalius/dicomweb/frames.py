"""WADO-RS frames: pixel data of chosen frames of one instance (PS3.18 10.4.1.1.5, 8.7.4).

``…/frames/1,3`` answers ``multipart/related`` with one part per frame, in order. What a part
holds follows the Accept header: ``application/octet-stream; transfer-syntax=*`` (what OHIF asks)
gives each frame as stored; ``application/octet-stream`` with no syntax (or Explicit VR Little
Endian) gives native pixels, decoding compressed frames; ``image/jls``, ``image/jp2``… give the
stored compressed frame when it is in that form. One frame may also be asked for single-part.
Each part's Content-Type carries the ``transfer-syntax`` of its bytes, which viewers use to pick
a decoder. Only the frames asked for are read from the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vesalius.dicom import frames as pixel_frames
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, UNCOMPRESSED_SYNTAXES
from vesalius.dicomweb import multipart
from vesalius.dicomweb.media import FRAME_MEDIA_TYPES, MediaRange, parse_accept
from vesalius.dicomweb.retrieve import begin_transfer, plan_for
from vesalius.errors import NotAcceptableError, NotFoundError, QueryError, UnsupportedError
from vesalius.services.archive import Archive

OCTET = "application/octet-stream"
MAX_FRAMES_IN_LIST = 10000


def parse_frame_list(text: str) -> list[int]:
    """``1,2,5`` → ``[1, 2, 5]`` (PS3.18 10.4.1.1.5: positive integers, 1-based)."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1 or len(item) > 9:
            raise QueryError(f"frame list {text[:40]!r}: frames are numbered from 1")
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_IN_LIST:
        raise QueryError(f"at most {MAX_FRAMES_IN_LIST} frames per request")
    return numbers


@dataclass(frozen=True)
class FrameForm:
    """How frames are sent: multipart or not, the declared part type, stored or decoded bytes,
    and the transfer syntax those bytes are in."""

    multipart: bool
    part_type: str
    decode: bool
    transfer_syntax: str

    @property
    def part_content_type(self) -> str:
        return f"{self.part_type}; transfer-syntax={self.transfer_syntax}"


def choose_form(ranges: list[MediaRange], stored: str) -> FrameForm:
    """The first form in the client's order of preference that this instance can take."""
    native = stored in UNCOMPRESSED_SYNTAXES
    stored_label = EXPLICIT_VR_LE if stored == DEFLATED_EXPLICIT_VR_LE else stored
    stored_type = OCTET if native else FRAME_MEDIA_TYPES.get(stored, OCTET)
    for accepted in ranges:
        if accepted.media_type in ("*/*", "multipart/*") or (
            accepted.media_type == "multipart/related" and accepted.part_type == "*/*"
        ):
            return FrameForm(True, stored_type, False, stored_label)
        if accepted.media_type == "multipart/related":
            is_multi, part = True, accepted.part_type or OCTET
        else:
            is_multi, part = False, accepted.media_type
        syntax = accepted.transfer_syntax
        if part == OCTET:
            if syntax == "*" or syntax == stored or (native and syntax in (None, EXPLICIT_VR_LE)):
                return FrameForm(is_multi, OCTET, native and stored != stored_label, stored_label)
            if syntax in (None, EXPLICIT_VR_LE):
                return FrameForm(is_multi, OCTET, True, EXPLICIT_VR_LE)
        elif (
            part in (stored_type, "image/*", "*/*") and syntax in (None, "*", stored) and not native
        ):
            return FrameForm(is_multi, stored_type, False, stored)
    raise NotAcceptableError(
        f"frames of this instance (stored as {stored}) can be returned as {stored_type}"
        + ("" if native else f" or {OCTET} (decoded)")
    )


def frames(archive: Archive, request: Request) -> Response:
    """``GET …/instances/{instance}/frames/{list}``."""
    numbers = parse_frame_list(request.path_params["frames"])
    plan = plan_for(archive, request, "WADO-RS frames")
    instance = plan.instances[0]
    form = choose_form(
        parse_accept(request.headers.getlist("accept")), instance.transfer_syntax_uid
    )
    if not form.multipart and len(numbers) != 1:
        raise NotAcceptableError("several frames can only be returned as multipart/related")

    def read(reader: pixel_frames.FrameReader, number: int) -> bytes:
        return reader.native(number).data if form.decode else reader.read(number)

    # Check the numbers and read the first frame before answering, so a bad frame number or a
    # missing decoder is a clean 404/406 rather than a broken stream; the rest are read one at
    # a time while streaming (memory stays at one frame, whatever the list). One header parse
    # per pass over the file.
    tally, ending = begin_transfer(archive, plan)
    with ending:
        try:
            with (
                archive.retrieve.open(instance) as stored,
                pixel_frames.open_frames(stored, lean=not form.decode) as reader,
            ):
                beyond = [n for n in numbers if n > reader.count]
                if beyond:
                    raise NotFoundError(f"frame {beyond[0]} asked, the instance has {reader.count}")
                first = read(reader, numbers[0])
        except UnsupportedError as exc:
            tally.not_sent()
            raise NotAcceptableError(f"cannot decode the frames: {exc}") from exc
        except Exception:
            tally.not_sent()
            raise
        if len(numbers) == 1:
            tally.sent()  # answered whole below
        else:
            ending = ending.pop_all()  # the stream ends the transfer
    boundary = multipart.new_boundary()
    if len(numbers) == 1:  # what viewers ask, frame by frame: answered whole, no stream
        if not form.multipart:
            return Response(first, media_type=form.part_content_type)
        body = b"".join(
            multipart.stream([multipart.Part(form.part_content_type, [first])], boundary)
        )
        return Response(body, media_type=multipart.content_type(form.part_type, boundary))

    def parts() -> Iterator[multipart.Part]:
        with ending:
            yield multipart.Part(form.part_content_type, [first])
            with (
                archive.retrieve.open(instance) as stored,
                pixel_frames.open_frames(stored, lean=not form.decode) as reader,
            ):
                for number in numbers[1:]:
                    yield multipart.Part(form.part_content_type, [read(reader, number)])
            tally.sent()

    return StreamingResponse(
        multipart.batched(multipart.stream(parts(), boundary)),
        media_type=multipart.content_type(form.part_type, boundary),
    )
