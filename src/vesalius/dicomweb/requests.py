"""What every DICOMweb handler needs from a request: who asks, the root URL, and clear errors.

Failures are :class:`~vesalius.errors.VesaliusError` kinds; :func:`error_response` turns any of
them into the HTTP status the kind names and a JSON body with the reason (PS3.18 8.6.2 leaves the
payload open; a reason a person can read is what clients log).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vesalius.dicom.uids import check_uid
from vesalius.errors import VesaliusError
from vesalius.identity import Identity

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
ROOT = "/dicom-web"


def who(request: Request) -> Identity:
    """The identity behind ``request`` (anonymous HTTP client until authentication lands)."""
    client = request.client
    return Identity.http(client.host if client else "")


def root_url(request: Request) -> str:
    """This server's DICOMweb root without a trailing slash: ``http.public_url`` when set,
    else as the client reached it (its Host header)."""
    public = str(getattr(request.app.state, "public_url", "") or "")
    if public:
        return public.rstrip("/") + ROOT
    url = request.url
    return f"{url.scheme}://{url.netloc}{ROOT}"


def error_response(exc: VesaliusError | Exception, status: int | None = None) -> Response:
    """A JSON error: ``{"status": 400, "error": "reason"}``."""
    if isinstance(exc, VesaliusError):
        code = status or exc.http_status
        reason = str(exc) or type(exc).__name__
    else:
        code = status or 500
        reason = "internal error"
        log.exception("unhandled error in DICOMweb handler", exc_info=exc)
    return JSONResponse({"status": code, "error": reason}, status_code=code)


def dicom_json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A DICOM JSON response (PS3.18 F.2)."""
    return JSONResponse(content, status_code=status, media_type=DICOM_JSON, headers=headers)


def path_uid(request: Request, name: str) -> str:
    """A UID from the path, checked against PS3.5 9.1 (so it is safe in SQL and URLs)."""
    return check_uid(request.path_params[name], name)
