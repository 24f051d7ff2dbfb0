"""Health: whether the index answers and storage has room to store (``storage.min_free_mb``)."""

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
    try:
        free = archive.storage.free_bytes()
    except OSError as exc:
        report["storage"] = f"error: {exc.strerror}"
    else:
        report["storage_free_bytes"] = free
        minimum = archive.ingest.min_free_bytes
        if minimum and free < minimum:
            # C-STORE and STOW-RS are refused (0xA700 / 507) until space is freed.
            report["storage"] = (
                f"low: {free / (1 << 20):.1f} MiB free, storage.min_free_mb is "
                f"{minimum / (1 << 20):g}"
            )
        else:
            report["storage"] = "ok"
    healthy = report["index"] == "ok" and report["storage"] == "ok"
    report["status"] = "ok" if healthy else "degraded"
    return report
