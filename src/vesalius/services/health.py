"""Health: whether the index answers and storage has room to store (``storage.min_free_mb``)
(:meth:`HealthService.report`, ``/health``); whether this server can do its work
(:meth:`HealthService.readiness`, ``/readyz``); and the figures ``/metrics`` reads when
scraped (:meth:`HealthService.stats`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text

from vesalius import __version__
from vesalius.index import jobs as job_table
from vesalius.index import schema
from vesalius.index.catalog import Catalog
from vesalius.storage import Spool, Stores

#: Index tables counted by :meth:`HealthService.stats`, by level.
LEVELS = {
    "patient": schema.patients,
    "study": schema.studies,
    "series": schema.series,
    "instance": schema.instances,
}


@dataclass(frozen=True)
class ArchiveStats:
    """What a metrics scrape reads: bytes free for new instances (None when unknown), entries
    in the index by level, and jobs by (kind, state) (None when the index did not answer)."""

    free_bytes: int | None
    index: dict[str, int] = field(default_factory=dict)
    jobs: dict[tuple[str, str], int] | None = None


@dataclass(frozen=True)
class Check:
    """One readiness check: passed or not, and why."""

    ok: bool
    detail: str = "ok"


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
        stale_after: float = 0.0,
    ) -> None:
        """``stale_after``: ``jobs.stale_after``; a running job silent for twice that has no
        runner left (0: not checked)."""
        self.catalog = catalog
        self.spool = spool
        self.stores = stores
        self.ae_title = ae_title
        self.min_free_bytes = min_free_bytes
        #: Whether this process's job runner (if it has one) is alive; set by the wiring.
        self.runner_alive: Callable[[], bool] | None = None
        self.stale_after = stale_after

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

    # -- readiness ------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """``status`` ``ready`` or ``not ready``, with each check's result and reason under
        ``checks``: the index answers, the storage is writable and has room, and jobs have a
        live runner. Never raises."""
        checks = {
            "database": self._check(self._database),
            "storage": self._check(self._writable),
            "disk": self._check(self._disk),
            "jobs": self._check(self._jobs),
        }
        ready = all(c.ok for c in checks.values())
        return {
            "status": "ready" if ready else "not ready",
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        }

    @staticmethod
    def _check(probe: Callable[[], Check]) -> Check:
        try:
            return probe()
        except OSError as exc:
            return Check(False, f"{exc.strerror or exc} ({exc.filename or 'storage'})")
        except Exception as exc:
            return Check(False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    def _database(self) -> Check:
        with self.catalog.read() as conn:
            conn.execute(text("SELECT 1"))
        return Check(True)

    def _writable(self) -> Check:
        """Create, write and remove a small file where new instances are staged."""
        probe = self.spool.folder / f".ready-{os.getpid()}-{threading.get_ident()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ready")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        return Check(True)

    def _disk(self) -> Check:
        free = min(self.spool.free_bytes(), self.stores.current.free_bytes())
        minimum = self.min_free_bytes
        if minimum and free < minimum:
            return Check(
                False,
                f"{free / (1 << 20):.1f} MiB free, storage.min_free_mb is {minimum / (1 << 20):g}",
            )
        return Check(True, f"{free / (1 << 20):.0f} MiB free")

    def _jobs(self) -> Check:
        if self.runner_alive is not None and not self.runner_alive():
            return Check(False, "the job runner of this process has stopped")
        if self.stale_after > 0:
            with self.catalog.read() as conn:
                stale = job_table.any_stale(conn, 2 * self.stale_after)
            if stale:
                return Check(
                    False,
                    f"a running job has been silent for over {2 * self.stale_after:g} s "
                    "and nobody took it back: no job runner is alive",
                )
        return Check(True)

    # -- metrics --------------------------------------------------------------------------

    def stats(self) -> ArchiveStats:
        """Free bytes, index size and the jobs by kind and state: a few cheap counts (the
        index's primary keys), read when ``/metrics`` is scraped. Never raises."""
        try:
            free: int | None = min(self.spool.free_bytes(), self.stores.current.free_bytes())
        except OSError:
            free = None
        try:
            with self.catalog.read() as conn:
                index = {
                    level: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                    for level, t in LEVELS.items()
                }
                rows = conn.execute(
                    select(schema.jobs.c.kind, schema.jobs.c.state, func.count()).group_by(
                        schema.jobs.c.kind, schema.jobs.c.state
                    )
                )
                jobs = {(str(kind), str(state)): int(n) for kind, state, n in rows}
        except Exception:
            return ArchiveStats(free)
        return ArchiveStats(free, index, jobs)
