"""Driving the web UI in Chromium (Debian's, through Playwright) for the UI tests: a page on a
served archive, an accessibility check with axe-core (from the npm registry, installed by
``vesalius ui install``), and screenshots kept as test artifacts.

Skips with the reason when Chromium, Playwright or the UI's packages are missing, unless
``VESALIUS_REQUIRE_BROWSER=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from test_viewer_browser import ARTIFACTS, CHROMIUM, REQUIRE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ASSETS = Path(sys.prefix) / "share" / "vesalius" / "frontend"
AXE = ASSETS / "axe-core" / "axe.min.js"
#: Screen sizes the UI must work on: a laptop, and a 4K reading-room screen.
LAPTOP = {"width": 1366, "height": 768}
READING_ROOM = {"width": 3840, "height": 2160}


def missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    if not AXE.is_file():
        return f"the UI's packages are not installed in {ASSETS}: run .venv/bin/vesalius ui install"
    return None


def need_browser() -> None:
    reason = missing()
    if reason:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A headless Chromium (one per test: the tests stay independent)."""
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Browser, url: str, viewport: dict[str, int] | None = None) -> Page:
    """A new page at ``url``, failing the test on any error the page's scripts throw."""
    page = browser.new_page(viewport=viewport or LAPTOP)  # type: ignore[arg-type]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url, wait_until="domcontentloaded")
    page.set_default_timeout(15_000)
    page.__dict__["script_errors"] = errors
    return page


def script_errors(page: Page) -> list[str]:
    return list(page.__dict__.get("script_errors", []))


def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify(await axe.run(document))")
    violations = json.loads(result)["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": len(v["nodes"])}
        for v in violations
        if v.get("impact") in ("serious", "critical")
    ]


def screenshot(page: Page, name: str) -> Path:
    """Keep a full-page screenshot as a test artifact (``test-artifacts/ui/<name>.png``)."""
    folder = ARTIFACTS / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
