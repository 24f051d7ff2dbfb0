"""Errors as RFC 9457 problem details (``application/problem+json``): ``type``, ``title``,
``status`` and ``detail``, the one shape every ``/api`` error has.

A :class:`~vesalius.errors.VesaliusError` keeps the HTTP status its kind names; a request the
schema refuses (a bad query parameter, a body of the wrong shape) is a 422 listing each
problem; an unexpected exception is a 500 whose traceback goes to the log, never the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vesalius.errors import VesaliusError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
#: The ``type`` of every problem: the docs page listing them (RFC 9457 3.1.1).
TYPE_BASE = "https://vesalius.dev/problems/"


class Problem(BaseModel):
    """An error (RFC 9457 3.1)."""

    type: str = Field(default="about:blank", description="URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(default="", description="What went wrong with this request.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Each invalid parameter or field (422 only)."
    )


#: The ``responses=`` entry every route declares for its errors (so the document says so).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": text}
    for status, text in (
        (400, "Bad request"),
        (401, "Not authenticated"),
        (403, "Not allowed"),
        (404, "Not found"),
        (422, "Invalid parameters"),
    )
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}


def problem(
    status: int,
    detail: str = "",
    *,
    kind: str = "",
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def vesalius_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VesaliusError)
    kind = type(exc).__name__.removesuffix("Error").lower() or "error"
    return problem(exc.http_status, str(exc) or type(exc).__name__, kind=kind)


async def validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "location": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "")),
        }
        for error in exc.errors()
    ]
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors) or "invalid request"
    return problem(422, detail, kind="invalid-parameters", errors=errors)


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return problem(exc.status_code, str(exc.detail), headers=headers)


async def unexpected_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in the REST API", exc_info=exc)
    return problem(500, "internal error")


HANDLERS = {
    VesaliusError: vesalius_error,
    RequestValidationError: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
