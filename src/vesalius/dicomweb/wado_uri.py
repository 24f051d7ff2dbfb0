"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

``contentType`` ``application/dicom`` returns the instance (``transferSyntax`` may name a syntax;
the default is Explicit VR Little Endian where a lossless conversion exists, PS3.18 9.1.2.3.3);
``image/jpeg`` (the default) or ``image/png`` renders one frame (``frameNumber``) with
``windowCenter``/``windowWidth``, ``rows``/``columns`` and ``imageQuality`` (PS3.18 9.1.2.3).
``region`` and ``anonymize`` are not supported and get 400, so a client never receives less
(or more) than it asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vesalius.dicom.render import parse_render_params
from vesalius.dicom.uids import check_uid
from vesalius.dicomweb.rendered import render_instance
from vesalius.dicomweb.retrieve import audited, instance_chunks, target_syntax
from vesalius.errors import NotAcceptableError, NotFoundError, QueryError
from vesalius.services.archive import Archive
from vesalius.services.retrieve import RetrieveKeys, RetrieveTally
from vesalius.web.requests import who

_UNSUPPORTED = ("region", "anonymize", "presentationUID", "presentationSeriesUID")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")


def _number(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        float(value)
    except ValueError:
        raise QueryError(f"{name} must be a number") from None
    return value


def _content_type(requested: str) -> str:
    for item in (t.split(";")[0].strip().lower() for t in requested.split(",")):
        if item in ("application/dicom", *_IMAGE_TYPES, "*/*", "image/*"):
            return "image/jpeg" if item in ("*/*", "image/*") else item
    raise NotAcceptableError(
        f"contentType {requested[:60]} is not supported: application/dicom, image/jpeg, image/png"
    )


def wado(archive: Archive, request: Request) -> Response:
    """One WADO-URI request."""
    params = dict(request.query_params)
    if params.get("requestType") != "WADO":
        raise QueryError("requestType=WADO is required")
    for name in _UNSUPPORTED:
        if name in params:
            raise QueryError(f"{name} is not supported")
    study = check_uid(params.get("studyUID"), "studyUID")
    series = check_uid(params.get("seriesUID"), "seriesUID")
    instance_uid = check_uid(params.get("objectUID"), "objectUID")
    content_type = _content_type(params.get("contentType", "image/jpeg"))
    keys = RetrieveKeys(
        level="IMAGE",
        study_uids=(study,),
        series_uids=(series,),
        sop_instance_uids=(instance_uid,),
    )
    plan = archive.retrieve.plan(keys, who(request), "WADO-URI")
    if not plan.instances:
        archive.retrieve.refuse(who(request), "WADO-URI", "not found")
        raise NotFoundError("no such instance")
    instance = plan.instances[0]
    if content_type == "application/dicom":
        requested = params.get("transferSyntax")
        syntax = target_syntax(
            check_uid(requested, "transferSyntax") if requested else None, instance
        )

        def body(tally: RetrieveTally) -> Iterator[bytes]:
            yield from instance_chunks(archive, instance, syntax)
            tally.sent(instance.size)

        headers = {"Content-Length": str(instance.size)} if syntax is None else None
        return StreamingResponse(
            audited(archive, plan, body), media_type="application/dicom", headers=headers
        )

    render_query: dict[str, str] = {}
    center, width = _number(params, "windowCenter"), _number(params, "windowWidth")
    if (center is None) != (width is None):
        raise QueryError("windowCenter and windowWidth go together")
    if center is not None and width is not None:
        render_query["window"] = f"{center},{width},linear"
    rows, columns = _number(params, "rows"), _number(params, "columns")
    if rows or columns:
        render_query["viewport"] = f"{int(float(columns or 65535))},{int(float(rows or 65535))}"
    if "imageQuality" in params:
        render_query["quality"] = params["imageQuality"]
    frame_text = params.get("frameNumber", "1")
    if not frame_text.isdigit() or int(frame_text) < 1:
        raise QueryError("frameNumber must be a positive integer")
    render = parse_render_params(render_query, content_type)
    with archive.retrieve.transfer(plan) as tally:
        image = render_instance(archive, instance, int(frame_text), render)
        tally.sent()
    return Response(image, media_type=render.media_type)
