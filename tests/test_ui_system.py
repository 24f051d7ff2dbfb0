"""The Statistics, Audit and Users pages in Chromium against a real served archive (SQLite and
PostgreSQL) with studies stored by DCMTK's storescu and over
STOW-RS: charts drawn with their numbers in tables, "who accessed this patient", users added,
changed, disabled; no serious or critical accessibility violation (axe-core); screenshots kept."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from system_site import SENDER, Site, seed, served
from ui_browser import (
    READING_ROOM,
    accessibility_violations,
    browser,  # noqa: F401 (a fixture)
    open_page,
    screenshot,
    script_errors,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """Authentication off: the browser is an anonymous administrator (the laptop default)."""
    folder = tmp_path_factory.mktemp(f"ui-system-{request.param}")
    with served(folder, request.param, **{"auth.required": "false"}) as found:
        seed(found, folder / "files")
        yield found


def test_statistics_page_draws_its_charts_and_says_when_the_disk_fills(
    browser: Browser,  # noqa: F811
    site: Site,
) -> None:
    page = open_page(browser, f"{site.url}/ui/statistics")
    figures = page.locator("#figures")
    expect(figures).to_contain_text("Instances")
    expect(figures.locator("article").nth(3)).to_contain_text("6")
    forecast = page.locator("#forecast")
    expect(forecast).to_contain_text(re.compile("the disk (fills in|does not fill)"))
    expect(forecast).to_contain_text("least squares")
    for chart in ("#rate-chart", "#growth-chart", "#mix-chart"):
        expect(page.locator(f"{chart} canvas")).to_have_count(1)
    mix = page.locator("section", has=page.locator("#mix")).locator("table.striped tbody tr")
    expect(mix).to_have_count(3)
    expect(mix.first).to_contain_text("CT")
    senders = page.locator("section", has=page.locator("#senders")).locator("tbody")
    expect(senders).to_contain_text(SENDER)
    expect(senders).to_contain_text("anonymous")
    numbers = page.locator("section:has(#rate) details")
    numbers.locator("summary").click()
    expect(numbers.locator("tbody tr").first).to_contain_text(re.compile(r"20\d\d-\d\d-\d\d"))
    assert accessibility_violations(page) == []
    screenshot(page, f"statistics-{site.backend}")
    page.get_by_label("per hour, last 2 days").check()
    expect(page).to_have_url(f"{site.url}/ui/statistics?bucket=hour")
    expect(page.locator("#rate-chart canvas")).to_have_count(1)
    page.set_viewport_size(READING_ROOM)
    screenshot(page, f"statistics-4k-{site.backend}")
    assert script_errors(page) == []


def test_audit_page_shows_who_accessed_a_patient(
    browser: Browser,  # noqa: F811
    site: Site,
) -> None:
    page = open_page(browser, f"{site.url}/ui/audit")
    expect(page.locator("#audit-count")).to_be_visible()
    page.get_by_label("Patient ID").fill("SYS-1")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(f"{site.url}/ui/audit?patient=SYS-1")
    rows = page.locator("#audit-results tbody tr")
    expect(rows.first).to_be_visible()
    expect(page.locator("#audit-results tbody")).to_contain_text(SENDER)
    expect(page.locator("#audit-count")).to_contain_text("for patient SYS-1")
    assert accessibility_violations(page) == []
    screenshot(page, f"audit-{site.backend}")
    # the search just made is in the trail: the reader is named
    page.goto(f"{site.url}/ui/audit?user=anonymous")
    expect(page.locator("#audit-results tbody")).to_contain_text("Audit Log Used")
    assert script_errors(page) == []


def test_users_page_adds_changes_and_disables_a_user(
    browser: Browser,  # noqa: F811
    site: Site,
) -> None:
    name = f"tech-{site.backend}"
    page = open_page(browser, f"{site.url}/ui/users")
    page.get_by_text("Add a user").click()
    form = page.locator("#new-user")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Password").fill("a long enough secret")
    form.get_by_label("technologist").check()
    form.get_by_label("Groups").fill("ct, night")
    form.get_by_role("button", name="Add").click()
    row = page.locator(f'tr[data-user="{name}"]')
    expect(row).to_contain_text("technologist")
    expect(row).to_contain_text("ct, night")
    assert "a long enough secret" not in page.content()

    row.get_by_role("button", name="Edit").click()
    dialog = page.locator("#user-dialog")
    dialog.get_by_label("radiologist").check()
    dialog.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("radiologist, technologist")

    row.get_by_role("button", name="Reset password").click()
    dialog.get_by_label("New password").fill("another long secret")
    assert accessibility_violations(page) == []
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).not_to_be_visible()
    assert site.archive.accounts.verify(name, "another long secret", "127.0.0.1").name == name

    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    expect(row.get_by_role("button", name="Enable")).to_be_visible()
    assert accessibility_violations(page) == []
    screenshot(page, f"users-{site.backend}")
    assert script_errors(page) == []
