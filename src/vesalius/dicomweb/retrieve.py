"""WADO-RS retrieval of studies, series and instances as DICOM (PS3.18 10.4.1, 8.7.3).

The answer is ``multipart/related; type="application/dicom"``, one instance per part, streamed
file by file (a study is never held in memory); an instance alone may also be asked for as
single-part ``application/dicom``. Transfer syntax negotiation (PS3.18 8.7.3.5): ``*`` returns
each instance as stored; a named syntax is returned as stored when it matches, else converted
when ``dicom/transcode.py`` can, else the request gets 406. With no syntax named, the default is
Explicit VR Little Endian, except for lossy data and instances over
:data:`TRANSCODE_LIMIT` bytes, which come as stored (the standard's exceptions). Deflated
instances become Explicit VR Little Endian as a stream whatever their size (their stored size
says nothing of their inflated size); converted otherwise, they are held inflated, at most
:data:`TRANSCODE_LIMIT` bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vesalius.dicom.inflate import explicit_chunks
from vesalius.dicom.transcode import can_transcode, streamed, transcode
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, LOSSY_SYNTAXES
from vesalius.dicomweb import multipart
from vesalius.dicomweb.media import MediaRange, parse_accept
from vesalius.dicomweb.requests import root_url
from vesalius.errors import NotAcceptableError, NotFoundError
from vesalius.services.archive import Archive
from vesalius.services.retrieve import (
    InstanceLocation,
    Level,
    RetrieveKeys,
    RetrievePlan,
    RetrieveTally,
)
from vesalius.web.requests import path_uid, who

CHUNK = 1 << 20
T = TypeVar("T")
#: Larger instances are never converted on the fly (conversion holds one instance in memory).
TRANSCODE_LIMIT = 256 << 20


def keys_from_path(request: Request) -> RetrieveKeys:
    """The study, series or instance the path names (UIDs checked, PS3.5 9.1)."""
    params = request.path_params
    study = path_uid(request, "study")
    series = path_uid(request, "series") if "series" in params else None
    instance = path_uid(request, "instance") if "instance" in params else None
    level: Level = "IMAGE" if instance else "SERIES" if series else "STUDY"
    return RetrieveKeys(
        level=level,
        study_uids=(study,),
        series_uids=(series,) if series else (),
        sop_instance_uids=(instance,) if instance else (),
    )


def plan_for(archive: Archive, request: Request, operation: str) -> RetrievePlan:
    """The instances the path names; :class:`NotFoundError` (404) when there are none."""
    keys = keys_from_path(request)
    plan = archive.retrieve.plan(keys, who(request), operation)
    if not plan.instances:
        archive.retrieve.refuse(who(request), operation, "not found")
        raise NotFoundError(f"no {keys.level.lower()} found for the given UIDs")
    return plan


@dataclass(frozen=True)
class Representation:
    """What the client gets: multipart or single part, and the transfer syntax asked for
    (``*``: as stored; ``None``: the default)."""

    multipart: bool
    transfer_syntax: str | None


def choose(ranges: list[MediaRange], single_allowed: bool) -> Representation:
    """The first acceptable representation in the client's order of preference."""
    for accepted in ranges:
        if accepted.media_type == "multipart/related" and accepted.part_type in (
            None,
            "application/dicom",
            "*/*",
        ):
            return Representation(True, accepted.transfer_syntax)
        if accepted.media_type == "application/dicom" and single_allowed:
            return Representation(False, accepted.transfer_syntax)
        if accepted.media_type in ("*/*", "multipart/*"):
            return Representation(True, None)
    offered = 'multipart/related; type="application/dicom"'
    if single_allowed:
        offered += " or application/dicom"
    raise NotAcceptableError(f"instances can be returned as {offered} only")


