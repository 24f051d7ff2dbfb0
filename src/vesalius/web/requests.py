"""What every HTTP app needs from a request: who asks, this server's base URL, UIDs from the
path, and errors a client can read (the one place a :class:`~vesalius.errors.VesaliusError`
becomes an HTTP answer: its kind names the status, PS3.18 8.6.2 leaves the payload open)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vesalius.dicom.uids import check_uid
from vesalius.errors import VesaliusError
from vesalius.identity import Identity

log = logging.getLogger(__name__)


def who(request: Request) -> Identity:
    """The identity of ``request``, as the identity middleware found it (``web/identity.py``)."""
    found = getattr(request.state, "identity", None)
    if isinstance(found, Identity):
        return found
    client = request.client
    return Identity.http(client.host if client else "")


def base_url(request: Request) -> str:
    """This server's URL without a trailing slash: ``http.public_url`` when set, else as the
    client reached it (its Host header)."""
    public = str(getattr(request.app.state, "public_url", "") or "")
    if public:
        return public.rstrip("/")
    url = request.url
    return f"{url.scheme}://{url.netloc}"


def path_uid(request: Request, name: str) -> str:
    """A UID from the path, checked against PS3.5 9.1 (so it is safe in SQL and URLs)."""
    return check_uid(request.path_params[name], name)


def error_response(exc: VesaliusError | Exception, status: int | None = None) -> Response:
    """A JSON error: ``{"status": 400, "error": "reason"}``; an unexpected exception is a 500
    with its traceback in the log."""
    if isinstance(exc, VesaliusError):
        code = status or exc.http_status
        reason = str(exc) or type(exc).__name__
    else:
        code = status or 500
        reason = "internal error"
        log.exception("unhandled error in an HTTP handler", exc_info=exc)
    return json_response({"status": code, "error": reason}, code)


def json_response(
    content: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    media_type: str = "application/json",
) -> Response:
    return JSONResponse(content, status_code=status, media_type=media_type, headers=headers)
