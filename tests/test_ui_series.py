"""The Upload and Series pages in Chromium against a real served archive (SQLite and
PostgreSQL): files and a zip uploaded by the page's file
input and by a drop, with per-file progress and a summary of what was stored and refused; a
series opened, its thumbnail strip, and the tag browser (filter, a sequence expanded, private
tags shown and hidden, another instance chosen). axe-core finds no serious or critical
violation; screenshots are kept."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from conftest import WebServer, make_server, running_http, scratch_database
from test_api_series import PRIVATE_CREATOR, dicom_file, zipped
from ui_browser import (
    READING_ROOM,
    accessibility_violations,
    browser,  # noqa: F401  (the fixture)
    open_page,
    screenshot,
    script_errors,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    folder = tmp_path_factory.mktemp(f"ui-series-{request.param}")
    with scratch_database(request.param, folder) as url:
        server = make_server(folder / "data", url)
        try:
            with running_http(server.archive, server.settings) as base:
                yield WebServer(server, base)
        finally:
            server.dimse.stop(grace=2)
            server.archive.close()


def test_upload_files_a_zip_and_a_drop(web: WebServer, browser, tmp_path: Path) -> None:  # noqa: F811
    study = generate_uid()
    loose = [
        dicom_file(tmp_path, f"{n}.dcm", StudyInstanceUID=study, InstanceNumber=n) for n in (1, 2)
    ]
    members = {
        f"more/{n}.dcm": dicom_file(tmp_path, f"z{n}.dcm", StudyInstanceUID=study).read_bytes()
        for n in (3, 4)
    }
    members["more/notes.txt"] = b"not an image"
    (tmp_path / "more.zip").write_bytes(zipped(members))
    (tmp_path / "readme.txt").write_text("hello")

    page = open_page(browser, f"{web.url}/ui/upload")
    page.wait_for_selector("#drop")
    page.set_input_files(
        "#files",
        [*(str(p) for p in loose), str(tmp_path / "more.zip"), str(tmp_path / "readme.txt")],
    )
    page.wait_for_selector("#summary:not([hidden])")
    page.wait_for_selector("#refused table")
    text = page.inner_text("#summary")
    assert "4 instances stored in 1 study; 2 files refused." in text
    assert "more.zip/more/notes.txt" in text and "not DICOM" in text
    assert page.locator("#rows tr").count() == 4
    assert page.locator("#rows progress[value='100']").count() == 4
    link = page.locator("#studies a")
    assert link.get_attribute("href") == f"/ui/studies/{study}"
    assert accessibility_violations(page) == []
    backend = "postgresql" if "postgresql" in web.dimse.settings.database_url else "sqlite"
    screenshot(page, f"upload-summary-{backend}")

    # a folder, from the folder picker: its files named by their path in it
    folder = tmp_path / "exam"
    (folder / "ct").mkdir(parents=True)
    dicom_file(folder / "ct", "a.dcm", StudyInstanceUID=study, InstanceNumber=7)
    dicom_file(folder, "b.dcm", StudyInstanceUID=study, InstanceNumber=8)
    page.set_input_files("#folder", str(folder))
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 6")
    names = page.locator("#rows tr td:first-child").all_inner_texts()
    assert sorted(names[4:]) == ["exam/b.dcm", "exam/ct/a.dcm"]
    page.wait_for_function(
        "document.getElementById('summary-text').textContent.startsWith('6 instances stored')"
    )

    # a drop of one more file on the page (read from the drop's DataTransfer)
    one_more = dicom_file(tmp_path, "dropped.dcm", StudyInstanceUID=study, InstanceNumber=9)
    payload = base64.b64encode(one_more.read_bytes()).decode()
    page.evaluate(
        """(payload) => {
            const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.dcm", { type: "application/dicom" }));
            const zone = document.querySelector("main h1");  // anywhere on the page
            for (const kind of ["dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(kind, { dataTransfer: transfer, bubbles: true }));
            }
        }""",
        payload,
    )
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 7")
    page.wait_for_selector("#u-7 .state:text('1 stored')")
    page.wait_for_function(
        "document.getElementById('summary-text').textContent.startsWith('7 instances stored')"
    )
    assert script_errors(page) == []


def gradient(turn: int) -> bytes:
    """A 64x64 16-bit image of 12-bit values: rings about a corner, one per instance."""
    values = ((x * x + y * y) * turn * 4 % 4096 for y in range(64) for x in range(64))
    return b"".join(v.to_bytes(2, "little") for v in values)


def test_series_strip_and_tag_browser(web: WebServer, browser, tmp_path: Path) -> None:  # noqa: F811
    study, series = generate_uid(), generate_uid()
    paths = [
        dicom_file(
            tmp_path,
            f"{n}.dcm",
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            InstanceNumber=n,
            rows=64,
            columns=64,
            pixel_data=gradient(n),
        )
        for n in (1, 2, 3)
    ]
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
    stored = httpx.post(f"{web.url}/api/v1/uploads", files=files).json()["stored"]
    second = next(s["sop_instance_uid"] for s in stored if s["name"] == "2.dcm")

    page = open_page(browser, f"{web.url}/ui/studies/{study}/series/{series}")
    page.wait_for_selector("#strip button.thumb[aria-pressed='true']")
    assert page.locator("#strip button.thumb").count() == 3
    page.wait_for_selector("#tags tr[data-tag='00100010']")
    assert "Patient's Name" in page.inner_text("#tags tr[data-tag='00100010']")
    private = page.locator("#tags tr[data-tag='00091001']")
    assert "Private (" + PRIVATE_CREATOR + ")" in private.inner_text()
    assert "private words" in private.inner_text()
    bulk = page.locator("#tags tr[data-tag='00091002'] a")
    assert bulk.inner_text() == "(bulk data)"
    with page.expect_download() as download:
        bulk.click()
    assert Path(download.value.path()).read_bytes() == bytes(range(256)) * 8
    assert download.value.suggested_filename == "00091002.bin"

    # a sequence: collapsed, then expanded to its item and the item's attributes
    assert page.locator("#tags tr[data-tag='00081150']").count() == 0
    toggle = page.locator("#tags tr[data-tag='00081140'] button.toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    page.wait_for_selector("#tags tr[data-tag='00081150']")
    assert (
        page.locator("#tags tr[data-tag='00081140'] button.toggle").get_attribute("aria-expanded")
        == "true"
    )
    assert page.locator("#tags tr.item").count() == 1
    assert accessibility_violations(page) == []
    screenshot(page, "series-tags")

    # private tags hidden, then the filter finds a nested attribute
    page.uncheck("#private")
    assert page.locator("#tags tr.private").count() == 0
    page.check("#private")
    page.fill("#filter", "referenced sop instance")
    page.wait_for_function("document.querySelectorAll('#tags tr').length === 3")
    assert page.locator("#tags tr[data-tag='00081155']").count() == 1
    page.fill("#filter", "")

    # another instance from the strip: its tags, and the address names it
    page.click(f"#strip button.thumb[data-uid='{second}']")
    page.wait_for_function(f"location.search.includes('{second}')")
    page.wait_for_selector(f"#tags tr[data-tag='00080018'] td.value:has-text('{second}')")
    assert (
        page.locator(f"#strip button[data-uid='{second}']").get_attribute("aria-pressed") == "true"
    )
    page.keyboard.press("ArrowRight")
    page.wait_for_function("(uid) => !location.search.includes(uid)", arg=second)
    big = browser.new_page(viewport=READING_ROOM)
    big.goto(f"{web.url}/ui/studies/{study}/series/{series}?instance={second}")
    big.wait_for_selector("#tags tr[data-tag='00100010']")
    screenshot(big, "series-4k")
    assert script_errors(page) == []
