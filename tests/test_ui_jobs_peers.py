"""The Jobs and Peers pages in Chromium over a served archive (SQLite;
tests/test_api_jobs_peers.py covers both backends): a send job cancelled, retried and run to
DCMTK's storescp, its progress bar filled by the live updates without a reload; a peer added
(after the form named each bad field), echoed, edited and deleted after a confirmation. Each
page passes axe-core and leaves a screenshot."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.tools import dcmtk_tool
from playwright.sync_api import Browser, expect

from conftest import SQLITE_ONLY, WebServer, dcmtk, free_port, wait_for_port
from synth import make_instance
from ui_browser import accessibility_violations, browser, open_page, screenshot, script_errors
from vesalius.identity import Identity
from vesalius.services.retrieve import RetrieveKeys

__all__ = ["browser"]
pytestmark = SQLITE_ONLY  # the page flow; the API tests cover PostgreSQL

STUDY = "1.2.826.0.1.3680043.8.498.15002"


@contextmanager
def storescp(folder: Path) -> Iterator[int]:
    """DCMTK's storescp (AE STORE) on a free port, for as long as the block runs."""
    port = free_port()
    exe = dcmtk_tool("storescp")
    assert exe is not None
    folder.mkdir(parents=True, exist_ok=True)
    scp = subprocess.Popen(
        [exe, "-aet", "STORE", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        scp.terminate()
        scp.wait(10)


def test_jobs_and_peers_pages(web: WebServer, browser: Browser, tmp_path: Path) -> None:
    """One served archive per backend for both pages (each flow below on its own page)."""
    with storescp(tmp_path / "received") as port:
        peers_page_adds_checks_echoes_edits_and_deletes(web, browser, port)
        jobs_page_cancels_retries_and_shows_live_progress(web, browser, tmp_path, port)


def jobs_page_cancels_retries_and_shows_live_progress(
    web: WebServer, browser: Browser, tmp_path: Path, port: int
) -> None:
    files = []
    for n in range(2):
        path = tmp_path / "in" / f"{n}.dcm"
        path.parent.mkdir(exist_ok=True)
        make_instance(path, StudyInstanceUID=STUDY, InstanceNumber=n + 1)
        files.append(str(path))
    dcmtk("storescu", *web.dimse.address, *files)
    archive = web.archive
    archive.peers.put("store", Identity.system(), ae_title="STORE", host="127.0.0.1", port=port)
    keys = RetrieveKeys(level="STUDY", study_uids=(STUDY,))
    job = archive.sending.submit(keys, "store", Identity.system()).pk

    page = open_page(browser, web.url + "/ui/jobs")
    row = page.locator(f'tr[data-job="{job}"]')
    expect(row).to_contain_text("queued")
    expect(page.locator("#live")).to_have_text("Live updates on.")
    row.get_by_role("button", name=f"Cancel job {job}").click()
    expect(row).to_contain_text("cancelled")
    row.get_by_role("button", name=f"Retry job {job}").click()
    expect(row).to_contain_text("queued")

    # Run by a runner elsewhere (here: a thread); the page learns it from the stream.
    runner = threading.Thread(target=archive.jobs.run_job, args=(job,))
    runner.start()
    runner.join(60)
    expect(row).to_contain_text("succeeded")
    expect(row.locator("progress")).to_have_attribute("value", "100")
    expect(row).to_contain_text("2 / 2")
    assert accessibility_violations(page) == []
    screenshot(page, f"jobs-{web.catalog.engine.dialect.name}")

    # The state filter: only failed jobs (none), then succeeded ones again.
    page.get_by_label("State").select_option("failed")
    expect(page).to_have_url(re.compile(r"/ui/jobs\?state=failed$"))
    expect(page.locator("#jobs-caption")).to_have_text("No failed jobs.")
    page.get_by_label("State").select_option("succeeded")
    expect(page.locator(f'tr[data-job="{job}"]')).to_contain_text("succeeded")
    assert script_errors(page) == []


def peers_page_adds_checks_echoes_edits_and_deletes(
    web: WebServer, browser: Browser, port: int
) -> None:
    page = open_page(browser, web.url + "/ui/peers")
    expect(page.locator("#peers-caption")).to_have_text("No peers yet.")
    page.get_by_role("button", name="Add a peer").click()
    form = page.locator("#peer-form")
    form.get_by_label("Name").fill("store")
    form.get_by_label("AE title").fill("ST\\ORE")
    form.get_by_label("Host").fill("127.0.0.1")
    form.get_by_label("Port").fill("0")
    form.get_by_role("button", name="Add peer").click()
    expect(form.locator("#peer-ae_title-problem")).to_contain_text("backslash")
    expect(form.locator("#peer-port-problem")).to_contain_text("1 to 65535")
    expect(form.get_by_label("AE title")).to_have_attribute("aria-invalid", "true")
    assert accessibility_violations(page) == []

    form.get_by_label("AE title").fill("STORE")
    form.get_by_label("Port").fill(str(port))
    form.get_by_role("button", name="Add peer").click()
    row = page.locator('tr[data-peer="store"]')
    expect(row).to_contain_text("STORE")
    expect(row).to_contain_text("echo, find, get, move, store")

    row.get_by_role("button", name="Echo store").click()
    expect(row.locator("output")).to_have_text(re.compile(r"^OK in \d+ ms$"))
    assert accessibility_violations(page) == []
    screenshot(page, f"peers-{web.catalog.engine.dialect.name}")

    # Edit: it now listens nowhere (a closed port), and the echo says so.
    row.get_by_role("button", name="Edit store").click()
    form.get_by_label("Port").fill(str(free_port()))
    form.get_by_label("DICOMweb URL (optional)").fill("https://pacs.example/dicom-web")
    form.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("https://pacs.example/dicom-web")
    row.get_by_role("button", name="Echo store").click()
    expect(row.locator("output")).to_have_text(re.compile(r"^Failed \(.+\) after \d+ ms$"))

    # Delete, after a confirmation (kept on "Keep it").
    row.get_by_role("button", name="Delete store").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Keep it").click()
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete store").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("#peers-caption")).to_have_text("No peers yet.")
    assert web.archive.peers.by_name("store") is None
    assert script_errors(page) == []
