"""The Starlette application: ``/health``, DICOMweb under ``/dicom-web`` (and WADO-URI at
``/wado``), and the OHIF viewer at the root (its build uses absolute ``/assets/…`` paths).

Errors from the services become JSON answers here, in one place; JSON and text responses are
gzip-compressed for clients that accept it, DICOM and image payloads are not (they are compressed
already or too large to be worth the CPU). CORS is off unless ``http.cors_origins`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from vesalius.dicomweb.requests import error_response
from vesalius.dicomweb.routes import dicomweb_routes
from vesalius.dicomweb.stow import UploadLimits
from vesalius.errors import VesaliusError
from vesalius.services.archive import Archive
from vesalius.web.viewer import ViewerConfig, viewer_routes

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


@dataclass(frozen=True)
class WebConfig:
    """The HTTP front door's configuration (``http.*``, ``viewer.*``), built by the wiring."""

    viewer: ViewerConfig
    upload: UploadLimits = field(default_factory=UploadLimits)
    #: Origins allowed to call from a browser (``*``: any); empty: same origin only.
    cors_origins: tuple[str, ...] = ()
    #: The URL clients reach this server at, for RetrieveURLs; empty: each request's Host.
    public_url: str = ""


def _middleware(config: WebConfig) -> list[Middleware]:
    middleware = [Middleware(GZipMiddleware, minimum_size=1024, exclude_content_types=NO_GZIP)]
    origins = list(config.cors_origins)
    if origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "OPTIONS", "DELETE", "PUT"],
                allow_headers=["*"],
                expose_headers=["Warning", "Content-Location", "Content-Range"],
            ),
        )
    return middleware


async def _vesalius_error(_request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(("/dicom-web", "/wado", "/api", "/health")):
        return JSONResponse(
            {"status": exc.status_code, "error": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )
    return Response(exc.detail, status_code=exc.status_code, headers=exc.headers)


def create_app(archive: Archive, config: WebConfig) -> Starlette:
    """Build the HTTP application over ``archive``."""

    async def health_endpoint(_request: Request) -> JSONResponse:
        report = archive.health.report()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    routes: list[BaseRoute] = [
        Route("/health", health_endpoint),
        *dicomweb_routes(archive, config.upload),
        *viewer_routes(config.viewer),  # last: it answers the viewer's SPA paths
    ]
    app = Starlette(
        routes=routes,
        middleware=_middleware(config),
        exception_handlers={
            VesaliusError: _vesalius_error,
            HTTPException: _http_error,
            Exception: _vesalius_error,
        },
    )
    app.state.public_url = config.public_url
    return app
