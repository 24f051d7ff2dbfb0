"""The OHIF viewer, served from the root of the HTTP server.

OHIF's production build (``@ohif/app``'s ``dist/``, installed by ``vesalius viewer install``)
uses absolute paths (``/app.bundle.….js``, ``/assets/…``), so it owns the root of the URL space
and everything else lives under reserved prefixes (``/dicom-web``, ``/wado``, ``/api``, ``/ui``,
``/health``). :func:`viewer_routes` returns one catch-all route, to be placed last:

- the files of the build, looked up in a table made once at start-up (only regular files found
  there are ever served, so no request path can reach outside the folder); content-hashed files
  are cached for a year, everything else is revalidated (ETag);
- ``/app-config.js``, written here: one DICOMweb data source at this server's ``/dicom-web``
  (PS3.18 10.6 QIDO-RS, 10.4 WADO-RS), resolved against the page's origin in the browser, so it
  works behind any host name, port or TLS-terminating proxy;
- scripts of the build with a fix from :mod:`vesalius.viewer.ohif_fixes` (for conformant data
  OHIF fails on), served patched from memory and revalidated;
- ``index.html`` for the viewer's own routes (:data:`PAGES`: ``/``,
  ``/viewer?StudyInstanceUIDs=…``, ``/local``, …): a single-page application routes in the
  browser. Any other path is a 404 (rendered by the host: JSON under the API prefixes), so
  ``/foo.php`` or a mistyped API path is never answered with the viewer's page.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from vesalius.viewer.ohif_fixes import apply_fixes

#: Path prefixes the viewer never answers for (other front doors own them).
RESERVED = ("dicom-web", "wado", "api", "ui", "health", "healthz", "readyz", "metrics")
#: The first path segments of OHIF's routes (``platform/app/src/routes``): one per mode's
#: ``routeName`` (each also as ``<routeName>/<data source>``), the study list's data source
#: pages, and the routes built into the app; ``/`` (the study list) besides.
#: tests/test_viewer.py checks the installed build names no mode missing here.
PAGES = frozenset(
    {
        # modes of the @ohif/app build
        "viewer",
        "basic",
        "basic-test",
        "segmentation",
        "microscopy",
        "tmtv",
        "dynamic-volume",
        "preclinical-4d",
        "usAnnotation",
        "dev",
        # routes built into the app
        "local",
        "localbasic",
        "datasources",
        "notfoundserver",
        "notfoundstudy",
        "debug",
        "login",
        "logout",
        "callback",
        "silent-refresh.html",
    }
)
#: ``1602.bundle.94f12cceab7c2762.js``, ``0ddf166f7a343eda.wasm``: content-hashed names.
_HASHED = re.compile(r"(^|\.)[0-9a-f]{16,}\.[A-Za-z0-9]+$")
#: A file extension (``.js``, ``.png``), as opposed to the last part of a UID (``.1234``).
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".webapp": "application/x-web-app-manifest+json",
    ".xml": "application/xml",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def is_installed(folder: Path) -> bool:
    """Whether ``folder`` holds an OHIF build (its ``index.html``)."""
    return (folder / "index.html").is_file()


@dataclass(frozen=True)
class ViewerConfig:
    """Whether to serve the viewer, the OHIF build to serve (``wiring.viewer_dir``), and the
    name its data source shows."""

    enabled: bool
    folder: Path
    title: str = "Vesalius"


def app_config(title: str) -> str:
    """``app-config.js``: the shipped defaults that fit, and one DICOMweb data source here."""
    return config_script(title, "/dicom-web", "/wado")


def config_script(friendly_name: str, dicomweb_root: str, wado_uri_root: str) -> str:
    """OHIF's ``app-config.js`` with one DICOMweb data source at ``dicomweb_root`` (roots
    starting with ``/`` are made absolute against the page's origin in the browser)."""
    config: dict[str, Any] = {
        "name": "vesalius",
        "routerBasename": None,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "experimentalStudyBrowserSort": False,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "allowMultiSelectExport": False,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "dicomweb",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "dicomweb",
                "configuration": {
                    "friendlyName": friendly_name,
                    "name": "vesalius",
                    "qidoRoot": dicomweb_root,
                    "wadoRoot": dicomweb_root,
                    "wadoUriRoot": wado_uri_root,
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": True,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }
    body = json.dumps(config, indent=2)
    return (
        "/* OHIF configuration written by Vesalius (vesalius.viewer.app). The DICOMweb roots are\n"
        "   made absolute against this page's origin, so any host name or port works. */\n"
        f"window.config = {body};\n"
        "(function (origin) {\n"
        "  window.config.dataSources.forEach(function (source) {\n"
        "    var c = source.configuration;\n"
        "    ['qidoRoot', 'wadoRoot', 'wadoUriRoot'].forEach(function (key) {\n"
        "      if (c[key] && c[key].charAt(0) === '/') c[key] = origin + c[key];\n"
        "    });\n"
        "  });\n"
        "})(window.location.origin);\n"
    )


@dataclass(frozen=True)
class _File:
    path: str
    stat: os.stat_result
    media_type: str
    cache_control: str
    gzipped: tuple[str, os.stat_result] | None = None  # the ``.gz`` written at install


def _scan(root: Path) -> tuple[dict[str, _File], frozenset[str]]:
    """Every regular file under ``root`` by its URL path (``assets/x.png``), and the top-level
    folders. Symbolic links and dot-files are left out."""
    files: dict[str, _File] = {}
    folders: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if rel_dir == ".":
            folders.update(dirnames)
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if name.startswith(".") or not stat.S_ISREG(st.st_mode):
                continue
            url_path = name if rel_dir == "." else f"{rel_dir}/{name}"
            suffix = os.path.splitext(name)[1].lower()
            media_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0]
            cache = IMMUTABLE if _HASHED.search(name) else REVALIDATE
            files[url_path] = _File(full, st, media_type or "application/octet-stream", cache)
    for url_path in [p for p in files if p.endswith(".gz")]:
        plain = files.get(url_path[:-3])
        if plain is not None:  # a pre-compressed twin: served in its place, never on its own
            twin = files.pop(url_path)
            files[url_path[:-3]] = replace(plain, gzipped=(twin.path, twin.stat))
    return files, frozenset(folders)


def _accepts_gzip(request: Request) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 12.5.3; ``gzip;q=0`` refuses it)."""
    for item in request.headers.get("accept-encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip()
            try:
                return not q or float(q) > 0
            except ValueError:
                return False
    return False


def _not_modified(request: Request, etag: str) -> bool:
    """RFC 9110 13.1.2 If-None-Match (weak comparison)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return etag in [tag.strip().removeprefix("W/") for tag in header.split(",")]


