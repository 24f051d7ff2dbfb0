"""Scenario 9: time to first image in the OHIF viewer, in headless Chromium.

The same OHIF build (the one ``vesalius viewer install`` put in this virtualenv) is served by a
small static server of the harness, one per DICOMweb server under test, whose ``app-config.js``
points at that server's DICOMweb root; Chromium runs with ``--disable-web-security`` since
Orthanc sends no CORS headers. So the DICOMweb server is the only difference between the rows.
An extra row times Vesalius serving OHIF itself (its real set-up: same origin, pre-compressed
assets). Each run is a new browser context (cold cache) opening
``/viewer?StudyInstanceUIDs=<a CT study>``; the clock runs from navigation until the viewport
canvas shows image pixels.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.scenarios import Context, NotSupported, Row, ensure_loaded, note, rotate
from bench.servers import LOOPBACK, Server

CHROMIUM = Path("/usr/bin/chromium")
#: Fraction of the first cornerstone canvas that is not black (0 until an image is drawn).
LIT_FRACTION = """() => {
  for (const canvas of document.querySelectorAll('canvas.cornerstone-canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    if (!ctx) continue;
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
    return lit / (canvas.width * canvas.height);
  }
  return 0;
}"""


def viewer_build() -> Path | None:
    """The OHIF build installed in this virtualenv, if any."""
    from vesalius.settings import load_settings
    from vesalius.viewer.app import is_installed
    from vesalius.wiring import viewer_dir

    folder = viewer_dir(load_settings(environ={}))
    return folder if is_installed(folder) else None


@contextlib.contextmanager
def static_ohif(build: Path, dicomweb_root: str) -> Iterator[str]:
    """Serve ``build`` with an ``app-config.js`` for ``dicomweb_root``; yield its base URL."""
    from vesalius.viewer.app import config_script

    config = config_script("bench", dicomweb_root, dicomweb_root).encode()

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/app-config.js":
                self.send_response(200)
                self.send_header("Content-Type", "text/javascript")
                self.send_header("Content-Length", str(len(config)))
                self.end_headers()
                self.wfile.write(config)
                return
            if "." not in path.rsplit("/", 1)[-1]:
                self.path = "/index.html"  # the viewer's own routes
            super().do_GET()

    server = ThreadingHTTPServer((LOOPBACK, 0), partial(Handler, directory=str(build)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def first_image(browser: Any, url: str, timeout_s: float = 120) -> float:
    """Seconds from navigation until the viewport shows image pixels, in a fresh context."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_function(
            f"({LIT_FRACTION})() > 0.05", timeout=timeout_s * 1000, polling="raf"
        )
        return time.perf_counter() - start
    finally:
        context.close()


def _missing() -> str | None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        return "Debian's chromium is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if viewer_build() is None:
        return "the OHIF viewer is not installed (vesalius viewer install)"
    return None


def _dicomweb_root(server: Server) -> str:
    if server.http_port is None:
        raise NotSupported("no HTTP server")
    return f"http://{LOOPBACK}:{server.http_port}/dicom-web"


def ohif(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 9 (see the module docstring)."""
    corpus = ctx.corpora.get("ct")
    study = corpus.studies[0]
    label = f"OHIF time to first image, CT study of {study['instances']} images"
    row = Row("viewer", "ohif", f"{label}, OHIF from one static server", "time", "s")
    own = Row("viewer", "ohif", f"{label}, OHIF served by Vesalius itself", "time", "s")
    missing = _missing()
    if missing:
        for kind in kinds:
            note(missing, kind, row, own)
        return [row, own]
    build = viewer_build()
    assert build is not None
    from playwright.sync_api import sync_playwright

    servers: dict[str, Server] = {}
    for kind in kinds:
        try:
            servers[kind] = ensure_loaded(ctx, kind, corpus)
        except NotSupported as exc:
            note(f"could not load corpus (a): {exc}", kind, row, own)
    uid = study["StudyInstanceUID"]
    with contextlib.ExitStack() as stack, sync_playwright() as playwright:
        statics = {
            kind: stack.enter_context(static_ohif(build, _dicomweb_root(server)))
            for kind, server in servers.items()
        }
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-web-security", "--disable-gpu"],
        )
        try:
            for rep in range(ctx.repeat):
                for kind in rotate(list(servers), rep):
                    seconds = first_image(
                        browser, f"{statics[kind]}/viewer?StudyInstanceUIDs={uid}"
                    )
                    row.add(kind, seconds)
                    ctx.log(f"  {kind}: first image in {seconds:.2f} s")
                    if kind == "vesalius":
                        base = f"http://{LOOPBACK}:{servers[kind].http_port}"
                        seconds = first_image(browser, f"{base}/viewer?StudyInstanceUIDs={uid}")
                        own.add(kind, seconds)
                        ctx.log(f"  vesalius (own OHIF): first image in {seconds:.2f} s")
        finally:
            browser.close()
    for kind in servers:
        if kind != "vesalius":
            note("serves no viewer", kind, own)
    return [row, own]
