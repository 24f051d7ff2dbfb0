"""``/metrics``: the Prometheus text format (prometheus-client), for the whole server.

The counters and histograms come from every process's files in the shared folder
(``MultiProcessCollector``), or from this process's metrics when it serves alone. What is
cheap to read when asked is read at scrape time instead of counted: free disk, the size of
the index, the job queue by state, and the build.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from vesalius import __version__
from vesalius.services.health import ArchiveStats
from vesalius.telemetry import metrics

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ArchiveCollector(Collector):
    """Gauges read when scraped: ``stats`` is the health service's :meth:`stats`."""

    def __init__(self, stats: Callable[[], ArchiveStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("vesalius_build", "The running Vesalius.")
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        stats = self.stats()
        if stats.free_bytes is not None:
            yield GaugeMetricFamily(
                "vesalius_storage_free_bytes",
                "Bytes free where new instances are written.",
                value=stats.free_bytes,
            )
        if stats.index:
            index = GaugeMetricFamily(
                "vesalius_index_entries",
                "Entries in the index, by level (patient, study, series, instance).",
                labels=["level"],
            )
            for level, count in stats.index.items():
                index.add_metric([level], count)
            yield index
        if stats.jobs is not None:
            jobs = GaugeMetricFamily(
                "vesalius_jobs",
                "Jobs in the queue table, by kind and state (queued and running: the queue "
                "depth; the others until pruned).",
                labels=["kind", "state"],
            )
            for (kind, state), count in sorted(stats.jobs.items()):
                jobs.add_metric([kind, state], count)
            yield jobs


def scrape(stats: Callable[[], ArchiveStats]) -> bytes:
    """The text exposition of every process's metrics and of ``stats``."""
    registry = CollectorRegistry(auto_describe=False)
    if metrics.multiprocess():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        current = metrics.current()
        for collector in current.collectors() if current is not None else ():
            registry.register(collector)
    registry.register(ArchiveCollector(stats))
    return generate_latest(registry)
