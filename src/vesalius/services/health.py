"""Health: whether the index answers and storage has room."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from vesalius import __version__
from vesalius.services.archive import Archive


def health(archive: Archive) -> dict[str, Any]:
    """A small status report; ``status`` is ``ok`` or ``degraded``."""
    report: dict[str, Any] = {
        "version": __version__,
        "ae_title": archive.settings["dicom.ae_title"],
    }
    try:
        with archive.catalog.read() as conn:
            conn.execute(text("SELECT 1"))
        report["index"] = "ok"
    except Exception as exc:  # report, never raise: this is what monitors poll
        report["index"] = f"error: {type(exc).__name__}"
    free = archive.storage.free_bytes()
    report["storage_free_bytes"] = free
    report["status"] = "ok" if report["index"] == "ok" else "degraded"
    return report
