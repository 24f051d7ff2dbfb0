"""Entity tags (RFC 9110 8.8.3) for the API's resources: a strong tag computed from what the
representation depends on (a row's ``updated_at`` and counts, or the body's digest), ``304 Not
Modified`` for ``If-None-Match``, and ``412 Precondition Failed`` for a stale ``If-Match``, so
two administrators correcting one study cannot overwrite each other unseen."""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from vesalius.errors import VesaliusError


class PreconditionFailedError(VesaliusError):
    """``If-Match`` names another version of the resource than the current one."""

    dimse_status = 0xC000
    http_status = 412


def etag_of(*parts: Any) -> str:
    """A strong entity tag over ``parts`` (their ``repr``)."""
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
    return f'"{digest}"'


def _listed(header: str) -> list[str]:
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


def not_modified(request: Request, etag: str) -> Response | None:
    """A 304 when the client's ``If-None-Match`` already names ``etag``."""
    header = request.headers.get("if-none-match", "")
    if header and (header.strip() == "*" or etag in _listed(header)):
        return Response(status_code=304, headers={"ETag": etag})
    return None


def check_if_match(request: Request, etag: str) -> None:
    """Raise :class:`PreconditionFailedError` when ``If-Match`` is given and names another
    version than ``etag``."""
    header = request.headers.get("if-match", "")
    if header and header.strip() != "*" and etag not in _listed(header):
        raise PreconditionFailedError(
            "the resource changed since it was read (If-Match does not match its ETag)"
        )
