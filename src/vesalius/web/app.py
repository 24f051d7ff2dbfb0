"""The Starlette application: ``/health`` for now (DICOMweb arrives under ``/dicom-web``)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vesalius.services.archive import Archive
from vesalius.services.health import health


def create_app(archive: Archive) -> Starlette:
    """Build the HTTP application over ``archive``."""

    async def health_endpoint(_request: Request) -> JSONResponse:
        report = health(archive)
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    return Starlette(routes=[Route("/health", health_endpoint)])
