"""OHIF for a logged-in user, in Chromium (issue 14: "OHIF keeps working for a logged-in user"):
with authentication on, the viewer's URL sends the browser to the login page; after logging in
it comes back to the study it asked for, and OHIF's DICOMweb requests, made with the same-origin
session cookie, draw the image. Skips like ``test_viewer_browser.py`` without Chromium or OHIF.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RunningServer, dcmtk, make_server, running_http
from test_viewer_browser import (
    ARTIFACTS,
    CHROMIUM,
    LIT_FRACTION,
    REQUIRE,
    _missing,
    _viewer_overrides,
    write_series,
)
from vesalius.commands import operator

PASSWORD = "correct horse battery"


@pytest.fixture
def guarded_ct(tmp_path: Path) -> Iterator[tuple[RunningServer, str, str]]:
    reason = _missing()
    if reason:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    study = write_series(tmp_path / "ct")
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **{"auth.required": "true", **_viewer_overrides()},
    )
    try:
        running.archive.accounts.add_user(
            "reader", PASSWORD, frozenset({"radiologist"}), operator()
        )
        dcmtk("storescu", *running.address, "+sd", str(tmp_path / "ct"))
        with running_http(running.archive, running.settings) as url:
            yield running, url, study
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def test_a_logged_in_user_sees_the_study_in_ohif(
    guarded_ct: tuple[RunningServer, str, str],
) -> None:
    from playwright.sync_api import Response, sync_playwright

    _running, url, study = guarded_ct
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    refused: list[str] = []

    def on_response(response: Response) -> None:
        path = response.url.removeprefix(url)
        if response.status in (401, 403) and path.startswith(("/dicom-web", "/wado")):
            refused.append(f"{response.request.method} {path} -> {response.status}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("response", on_response)
            page.goto(f"{url}/viewer?StudyInstanceUIDs={study}", wait_until="domcontentloaded")
            assert page.url.startswith(f"{url}/login?next=")
            page.fill("#name", "reader")
            page.fill("#password", PASSWORD)
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert page.url == f"{url}/viewer?StudyInstanceUIDs={study}"
            cookies = {c["name"]: c for c in page.context.cookies()}
            session = cookies["vesalius-session"]
            assert session["httpOnly"] and session["sameSite"] == "Lax"
            page.wait_for_function(f"({LIT_FRACTION})() > 0.05", timeout=90_000, polling=250)
            page.screenshot(path=str(ARTIFACTS / "ohif-logged-in.png"))
            # Logged out, the viewer's data is refused again.
            page.goto(f"{url}/logout", wait_until="domcontentloaded")
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert page.url.startswith(f"{url}/login")
            answer = page.request.get(f"{url}/dicom-web/studies")
            assert answer.status == 401
        finally:
            browser.close()
    assert refused == [], refused