class ViewerFiles:
    """The catch-all endpoint: build files, ``/app-config.js``, and ``index.html`` fallback."""

    def __init__(self, root: Path, config_js: str) -> None:
        self.files, self.folders = _scan(root)
        self.config_js = config_js.encode()
        fixed = apply_fixes({url: Path(entry.path) for url, entry in self.files.items()})
        self.fixed = {
            url: (text, '"' + hashlib.sha256(text).hexdigest()[:32] + '"')
            for url, (text, _names) in fixed.items()
        }

    def _fixed(self, request: Request, text: bytes, etag: str, media_type: str) -> Response:
        """A patched script: revalidated (never ``immutable``: it keeps the build's name)."""
        headers = {"cache-control": REVALIDATE, "etag": etag, "x-content-type-options": "nosniff"}
        if _not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(text, media_type=media_type, headers=headers)

    def _file(self, request: Request, entry: _File) -> Response:
        if entry.gzipped is not None and _accepts_gzip(request):
            path, stat_result = entry.gzipped
            response = FileResponse(path, stat_result=stat_result, media_type=entry.media_type)
            response.headers["content-encoding"] = "gzip"
        else:
            response = FileResponse(entry.path, stat_result=entry.stat, media_type=entry.media_type)
        if entry.gzipped is not None:
            response.headers["vary"] = "Accept-Encoding"
        response.headers["cache-control"] = entry.cache_control
        response.headers["x-content-type-options"] = "nosniff"
        if _not_modified(request, response.headers["etag"]):
            keep = ("cache-control", "etag", "x-content-type-options")
            return Response(status_code=304, headers={k: response.headers[k] for k in keep})
        return response

    async def handle(self, request: Request) -> Response:
        path = request.path_params["path"]
        parts = path.split("/")
        if parts[0] in RESERVED:
            raise HTTPException(404)
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse(
                "Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD"}
            )
        if path == "app-config.js":
            return Response(
                self.config_js,
                media_type="text/javascript; charset=utf-8",
                headers={"cache-control": REVALIDATE, "x-content-type-options": "nosniff"},
            )
        entry = self.files.get(path)
        if entry is not None and path in self.fixed:
            return self._fixed(request, *self.fixed[path], entry.media_type)
        if entry is not None:
            return self._file(request, entry)
        if self._is_page(request, parts):
            return self._file(request, self.files["index.html"])
        raise HTTPException(404)

    def _is_page(self, request: Request, parts: list[str]) -> bool:
        """A viewer route (answered with ``index.html``) rather than a missing file."""
        if any(p in ("..", ".") or "\\" in p or "\x00" in p for p in parts):
            return False
        if parts == [""]:
            return True  # the study list
        if parts[0] not in PAGES:
            return False
        if len(parts) > 1 and parts[0] in self.folders:
            return False  # a missing /assets/… file is a 404, never the page
        if not _EXTENSION.search(parts[-1]):
            return True
        return "text/html" in request.headers.get("accept", "")


def _not_installed(folder: Path) -> Route:
    message = (
        f"The OHIF viewer is not installed (looked in {folder}).\n"
        "Install it with `vesalius viewer install` (./scripts/serve does this for you),\n"
        "then restart `vesalius serve`.\n"
    )

    async def endpoint(request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            page = (
                "<!doctype html><meta charset=utf-8><title>Viewer not installed</title>"
                f"<pre>{message.replace('&', '&amp;').replace('<', '&lt;')}</pre>"
            )
            return HTMLResponse(page, status_code=503)
        return PlainTextResponse(message, status_code=503)

    return Route("/viewer{rest:path}", endpoint, methods=["GET", "HEAD"])


def viewer_routes(config: ViewerConfig) -> list[BaseRoute]:
    """The viewer's routes, to go last in the application: nothing when ``viewer.enabled`` is
    off; one ``/viewer`` route explaining how to install it when it is not installed."""
    if not config.enabled:
        return []
    folder = config.folder
    if not is_installed(folder):
        return [_not_installed(folder)]
    files = ViewerFiles(folder, app_config(config.title))
    return [Route("/{path:path}", files.handle)]
