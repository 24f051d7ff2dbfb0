"""Health: whether the index answers and storage has room to store (``storage.min_free_mb``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from vesalius import __version__
from vesalius.index.catalog import Catalog
from vesalius.storage import Spool, Stores


class HealthService:
    """A small status report for monitors and readiness probes."""

    def __init__(
        self,
        catalog: Catalog,
        spool: Spool,
        stores: Stores,
        *,
        ae_title: str,
        min_free_bytes: int,
    ) -> None:
        self.catalog = catalog
        self.spool = spool
        self.stores = stores
        self.ae_title = ae_title
        self.min_free_bytes = min_free_bytes

    def report(self) -> dict[str, Any]:
        """``status`` is ``ok`` or ``degraded``, with the reason under ``index`` or
        ``storage``; never raises (this is what monitors poll)."""
        report: dict[str, Any] = {"version": __version__, "ae_title": self.ae_title}
        try:
            with self.catalog.read() as conn:
                conn.execute(text("SELECT 1"))
            report["index"] = "ok"
        except Exception as exc:
            report["index"] = f"error: {type(exc).__name__}"
        try:
            # where new instances are written, then go (one filesystem for the folder store)
            free = min(self.spool.free_bytes(), self.stores.current.free_bytes())
        except OSError as exc:
            report["storage"] = f"error: {exc.strerror}"
        else:
            report["storage_free_bytes"] = free
            minimum = self.min_free_bytes
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
