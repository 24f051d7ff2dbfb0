"""OHIF in a real browser: a synthetic CT series goes in over DIMSE (DCMTK storescu), Chromium
opens OHIF's study list and ``/viewer?StudyInstanceUIDs=…``, and the viewport must show the
image (non-black pixels). Screenshots and the viewer's requests go to test-artifacts/
(``VESALIUS_TEST_ARTIFACTS`` overrides).

Needs Debian's chromium (/usr/bin/chromium; Playwright downloads no browser) and the installed
OHIF build (``vesalius viewer install``; scripts/test does both). Without them the test skips,
unless ``VESALIUS_REQUIRE_BROWSER=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from conftest import RunningServer, dcmtk, make_server, running_http
from synth import make_instance
from vesalius.settings import load_settings
from vesalius.viewer.app import is_installed
from vesalius.wiring import viewer_dir

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE = os.environ.get("VESALIUS_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(
    os.environ.get("VESALIUS_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts")
)
SLICES, SIZE = 10, 256
PATIENT = "Phantom^Vesalius"

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


def _viewer_overrides() -> dict[str, object]:
    """The test server's view of the installed OHIF (VESALIUS_VIEWER_DIR is honoured)."""
    folder = os.environ.get("VESALIUS_VIEWER_DIR")
    return {"viewer.dir": folder} if folder else {}


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    folder = viewer_dir(load_settings(environ={}, overrides=_viewer_overrides()))
    if not is_installed(folder):
        return f"OHIF is not installed in {folder}: run .venv/bin/vesalius viewer install"
    return None


def phantom(index: int) -> bytes:
    """One 256x256 12-bit CT slice: air, a soft-tissue disc, a bone ring, and a bright spot that
    moves with the slice (stored values; RescaleIntercept -1024 gives Hounsfield units)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) - SIZE / 2
    r = np.hypot(x, y)
    image = np.zeros((SIZE, SIZE), np.uint16)
    image[r < 100] = 1024 + 40
    image[(r > 80) & (r < 92)] = 1024 + 1000
    image[(x > -60) & (x < 60) & (np.abs(y) < 4)] = 1024 + 300  # a bar, so orientation shows
    spot = np.hypot(x - 40 + 8 * index, y + 30) < 12
    image[spot] = 1024 + 2000
    return image.astype("<u2").tobytes()


def write_series(folder: Path) -> str:
    """Ten slices of one series; returns the StudyInstanceUID."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for i in range(SLICES):
        make_instance(
            folder / f"ct{i:02d}.dcm",
            rows=SIZE,
            columns=SIZE,
            pixel_data=phantom(i),
            PatientName=PATIENT,
            PatientID="PHANTOM-1",
            StudyInstanceUID=study,
            StudyDescription="Vesalius phantom CT",
            SeriesInstanceUID=series,
            SeriesDescription="Axial 2.5 mm",
            FrameOfReferenceUID=frame,
            InstanceNumber=i + 1,
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
            ImagePositionPatient=[-128.0, -128.0, 2.5 * i],
            ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            PixelSpacing=[1.0, 1.0],
            SliceThickness=2.5,
            SliceLocation=2.5 * i,
            RescaleIntercept=-1024.0,
            RescaleSlope=1.0,
            WindowCenter=40.0,
            WindowWidth=400.0,
            KVP=120.0,
        )
    return study


@dataclass
class NetworkLog:
    """Every request the page made, in order, with its answer."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def stamp(self) -> str:
        return f"{time.monotonic() - self.started:7.3f}s"


@pytest.fixture
def archive_with_ct(tmp_path: Path) -> Iterator[tuple[RunningServer, str, str]]:
    reason = _missing()
    if reason:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    study = write_series(tmp_path / "ct")
    running = make_server(
        tmp_path / "data", f"sqlite:///{tmp_path / 'index.sqlite'}", **_viewer_overrides()
    )
    try:
        dcmtk("storescu", *running.address, "+sd", str(tmp_path / "ct"))
        with running_http(running.archive, running.settings) as url:
            yield running, url, study
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def test_ohif_shows_a_stored_ct_series(archive_with_ct: tuple[RunningServer, str, str]) -> None:
    from PIL import Image
    from playwright.sync_api import Request, Response, sync_playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    _running, url, study = archive_with_ct
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = NetworkLog()

    def on_response(response: Response) -> None:
        request = response.request
        accept = request.headers.get("accept", "")
        path = response.url.removeprefix(url)
        log.lines.append(f"{log.stamp()} {request.method} {path} [{accept}] -> {response.status}")
        if response.status >= 400 and path.startswith(("/dicom-web", "/wado")):
            log.failures.append(f"{request.method} {path} [{accept}] -> {response.status}")

    def on_failed(request: Request) -> None:
        path = request.url.removeprefix(url)
        log.lines.append(f"{log.stamp()} {request.method} {path} FAILED {request.failure}")
        if path.startswith(("/dicom-web", "/wado")):
            log.failures.append(f"{request.method} {path} FAILED {request.failure}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("response", on_response)
            page.on("requestfailed", on_failed)
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            try:
                # The study list: OHIF's QIDO-RS search finds the study.
                page.goto(url + "/", wait_until="domcontentloaded")
                page.get_by_text("Phantom", exact=False).first.wait_for(timeout=60_000)
                page.screenshot(path=str(ARTIFACTS / "ohif-study-list.png"))
                log.lines.append(f"{log.stamp()} --- /viewer?StudyInstanceUIDs={study}")
                page.goto(f"{url}/viewer?StudyInstanceUIDs={study}", wait_until="domcontentloaded")
                page.wait_for_function(f"({LIT_FRACTION})() > 0.05", timeout=90_000, polling=250)
                log.lines.append(f"{log.stamp()} --- image on screen")
                for overlay in ("Confirm and hide", "Skip all"):  # OHIF's notice and tour
                    button = page.get_by_text(overlay, exact=True)
                    if button.count() and button.first.is_visible():
                        button.first.click()
                page.screenshot(path=str(ARTIFACTS / "ohif-ct.png"))
                canvas = page.locator("canvas.cornerstone-canvas").first
                canvas.screenshot(path=str(ARTIFACTS / "ohif-ct-viewport.png"))
            except PlaywrightTimeout as exc:
                page.screenshot(path=str(ARTIFACTS / "ohif-ct.png"))
                pytest.fail(
                    f"{exc.message.splitlines()[0]}\nfailed DICOMweb requests:\n"
                    + "\n".join(log.failures or ["(none)"])
                    + "\nlast requests:\n"
                    + "\n".join(log.lines[-15:])
                )
            finally:
                (ARTIFACTS / "ohif-requests.txt").write_text(
                    "\n".join([*log.lines, "", "console:", *console[-200:]]) + "\n"
                )
        finally:
            browser.close()

    assert log.failures == [], "\n".join(log.failures)
    with Image.open(ARTIFACTS / "ohif-ct-viewport.png") as shot:
        low, high = shot.convert("L").getextrema()
    assert high - low > 100, "the viewport screenshot is uniform: no image drawn"
