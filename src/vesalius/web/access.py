"""The HTTP access log: one line per request on the ``vesalius.access`` logger, and a request
id on every line logged while it is served (docs/operations.md, "Logs").

The id is the client's ``X-Request-ID`` when it sends a sensible one (a proxy's), else a new
one; either way the response carries it back in ``X-Request-ID``.

No patient data: QIDO-RS and WADO query strings hold patient names, IDs and birth dates, so
only the query's keys are logged, never their values; the UIDs in a path (Study, Series, SOP
Instance) are identifiers too, and are logged as ``{uid}`` unless the log level is ``debug``
(where the whole path is in ``target``).
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vesalius import logcontext

log = logging.getLogger("vesalius.access")

HEADER = "X-Request-ID"
#: An incoming X-Request-ID is kept when it looks like an id (a proxy's or a client's).
_GOOD_ID = re.compile(r"^[A-Za-z0-9._:+/=-]{1,128}$")
#: A DICOM UID as a path segment (PS3.5 9.1).
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


def masked_path(path: str) -> str:
    """``path`` with each UID segment replaced by ``{uid}``."""
    return "/".join("{uid}" if _UID.match(part) else part for part in path.split("/"))


def query_keys(query: bytes) -> str:
    """The distinct keys of a query string, in order, comma-separated (values dropped)."""
    keys: list[str] = []
    for key, _value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key not in keys:
            keys.append(key)
    return ",".join(keys)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = str(value.decode("latin-1")).strip()
            if _GOOD_ID.match(text):
                return text
    return logcontext.new_id()


class AccessLogMiddleware:
    """Binds a request id for each HTTP request, returns it in ``X-Request-ID``, and logs the
    request when it ends: method, path, query keys, status, bytes sent, duration and client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 0
        sent = 0

        async def tagged(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[HEADER] = request_id
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        with logcontext.bound(logcontext.REQUEST, request_id):
            try:
                await self.app(scope, receive, tagged)
            except BaseException:
                status = status or 500
                raise
            finally:
                self._log(scope, status, sent, time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, status: int, sent: int, seconds: float) -> None:
        path = scope.get("path", "")
        client = scope.get("client")
        extra: dict[str, object] = {
            "method": scope.get("method", ""),
            "path": masked_path(path),
            "query": query_keys(scope.get("query_string", b"")),
            "status": status,
            "bytes": sent,
            "ms": round(seconds * 1000, 1),
            "client": client[0] if client else "",
        }
        if log.isEnabledFor(logging.DEBUG):
            extra["target"] = path
        log.info("%s %s %d", extra["method"], extra["path"], status, extra=extra)
