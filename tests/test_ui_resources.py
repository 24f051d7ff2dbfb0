"""The web UI's study list and study page in Chromium (issue 15, part "resources"): search,
sort, keyboard navigation, the study page with its series thumbnails and OHIF link, and
deleting a study after a confirmation; axe-core finds no serious or critical violation, and
screenshots are kept (test-artifacts/ui/). One served archive per module and backend, with a
job runner, so the deletion really runs, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from conftest import make_server, running_http, scratch_database, wait_until
from test_api_resources import SPECS, Seeded, Spec, seed
from ui_browser import (
    READING_ROOM,
    accessibility_violations,
    browser,  # noqa: F401  (the fixture)
    open_page,
    screenshot,
    script_errors,
)
from vesalius.services.archive import Archive
from vesalius.services.jobs import JobRunner

if TYPE_CHECKING:
    from playwright.sync_api import Browser

LIVE = Spec("l", ("Live^Arrival", "P-L"), "20190101", "MR", "Arrived live", "ACCL")
GONE = Spec("x", ("Gone^Soon", "P-X"), "20200101", "CT", "To delete", "ACCX", (2,))


@dataclass
class Site:
    url: str
    archive: Archive
    seeded: Seeded
    backend: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp(f"ui-resources-{request.param}")
    with scratch_database(request.param, folder) as url:
        running = make_server(folder / "data", url)
        runner = JobRunner(
            running.archive.jobs, poll_interval=0.05, housekeeping=running.archive.deletion.sweep
        )
        runner.start()
        try:
            seeded = seed(running.archive, folder / "files", (*SPECS, GONE))
            with running_http(running.archive, running.settings) as base:
                yield Site(base, running.archive, seeded, request.param)
        finally:
            runner.stop()
            running.dimse.stop(grace=1)
            running.archive.close()


def test_study_list_search_sort_keyboard_and_study_page(
    site: Site,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    page = open_page(browser, site.url + "/")
    rows = page.locator("#study-rows tr[data-uid]")
    rows.first.wait_for()
    assert rows.count() == 6
    assert page.locator("#study-count").inner_text() == "6 studies"
    assert accessibility_violations(page) == []
    screenshot(page, f"studies-{site.backend}")

    # live: a study stored now shows up without a reload (server-sent events)
    seed(site.archive, tmp_path, (LIVE,))
    page.wait_for_function("document.querySelectorAll('#study-rows tr[data-uid]').length === 7")
    assert page.locator("#study-count").inner_text() == "7 studies"

    # free-text search: kept in the address
    page.fill("input[name=q]", "doe")
    page.press("input[name=q]", "Enter")
    page.wait_for_function("document.querySelectorAll('#study-rows tr[data-uid]').length === 3")
    assert "q=doe" in page.url
    assert page.locator("#study-count").inner_text() == "3 studies"

    # sort by patient: ascending, then descending
    page.click("button[data-sort=patient_name]")
    page.wait_for_function(
        "document.querySelector('th[aria-sort=ascending] button[data-sort=patient_name]')"
    )
    names = page.locator("#study-rows tr[data-uid] td:first-child").all_inner_texts()
    assert names == ["Doe, Jane", "Doe, Jane", "doe, john"]

    # keyboard: the first row, down one, Enter opens that study
    rows.first.focus()
    page.keyboard.press("ArrowDown")
    second = rows.nth(1).get_attribute("data-uid")
    assert page.evaluate("document.activeElement.dataset.uid") == second
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/studies/"))
    assert second is not None and page.url.endswith(second)
    page.locator("h1", has_text="Brain MR").wait_for()
    viewer = page.locator("a", has_text="Open in OHIF")
    assert viewer.get_attribute("href") == f"/viewer?StudyInstanceUIDs={second}"
    page.wait_for_function(
        "[...document.querySelectorAll('.series-card img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    toolbar = page.locator("[role=toolbar] button").all_inner_texts()
    assert "Delete" in toolbar
    assert accessibility_violations(page) == []
    screenshot(page, f"study-{site.backend}")

    # Back returns to the search as it was
    page.go_back()
    page.wait_for_function("document.querySelectorAll('#study-rows tr[data-uid]').length === 3")
    assert page.input_value("input[name=q]") == "doe"
    assert script_errors(page) == []


def test_deleting_a_study_asks_first(
    site: Site,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    uid = site.seeded.studies["x"]
    page = open_page(browser, f"{site.url}/ui/studies/{uid}", viewport=READING_ROOM)
    page.locator("h1", has_text="To delete").wait_for()
    screenshot(page, f"study-4k-{site.backend}")
    page.click("[role=toolbar] button:has-text('Delete')")
    dialog = page.locator("dialog[open]")
    dialog.wait_for()
    assert "Gone, Soon" in dialog.inner_text()
    assert accessibility_violations(page) == []
    dialog.locator("button", has_text="Cancel").click()
    assert page.locator("dialog").count() == 0
    assert httpx.get(f"{site.url}/api/v1/studies/{uid}").status_code == 200

    page.click("[role=toolbar] button:has-text('Delete')")
    page.locator("dialog[open] button", has_text="Delete study").click()
    page.wait_for_url(site.url + "/", timeout=30_000)
    wait_until(lambda: httpx.get(f"{site.url}/api/v1/studies/{uid}").status_code == 404)
    page.locator("#study-rows tr[data-uid]").first.wait_for()
    assert page.locator(f"#study-rows tr[data-uid='{uid}']").count() == 0
    assert script_errors(page) == []
