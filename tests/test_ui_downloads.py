"""The study page's Download action in Chromium (issue 15): the dialog offers ZIP and DICOM
media, passes axe-core, and its link makes the browser download the streamed ZIP, which unpacks
to the stored files, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from pydicom.uid import generate_uid

from conftest import WebServer
from synth import make_instance
from ui_browser import accessibility_violations, browser, open_page, screenshot, script_errors
from vesalius.identity import Identity

__all__ = ["browser"]
ADMIN = Identity("user", "root", "localhost", roles=frozenset({"admin"}), method="local")


def test_download_dialog_downloads_zip_and_media(web: WebServer, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = generate_uid()
    for n in (1, 2):
        path = tmp_path / f"{n}.dcm"
        make_instance(path, InstanceNumber=n, StudyInstanceUID=study, PatientName="Doe^Jane")
        staged = web.archive.ingest.staging_path()
        shutil.copyfile(path, staged)
        web.archive.ingest.ingest_staged(staged, ADMIN)
    page = open_page(browser, f"{web.url}/ui/studies/{study}")
    toolbar = page.locator("main [data-action]", has_text="Download")
    toolbar.click()  # as a user does, on the study page
    dialog = page.get_by_role("dialog", name="Download")
    dialog.wait_for()
    assert accessibility_violations(page) == []
    screenshot(page, "download-dialog")
    for fmt, label, expected in (("zip", "ZIP", ".dcm"), ("media", "DICOM media", "DICOMDIR")):
        if page.get_by_role("dialog", name="Download").count() == 0:
            toolbar.click()
            page.get_by_role("dialog", name="Download").wait_for()
        dialog.get_by_label(label, exact=False).check()
        with page.expect_download() as info:
            dialog.get_by_role("button", name="Download", exact=True).click()
        download = info.value
        assert download.suggested_filename.endswith(".zip")
        saved = tmp_path / f"{fmt}.zip"
        download.save_as(saved)
        names = zipfile.ZipFile(saved).namelist()
        assert len(names) == (3 if fmt == "media" else 2)
        assert any(n.endswith(expected) for n in names), names
        page.get_by_role("dialog", name="Download").wait_for(state="detached")  # closed after
    assert script_errors(page) == []
