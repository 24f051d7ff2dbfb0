"""The transfers part of the web UI in Chromium, on SQLite and PostgreSQL,
against real peers: the Query/Retrieve page searches a second Vesalius and
retrieves a study and a series with live progress; the study page's Send dialog sends to DCMTK's
storescp by C-STORE and to the second Vesalius by STOW-RS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from transfers_support import Site, dataset_bytes, site, stored_datasets
from ui_browser import accessibility_violations, browser, open_page, screenshot, script_errors

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["browser"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def peers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    with site(request.param, tmp_path_factory.mktemp(f"ui-transfers-{request.param}")) as running:
        yield running


def test_search_a_second_vesalius_and_retrieve_with_progress(
    peers: Site, browser: Browser, request: pytest.FixtureRequest
) -> None:
    moved, gotten = peers.remote_studies
    page = open_page(browser, peers.url + "/ui/remote")
    page.get_by_label("Peer").select_option("theirs")
    page.get_by_label("Patient name").fill("remote")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#remote-results tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    assert "2 studies found on theirs" in page.locator("#remote-status").inner_text()
    assert "Remote, Moved" in page.locator(f'tr[data-study="{moved.uid}"]').inner_text()

    # the series of a study, and a retrieve of one of them by C-GET
    page.get_by_label("Retrieve with").select_option("get")
    page.get_by_role("button", name="Series of Remote, Moved's study").click()
    series = page.locator(".remote-series tbody tr")
    series.first.wait_for()
    assert series.count() == 2
    assert accessibility_violations(page) == []
    page.get_by_role("button", name="Retrieve series 2").click()
    first = page.locator("#remote-jobs .job").first
    page.wait_for_selector('#remote-jobs .job[data-state="succeeded"]', timeout=60_000)
    assert "2 instance(s) retrieved by C-GET from THEIRS" in first.inner_text()
    wanted = list(moved.series.values())[1]
    assert {dataset_bytes(p) for p in wanted} <= stored_datasets(peers.ours)

    # the whole other study by C-MOVE; the page links to it when it has arrived
    page.get_by_label("Retrieve with").select_option("move")
    page.get_by_role("button", name="Retrieve Remote, Gotten's study").click()
    page.wait_for_function(
        "document.querySelectorAll('#remote-jobs .job[data-state=\"succeeded\"]').length == 2",
        timeout=60_000,
    )
    newest = page.locator("#remote-jobs .job").first
    assert "retrieved by C-MOVE from THEIRS" in newest.inner_text()
    assert newest.get_by_role("link", name="Open the study").get_attribute("href") == (
        f"/ui/studies/{gotten.uid}"
    )
    assert {dataset_bytes(p) for p in gotten.files} <= stored_datasets(peers.ours)
    assert accessibility_violations(page) == []
    screenshot(page, f"remote-{request.node.callspec.id}")
    assert script_errors(page) == []


def test_send_dialog_by_c_store_and_by_stow_rs(
    peers: Site, browser: Browser, request: pytest.FixtureRequest
) -> None:
    study = peers.local_study
    page = open_page(browser, f"{peers.url}/ui/studies/{study.uid}")
    page.locator("main [data-action]", has_text="Send").click()  # the study page's toolbar
    dialog = page.get_by_role("dialog", name="Send study")
    dialog.wait_for()
    dialog.get_by_label("Peer").select_option("store")
    assert dialog.get_by_label("DICOMweb (STOW-RS)").is_disabled()  # no DICOMweb URL
    assert accessibility_violations(page) == []
    dialog.get_by_role("button", name="Send").click()
    dialog.locator('.job[data-state="succeeded"]').wait_for(timeout=60_000)
    assert "4 of 4 sent to STORE" in dialog.locator(".job").inner_text()
    got = {dataset_bytes(p) for p in peers.storescp_dir.iterdir() if p.is_file()}
    assert {dataset_bytes(p) for p in study.files} <= got

    before = dialog.locator(".job").get_attribute("data-job")
    dialog.get_by_label("Peer").select_option("theirs")
    dialog.get_by_label("DICOMweb (STOW-RS)").check()
    dialog.get_by_role("button", name="Send").click()
    dialog.locator(f'.job[data-state="succeeded"]:not([data-job="{before}"])').wait_for(
        timeout=60_000
    )
    assert "4 of 4 sent to http://127.0.0.1:" in dialog.locator(".job").inner_text()
    assert {dataset_bytes(p) for p in study.files} <= stored_datasets(peers.theirs)
    screenshot(page, f"send-{request.node.callspec.id}")
    assert script_errors(page) == []
