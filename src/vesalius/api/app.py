"""The REST API application: FastAPI on the HTTP host, mounted at ``/api``.

``/api/v1/…`` holds the resources (one router module each, listed in :data:`ROUTERS`);
``/api/openapi.json`` is the OpenAPI 3.1 document FastAPI generates from their types;
``/api/docs`` is the interactive reference (Swagger UI from the npm registry, installed by
``vesalius ui install``, served from this machine: no CDN). Errors are RFC 9457 problem
details (``api/problems.py``). Identity, HTTPS, CORS and compression come from the host.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount

from vesalius.api import (
    changes,
    downloads,
    events,
    instances,
    jobs,
    peers,
    resources,
    statistics,
    system,
    transfers,
    uploads,
)
from vesalius.api.deps import ApiConfig
from vesalius.api.problems import HANDLERS, PROBLEM_RESPONSES
from vesalius.services.archive import Archive

#: Each router and the tag its operations are grouped under in the reference.
ROUTERS: tuple[tuple[APIRouter, str], ...] = (
    (resources.router, "resources"),
    (instances.router, "resources"),
    (uploads.router, "uploads"),
    (changes.router, "changes"),
    (downloads.router, "downloads"),
    (transfers.router, "transfers"),
    (jobs.router, "jobs"),
    (peers.router, "peers"),
    (statistics.router, "statistics"),
    (system.router, "system"),
    (events.router, "events"),
)
DESCRIPTION = """The REST API of Vesalius, an open PACS: what the web UI does, for scripts too.

Authenticate as for DICOMweb: a bearer token (`vesalius token create`), the UI's session
cookie (state-changing requests then need the `X-CSRF-Token` header), or HTTP Basic over
HTTPS where `auth.basic` allows it. Lists are paged by cursor (`limit`, `cursor`; each page
says `total` and `next`). Errors are RFC 9457 problem details. See docs/api.md.
"""
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vesalius REST API</title>
<link rel="icon" href="/api/docs/favicon-32x32.png">
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head><body><main id="reference" aria-label="API reference"></main>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body></html>
"""
_DOCS_INIT = """let csrf = "";
fetch("/session", { credentials: "same-origin" })
  .then((answer) => answer.json())
  .then((session) => { csrf = session.csrf_token || ""; })
  .catch(() => {});
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json", dom_id: "#reference", deepLinking: true,
  requestInterceptor: (request) => {
    if (csrf) request.headers["X-CSRF-Token"] = csrf;
    return request;
  },
});
"""
_DOCS_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}


def create_api(archive: Archive, config: ApiConfig) -> FastAPI:
    """The API application over ``archive``."""
    api = FastAPI(
        title="Vesalius REST API",
        version=config.version or "1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        exception_handlers=dict(HANDLERS),  # type: ignore[arg-type]
        servers=[{"url": "/api"}],
    )
    api.state.archive = archive
    api.state.config = config
    for router, tag in ROUTERS:
        api.include_router(router, prefix="/v1", tags=[tag], responses=PROBLEM_RESPONSES)

    @api.get("/docs", include_in_schema=False)
    def reference() -> Response:
        return HTMLResponse(_DOCS_PAGE)

    @api.get("/docs/{name}", include_in_schema=False)
    def reference_file(name: str, request: Request) -> Response:
        if name == "init.js":
            return PlainTextResponse(_DOCS_INIT, media_type="text/javascript")
        folder = config.assets_dir / "swagger-ui" if config.assets_dir else None
        if name not in _DOCS_FILES or folder is None or not (folder / name).is_file():
            return PlainTextResponse(
                "the API reference is not installed: run `vesalius ui install`", 404
            )
        return FileResponse(folder / name, headers={"Cache-Control": "max-age=86400"})

    return api


def api_routes(archive: Archive, config: ApiConfig) -> list[BaseRoute]:
    """The host's route for the API: everything under ``/api``."""
    return [Mount("/api", app=create_api(archive, config))]
