"""The web UI, served at ``/`` (the study list) and under ``/ui/``.

The UI is a small single-page application of our own: HTML, CSS and ES modules in
``ui/static/``, served as they are (no Node.js build step), that does everything through the
REST API (``/api/v1``), so whatever a person can do a script can do too. Pages route in the
browser (``/``, ``/ui/studies/<uid>``, ``/ui/jobs``…): each such path answers the one
``index.html``. Front-end packages from the npm registry (``vesalius ui install``:
Pico CSS, uPlot) are served from ``ui.assets_dir`` at ``/ui/vendor/<name>/<file>``.

Only files found at start-up are ever served (a table of names, made once), so no request
path can reach outside the two folders.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

STATIC = Path(__file__).parent / "static"
#: The first segment after ``/ui/`` of each page (``static/app.js`` routes them); any other
#: path under ``/ui`` is a 404, never the page.
PAGES = frozenset({"studies", "upload", "remote", "jobs", "peers", "statistics", "audit", "users"})
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True)
class UiConfig:
    """``ui.enabled`` and ``ui.assets_dir`` (the installed front-end packages)."""

    enabled: bool = True
    assets_dir: Path | None = None


def _files(folder: Path | None) -> dict[str, Path]:
    """Every regular file under ``folder`` by its relative POSIX path."""
    if folder is None or not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): path
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".")
    }


def _file(path: Path, cache: str) -> Response:
    media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return FileResponse(
        path, media_type=media or "application/octet-stream", headers={"Cache-Control": cache}
    )


def ui_routes(config: UiConfig) -> list[BaseRoute]:
    """The UI's routes (to be placed before the viewer's catch-all)."""
    if not config.enabled:
        return []
    static = _files(STATIC)
    vendor = _files(config.assets_dir)
    index = STATIC / "index.html"

    def page(_request: Request) -> Response:
        return _file(index, "no-cache")

    def ui_page(request: Request) -> Response:
        if request.path_params["page"].split("/", 1)[0] not in PAGES:
            return PlainTextResponse("not found", 404)
        return _file(index, "no-cache")

    def static_file(request: Request) -> Response:
        found = static.get(request.path_params["path"])
        if found is None:
            return PlainTextResponse("not found", 404)
        return _file(found, "no-cache")

    def vendor_file(request: Request) -> Response:
        found = vendor.get(request.path_params["path"])
        if found is None:
            return PlainTextResponse("not found (run `vesalius ui install`)", 404)
        return _file(found, "max-age=86400")

    return [
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/ui/static/{path:path}", static_file, methods=["GET", "HEAD"]),
        Route("/ui/vendor/{path:path}", vendor_file, methods=["GET", "HEAD"]),
        Route("/ui", page, methods=["GET", "HEAD"]),
        Route("/ui/{page:path}", ui_page, methods=["GET", "HEAD"]),
    ]