def target_syntax(requested: str | None, instance: InstanceLocation) -> str | None:
    """The syntax to convert ``instance`` to, or ``None`` to send it as stored."""
    stored = instance.transfer_syntax_uid
    if requested == "*" or requested == stored:
        return None
    if requested is None:
        if stored == EXPLICIT_VR_LE or stored in LOSSY_SYNTAXES:
            return None
        if streamed(stored, EXPLICIT_VR_LE):
            return EXPLICIT_VR_LE
        if instance.size > TRANSCODE_LIMIT or not can_transcode(stored, EXPLICIT_VR_LE):
            return None
        return EXPLICIT_VR_LE
    if streamed(stored, requested):
        return requested
    if instance.size <= TRANSCODE_LIMIT and can_transcode(stored, requested):
        return requested
    raise NotAcceptableError(
        f"instance {instance.sop_instance_uid} is stored as {stored} and cannot be "
        f"returned as {requested}"
    )


def instance_chunks(
    archive: Archive, instance: InstanceLocation, syntax: str | None
) -> Iterator[bytes]:
    """The Part 10 bytes of ``instance``, as stored (streamed by its store) or converted to
    ``syntax``."""
    if syntax is None:
        yield from archive.retrieve.open_range(instance)
        return
    with archive.retrieve.open(instance) as reader:
        if instance.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LE and syntax == EXPLICIT_VR_LE:
            yield from explicit_chunks(reader)  # inflated as it goes: memory stays flat
            return
        out = io.BytesIO()
        transcode(reader, syntax, out, max_inflated=TRANSCODE_LIMIT)
    data = out.getbuffer()
    for start in range(0, len(data), CHUNK):
        yield bytes(data[start : start + CHUNK])


def audited(
    archive: Archive,
    plan: RetrievePlan,
    produce: Callable[[RetrieveTally], Iterator[T]],
    items: int | None = None,
) -> Iterator[T]:
    """What ``produce`` yields for a streamed answer, inside the retrieve service's transfer
    of ``plan``: audited when the stream ends, is cut off, or fails."""
    with archive.retrieve.transfer(plan, items) as tally:
        yield from produce(tally)


def begin_transfer(
    archive: Archive, plan: RetrievePlan, items: int | None = None
) -> tuple[RetrieveTally, ExitStack]:
    """A transfer begun in the handler (to prepare its first piece before answering, so a
    failure is a clean error status) and ended by whoever closes the stack returned: the
    response's stream, or the handler when it fails or answers whole."""
    ending = ExitStack()
    tally = ending.enter_context(archive.retrieve.transfer(plan, items))
    return tally, ending


def retrieve(archive: Archive, request: Request) -> Response:
    """``GET /studies/{study}[/series/{series}[/instances/{instance}]]`` (PS3.18 10.4.1)."""
    plan = plan_for(archive, request, "WADO-RS")
    wanted = choose(parse_accept(request.headers.getlist("accept")), plan.keys.level == "IMAGE")
    syntaxes = [target_syntax(wanted.transfer_syntax, i) for i in plan.instances]
    root = root_url(request)

    if not wanted.multipart:
        instance, syntax = plan.instances[0], syntaxes[0]

        def single(tally: RetrieveTally) -> Iterator[bytes]:
            yield from instance_chunks(archive, instance, syntax)
            tally.sent(instance.size)

        headers = {"Content-Length": str(instance.size)} if syntax is None else None
        media = f"application/dicom; transfer-syntax={syntax or instance.transfer_syntax_uid}"
        return StreamingResponse(
            multipart.batched(audited(archive, plan, single)),
            media_type=media,
            headers=headers,
        )

    boundary = multipart.new_boundary()

    def body(tally: RetrieveTally) -> Iterator[bytes]:
        def parts() -> Iterator[multipart.Part]:
            for instance, syntax in zip(plan.instances, syntaxes, strict=True):
                location = (
                    f"{root}/studies/{instance.study_uid}/series/{instance.series_uid}"
                    f"/instances/{instance.sop_instance_uid}"
                )
                yield multipart.Part(
                    f"application/dicom; transfer-syntax={syntax or instance.transfer_syntax_uid}",
                    instance_chunks(archive, instance, syntax),
                    location,
                )
                tally.sent(instance.size)

        yield from multipart.stream(parts(), boundary)

    return StreamingResponse(
        multipart.batched(audited(archive, plan, body)),
        media_type=multipart.content_type("application/dicom", boundary),
    )
