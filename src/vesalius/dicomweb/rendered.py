"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3/4, 8.3.5).

Rendering (``dicom/render.py``) applies the Modality LUT, the VOI window (the ``window``
parameter, else the stored window, else the frame's range), ``viewport`` and ``quality``, and
encodes JPEG or PNG. An instance renders its first frame, frames render each listed frame, and a
series or study renders the first frame of each of its image instances as ``multipart/related``.
A thumbnail is one small image: the frame asked, the instance's first frame, the middle instance
of a series, or of a study's first series.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vesalius.dicom.render import RenderParams, parse_render_params, render_frame
from vesalius.dicomweb import multipart
from vesalius.dicomweb.frames import parse_frame_list
from vesalius.dicomweb.retrieve import begin_transfer, plan_for
from vesalius.errors import InvalidDataError, NotAcceptableError, UnsupportedError
from vesalius.services.archive import Archive
from vesalius.services.retrieve import InstanceLocation, RetrievePlan


def _params(request: Request, thumbnail: bool) -> RenderParams:
    accept = ", ".join(request.headers.getlist("accept")) or None
    return parse_render_params(dict(request.query_params), accept, thumbnail=thumbnail)


def render_instance(
    archive: Archive, instance: InstanceLocation, frame: int, params: RenderParams
) -> bytes:
    with archive.retrieve.open(instance) as stored:
        try:
            return render_frame(stored, frame, params)
        except (InvalidDataError, UnsupportedError) as exc:
            raise NotAcceptableError(
                f"instance {instance.sop_instance_uid} cannot be rendered: {exc}"
            ) from exc


def _one(
    archive: Archive,
    plan: RetrievePlan,
    instance: InstanceLocation,
    frame: int,
    params: RenderParams,
) -> Response:
    with archive.retrieve.transfer(plan, items=1) as tally:
        image = render_instance(archive, instance, frame, params)
        tally.sent()
    return Response(image, media_type=params.media_type)


def rendered(archive: Archive, request: Request) -> Response:
    """``GET …/rendered`` at study, series, instance or frames level."""
    params = _params(request, thumbnail=False)
    plan = plan_for(archive, request, "WADO-RS rendered")
    frames = (
        parse_frame_list(request.path_params["frames"]) if "frames" in request.path_params else [1]
    )
    if plan.keys.level == "IMAGE" and len(frames) == 1:
        return _one(archive, plan, plan.instances[0], frames[0], params)
    jobs = (
        [(plan.instances[0], n) for n in frames]
        if plan.keys.level == "IMAGE"
        else [(i, 1) for i in plan.instances]
    )
    # Render the first before answering, so an unrenderable request is a clean 406.
    tally, ending = begin_transfer(archive, plan, items=len(jobs))
    with ending:
        try:
            first = render_instance(archive, jobs[0][0], jobs[0][1], params)
        except Exception:
            tally.not_sent()
            raise
        ending = ending.pop_all()  # the stream ends the transfer from here
    boundary = multipart.new_boundary()

    def images() -> Iterator[multipart.Part]:
        with ending:
            yield multipart.Part(params.media_type, [first])
            tally.sent()
            for instance, frame in jobs[1:]:
                try:
                    image = render_instance(archive, instance, frame, params)
                except NotAcceptableError:
                    tally.not_sent()  # e.g. a structured report inside a series: skipped
                    continue
                tally.sent()
                yield multipart.Part(params.media_type, [image])

    return StreamingResponse(
        multipart.stream(images(), boundary),
        media_type=multipart.content_type(params.media_type, boundary),
    )


def thumbnail(archive: Archive, request: Request) -> Response:
    """``GET …/thumbnail``: one representative small image (PS3.18 10.4.1.1.4)."""
    params = _params(request, thumbnail=True)
    plan = plan_for(archive, request, "WADO-RS thumbnail")
    if "frames" in request.path_params:
        frame = parse_frame_list(request.path_params["frames"])[0]
        return _one(archive, plan, plan.instances[0], frame, params)
    if plan.keys.level == "IMAGE":
        return _one(archive, plan, plan.instances[0], 1, params)
    first_series = [i for i in plan.instances if i.series_uid == plan.instances[0].series_uid]
    return _one(archive, plan, first_series[len(first_series) // 2], 1, params)
