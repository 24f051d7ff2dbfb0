"""What monitors poll over HTTP: ``/healthz`` (the process answers), ``/readyz`` (it can do
its work: database, storage, free disk, job runner), ``/metrics`` (Prometheus), and the
middleware that counts and times every HTTP request by route template."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vesalius.services.archive import Archive
from vesalius.telemetry import exposition, metrics, tracing
from vesalius.web.requests import json_response

#: The route label of a request no route matched.
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that answered (``/dicom-web/studies/{study}``), never the
    raw path, so that no UID becomes a label value."""
    route = scope.get("route")
    if isinstance(route, Route):
        prefix = str(scope.get("root_path", ""))[len(scope.get("app_root_path", "")) :]
        return prefix + route.path
    if isinstance(route, Mount):
        return route.path + "/…"
    return UNMATCHED


class TelemetryMiddleware:
    """Counts each HTTP request by method, route template and status, and observes its
    latency until the last byte of the response is handed to the server; with tracing on,
    wraps it in a server span (``telemetry/tracing.py``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif tracing.enabled():
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            with tracing.http_span(scope["method"], headers) as span:
                status = await self._measured(scope, receive, send)
                tracing.finish_http_span(span, scope["method"], route_template(scope), status)
        elif metrics.current() is not None:
            await self._measured(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _measured(self, scope: Scope, receive: Receive, send: Send) -> int:
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.http_request(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )
        return status


def observe_routes(archive: Archive, *, expose_metrics: bool) -> list[BaseRoute]:
    """``/healthz``, ``/readyz`` and (when ``expose_metrics``) ``/metrics``."""

    async def healthz(_request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(_request: Request) -> Response:
        report = await run_in_threadpool(archive.health.readiness)
        return json_response(report, 200 if report["status"] == "ready" else 503)

    async def scrape(_request: Request) -> Response:
        body = await run_in_threadpool(exposition.scrape, archive.health.stats)
        return Response(body, media_type=exposition.CONTENT_TYPE)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
    if expose_metrics:
        routes.append(Route("/metrics", scrape, methods=["GET", "HEAD"]))
    return routes
