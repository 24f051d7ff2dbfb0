"""OHIF in a real browser on conformant data it used to fail on, stored next to a normal study.

One archive holds three studies, all sent with DCMTK storescu:

- a normal CT series (the phantom of test_viewer_browser.py);
- a study whose one instance has no Modality, so its Modalities in Study has no value: OHIF
  3.13 threw on the empty attribute and showed no study at all;
- pydicom's ``test-SR.dcm``, a Comprehensive SR whose IMAGE, COMPOSITE, WAVEFORM and
  by-reference content items have no Concept Name Code Sequence (Type 1C): OHIF's SR viewport
  threw and the page went black.

The study list must list all three (one row each), and opening each of the two odd studies must
draw something (the image; the SR's text) with no uncaught error. docs/dicomweb.md ("The bundled
viewer and edge cases") explains the fixes. Skips like test_viewer_browser.py without Chromium
or the OHIF build (``VESALIUS_REQUIRE_BROWSER=1`` turns the skip into a failure).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from conftest import dcmtk, make_server, running_http
from synth import SECONDARY_CAPTURE_STORAGE, make_instance
from test_viewer_browser import (
    ARTIFACTS,
    CHROMIUM,
    LIT_FRACTION,
    REQUIRE,
    _missing,
    _viewer_overrides,
    write_series,
)

NORMAL = "Vesalius phantom CT"
NO_MODALITY = "No modality at all"
SR_DESCRIPTION = "OFFIS Structured Reporting Test Document"
SIZE = 64


@dataclass
class Archive:
    """The served archive: base URL and the Study Instance UID of each kind of study."""

    url: str
    studies: dict[str, str]


@dataclass
class Page:
    """A browser page with what went wrong on it: uncaught errors and console errors."""

    page: Any
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def type_errors(self) -> list[str]:
        """Uncaught errors, and errors React caught and logged (a crashed component)."""
        logged = [line for line in self.console if "TypeError" in line]
        return [*self.errors, *logged]


def write_no_modality(folder: Path) -> str:
    """One Secondary Capture image (a gradient) without Modality; returns its study UID."""
    study = generate_uid()
    gradient = np.tile(np.arange(SIZE, dtype="<u2") * 60, (SIZE, 1))
    make_instance(
        folder / "no-modality.dcm",
        sop_class_uid=SECONDARY_CAPTURE_STORAGE,
        rows=SIZE,
        columns=SIZE,
        pixel_data=gradient.tobytes(),
        Modality=None,
        PatientName="Nomodality^Vesalius",
        PatientID="NOMOD-1",
        StudyInstanceUID=study,
        StudyDescription=NO_MODALITY,
        ConversionType="WSD",
    )
    return study


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    reason = _missing()
    if reason:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("viewer-edge")
    incoming = tmp / "incoming"
    studies = {"normal": write_series(incoming), "no-modality": write_no_modality(incoming)}
    sr_file = Path(str(get_testdata_file("test-SR.dcm")))
    shutil.copy(sr_file, incoming / "test-SR.dcm")
    studies["sr"] = str(pydicom.dcmread(sr_file, stop_before_pixels=True).StudyInstanceUID)
    running = make_server(tmp / "data", f"sqlite:///{tmp / 'index.sqlite'}", **_viewer_overrides())
    try:
        dcmtk("storescu", *running.address, "+sd", str(incoming))
        with running_http(running.archive, running.settings) as url:
            yield Archive(url, studies)
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


@pytest.fixture(scope="module")
def browser(archive: Archive) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    watched = Page(context.new_page())
    watched.page.on("pageerror", lambda exc: watched.errors.append(f"{exc.name}: {exc.message}"))
    watched.page.on(
        "console",
        lambda m: watched.console.append(m.text) if m.type == "error" else None,
    )
    try:
        yield watched
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"ohif-edge-{request.node.name}.png"
        watched.page.screenshot(path=str(shot))
        (shot.with_suffix(".txt")).write_text("\n".join(["console:", *watched.console]) + "\n")
        context.close()


def _settle(page: Page, ready: str, failed: str, what: str) -> None:
    """Wait until the page shows ``ready`` (a JS expression); fail as soon as it shows
    ``failed`` or an error is thrown or logged (90 s at most: a guard against a hang)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if page.page.evaluate(f"() => Boolean({ready})"):
            return
        if page.page.evaluate(f"() => Boolean({failed})") or page.type_errors():
            pytest.fail(f"{what} failed in OHIF:\n" + "\n".join(page.type_errors()))
        page.page.wait_for_timeout(250)
    pytest.fail(f"{what}: not shown after 90 s\n" + "\n".join(page.type_errors()))


def _text_shown(text: str) -> str:
    return f"document.body.innerText.includes({text!r})"


def test_study_list_shows_every_study(archive: Archive, page: Page) -> None:
    page.page.goto(archive.url + "/", wait_until="domcontentloaded")
    _settle(
        page,
        _text_shown(NORMAL),
        f"{_text_shown('Data Source Connection Error')} || {_text_shown('No studies available')}",
        "the study list",
    )
    rows = page.page.locator("tbody tr").all_inner_texts()
    descriptions = (NORMAL, NO_MODALITY, SR_DESCRIPTION)
    study_rows = [row for row in rows if any(d in row for d in descriptions)]
    assert len(study_rows) == 3, rows
    for description in descriptions:
        assert sum(description in row for row in study_rows) == 1, (description, study_rows)
    assert page.type_errors() == []


def test_a_study_without_modality_opens(archive: Archive, page: Page) -> None:
    page.page.goto(
        f"{archive.url}/viewer?StudyInstanceUIDs={archive.studies['no-modality']}",
        wait_until="domcontentloaded",
    )
    _settle(
        page,
        f"({LIT_FRACTION})() > 0.05",
        _text_shown("requested studies are not available"),
        "the study without Modality",
    )
    assert page.type_errors() == []


def test_an_sr_without_concept_names_opens(archive: Archive, page: Page) -> None:
    page.page.goto(
        f"{archive.url}/viewer?StudyInstanceUIDs={archive.studies['sr']}",
        wait_until="domcontentloaded",
    )
    # The SR viewport shows the document's text; before the fix the page went black.
    _settle(
        page,
        _text_shown("A mass of 3 cm was detected."),
        "false",  # the crash shows nothing: it is caught as a logged TypeError
        "the Comprehensive SR",
    )
    body = page.page.inner_text("body")
    assert "Diagnosis" in body and "Diameter: 3 cm" in body
    assert page.type_errors() == []
