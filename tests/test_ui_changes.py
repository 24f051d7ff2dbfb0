"""The Correct and Anonymize dialogs of the study page (issue 15, part "changes") in Chromium,
on a served archive with its job runner, on SQLite and PostgreSQL.

The dialogs are opened as a user opens them, from the study page's toolbar. Correct: the
current values shown, one changed, the job's progress, the result, Undo, and the index as
before; Anonymize: options ticked, the ZIP downloaded, or a new de-identified study made in the
archive by a job and then found in the study list. No serious or critical accessibility
violations; screenshots kept.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import make_server, running_http, scratch_database
from synth import make_instance
from ui_browser import accessibility_violations, browser, open_page, screenshot, script_errors
from vesalius.identity import Identity
from vesalius.services.jobs import JobRunner

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser"]  # the fixture


def open_action(page: Page, site: Site, label: str) -> None:
    """Open the study page and click ``label`` in its toolbar, as a user does."""
    page.goto(f"{site.url}/ui/studies/{site.study}", wait_until="domcontentloaded")
    page.locator("main [data-action]", has_text=label).click()


@dataclass
class Site:
    url: str
    study: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp(f"ui-changes-{request.param}")
    with scratch_database(request.param, folder) as url:
        running = make_server(folder / "data", url)
        runner = JobRunner(running.archive.jobs, poll_interval=0.05)
        runner.start()
        try:
            study = generate_uid()
            for n in range(3):
                path = folder / f"{n}.dcm"
                make_instance(
                    path,
                    StudyInstanceUID=study,
                    InstanceNumber=n + 1,
                    PatientName="Wrong^Name",
                    PatientID="UI-1",
                    StudyDescription="Knee",
                )
                running.archive.ingest.ingest_copy(path, Identity.system("test"))
            with running_http(running.archive, running.settings) as base:
                yield Site(base, study)
        finally:
            runner.stop()
            running.dimse.stop(grace=1)
            running.archive.close()


def study(site: Site) -> dict[str, object]:
    return dict(httpx.get(f"{site.url}/api/v1/studies/{site.study}").json())


def test_correct_and_undo_in_the_dialog(
    site: Site, browser: object, request: pytest.FixtureRequest
) -> None:
    page = open_page(browser, site.url + "/")  # type: ignore[arg-type]
    open_action(page, site, "Correct")
    dialog = page.get_by_role("dialog", name="Correct patient and study")
    name = dialog.get_by_label("Patient's Name (Family^Given)")
    assert name.input_value() == "Wrong^Name"
    assert dialog.get_by_label("Study Description").input_value() == "Knee"
    assert accessibility_violations(page) == []
    name.fill("Right^Name")
    dialog.get_by_label("Reason (kept with the correction)").fill("registration typo")
    dialog.get_by_role("button", name="Correct", exact=True).click()
    dialog.get_by_text("Corrected.").wait_for()
    assert "Right^Name" in dialog.get_by_role("table").inner_text()
    assert accessibility_violations(page) == []
    screenshot(page, f"changes-correct-{request.node.callspec.id}")
    assert study(site)["patient"]["name"] == "Right^Name"  # type: ignore[index]

    dialog.get_by_role("button", name="Undo").click()
    dialog.get_by_text("Undone: the study is as it was.").wait_for()
    assert study(site)["patient"]["name"] == "Wrong^Name"  # type: ignore[index]
    dialog.get_by_role("button", name="Close", exact=True).last.click()
    page.get_by_role("dialog").wait_for(state="detached")
    page.locator("main h1").wait_for()  # the study page, refreshed
    assert script_errors(page) == []


def test_anonymize_download_in_the_dialog(
    site: Site, browser: object, request: pytest.FixtureRequest
) -> None:
    page = open_page(browser, site.url + "/")  # type: ignore[arg-type]
    open_action(page, site, "Anonymize")
    dialog = page.get_by_role("dialog", name="Anonymize the study")
    dialog.get_by_label("Keep device identity").check()
    dialog.get_by_label("Download as a ZIP").check()
    assert accessibility_violations(page) == []
    screenshot(page, f"changes-anonymize-{request.node.callspec.id}")
    with page.expect_download() as waiting:
        dialog.get_by_role("button", name="Anonymize", exact=True).click()
    saved = Path(waiting.value.path())
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        assert len(names) == 3
        ds = dcmread(io.BytesIO(archive.read(names[0])))
    assert ds.PatientID != "UI-1" and "retain_device" not in str(ds.get("DeidentificationMethod"))
    assert "device" in str(ds.DeidentificationMethod)
    dialog.get_by_text("The download has started.").wait_for()
    assert script_errors(page) == []


def test_anonymize_into_the_archive_in_the_dialog(
    site: Site, browser: object, request: pytest.FixtureRequest
) -> None:
    page = open_page(browser, site.url + "/")  # type: ignore[arg-type]
    open_action(page, site, "Anonymize")
    dialog = page.get_by_role("dialog", name="Anonymize the study")
    assert dialog.get_by_label("A new study in this archive").is_checked()  # the default
    dialog.get_by_label("Keep device identity").check()
    dialog.get_by_role("button", name="Anonymize", exact=True).click()
    opened = dialog.get_by_role("link", name="Open the new study")
    opened.wait_for(timeout=60_000)  # the job's progress, then the result
    new = str(opened.get_attribute("href")).rsplit("/", 1)[-1]
    assert new and new != site.study
    assert f"3 instance(s) written into study {new}" in dialog.get_by_role("status").inner_text()
    assert accessibility_violations(page) == []
    screenshot(page, f"changes-anonymized-{request.node.callspec.id}")

    opened.click()
    page.wait_for_url(f"**/ui/studies/{new}")
    page.locator("main code", has_text=new).wait_for()  # the new study's page, not the last
    assert "Wrong" not in page.locator("main").inner_text()

    # the new study in the study list, beside the original, which is as it was
    page.goto(site.url + "/", wait_until="domcontentloaded")
    row = page.locator(f'#study-rows tr[data-uid="{new}"]')
    row.wait_for()
    original = page.locator(f'#study-rows tr[data-uid="{site.study}"]')
    assert "Wrong, Name" in original.inner_text() and "UI-1" in original.inner_text()
    assert "Wrong" not in row.inner_text() and "UI-1" not in row.inner_text()
    assert "3 instances" in row.inner_text()
    assert accessibility_violations(page) == []
    made = dict(httpx.get(f"{site.url}/api/v1/studies/{new}").json())
    assert made["patient"]["name"] not in ("", "Wrong^Name")  # type: ignore[index]
    assert made["patient"]["patient_id"] != "UI-1"  # type: ignore[index]
    kept = study(site)
    assert kept["patient"]["name"] == "Wrong^Name" and kept["instance_count"] == 3  # type: ignore[index]
    assert script_errors(page) == []
