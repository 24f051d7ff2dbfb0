"""The HTTP host: one Starlette application that every HTTP app of Vesalius is mounted in.

It owns what they share: the identity of each request (``web/identity.py``), error rendering
(a :class:`~vesalius.errors.VesaliusError` from any app becomes its HTTP status with a JSON
reason, in one place), the public base URL, compression (JSON and text gzip-compressed for
clients that accept it; DICOM and image payloads are not: compressed already or too large to
be worth the CPU), CORS (off unless ``http.cors_origins`` is set), ``/health``, and what
monitors poll (``web/observe.py``: ``/healthz``, ``/readyz``, ``/metrics``, and the metrics
and spans of each request). The apps (DICOMweb, the viewer, the coming REST API and UI) are
handed in as route lists by the wiring; the host imports none of them, and they never import
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from vesalius.errors import VesaliusError
from vesalius.services.archive import Archive
from vesalius.web.access import AccessLogMiddleware
from vesalius.web.hsts import StrictTransportSecurity
from vesalius.web.identity import AuthConfig, IdentityMiddleware
from vesalius.web.login import login_routes
from vesalius.web.observe import TelemetryMiddleware, observe_routes
from vesalius.web.oidc import oidc_routes
from vesalius.web.oidc_client import OidcClient, OidcConfig
from vesalius.web.requests import error_response, json_response

#: Never gzip these: already compressed, or bulk DICOM where the CPU cost outweighs the gain.
NO_GZIP = (
    "multipart/related",
    "application/dicom",
    "application/octet-stream",
    "application/zip",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/jls",
    "image/jp2",
    "image/jpx",
    "image/jphc",
    "image/jxl",
    "video/mpeg",
    "video/mp4",
    "text/event-stream",
)
#: Path prefixes answered with JSON errors (the others are the viewer's pages).
API_PREFIXES = ("/dicom-web", "/wado", "/api", "/health", "/readyz", "/metrics", "/session")


@dataclass(frozen=True)
class HostConfig:
    """The host's own configuration (``http.cors_origins``, ``http.public_url``)."""

    #: Origins allowed to call from a browser (``*``: any); empty: same origin only.
    cors_origins: tuple[str, ...] = ()
    #: The URL clients reach this server at, for RetrieveURLs; empty: each request's Host.
    public_url: str = ""
    #: Log a line per request (``log.access``).
    access_log: bool = True
    #: Serve ``/metrics`` (``metrics.enabled``).
    metrics: bool = True
    #: Authentication (``auth.*``; ``web/identity.py``).
    auth: AuthConfig = field(default_factory=AuthConfig)
    #: OpenID Connect (``auth.oidc_*``; ``web/oidc.py``), or ``None``: off.
    oidc: OidcConfig | None = None
    #: Served over HTTPS (``http.tls``): HSTS on every answer, and cookies marked Secure.
    https: bool = False


def _middleware(config: HostConfig, archive: Archive, oidc: OidcClient | None) -> list[Middleware]:
    auth = AuthConfig(
        config.auth.required, config.auth.basic, config.auth.anonymous_roles, API_PREFIXES
    )
    middleware = [
        Middleware(TelemetryMiddleware),
        Middleware(IdentityMiddleware, accounts=archive.accounts, config=auth, oidc=oidc),
        Middleware(GZipMiddleware, minimum_size=1024, exclude_content_types=NO_GZIP),
    ]
    if config.cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS", "DELETE", "PUT"],
                allow_headers=["*"],
                expose_headers=["Warning", "Content-Location", "Content-Range"],
            ),
        )
    if config.https:
        middleware.insert(0, Middleware(StrictTransportSecurity))
    if config.access_log:  # outermost: it times, ids and logs everything the host answers
        middleware.insert(0, Middleware(AccessLogMiddleware))
    return middleware


async def _vesalius_error(_request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        # A path the REST API's mount does not match (e.g. one with a control character in
        # it): a problem as every /api error is (RFC 9457).
        body = {
            "type": "about:blank",
            "title": HTTPStatus(exc.status_code).phrase,
            "status": exc.status_code,
            "detail": str(exc.detail),
        }
        return JSONResponse(body, exc.status_code, media_type="application/problem+json")
    if request.url.path.startswith(API_PREFIXES):
        return json_response(
            {"status": exc.status_code, "error": exc.detail},
            exc.status_code,
            dict(exc.headers) if exc.headers else None,
        )
    return Response(exc.detail, status_code=exc.status_code, headers=exc.headers)


def create_host(
    archive: Archive, apps: Sequence[Sequence[BaseRoute]], config: HostConfig
) -> Starlette:
    """The HTTP application: ``/health``, then each app's routes in order (the viewer last: it
    answers the paths of its single-page application)."""

    async def health(_request: Request) -> Response:
        report = archive.health.report()
        return json_response(report, 200 if report["status"] == "ok" else 503)

    oidc = OidcClient(config.oidc) if config.oidc else None
    routes: list[BaseRoute] = [
        Route("/health", health),
        *observe_routes(archive, expose_metrics=config.metrics),
        *login_routes(archive.accounts, oidc=oidc is not None),
    ]
    if oidc is not None:
        routes.extend(oidc_routes(archive.accounts, archive.oversight, oidc))
    for app in apps:
        routes.extend(app)
    host = Starlette(
        routes=routes,
        middleware=_middleware(config, archive, oidc),
        exception_handlers={
            VesaliusError: _vesalius_error,
            HTTPException: _http_error,
            Exception: _vesalius_error,
        },
    )
    host.state.public_url = config.public_url
    return host
