"""The metrics of one Vesalius server (Prometheus naming: a ``vesalius_`` prefix, base units
in the names, ``_total`` on counters), and the hooks that update them.

They exist only once :func:`enable` has run (``vesalius serve`` calls it in every process,
after :mod:`vesalius.telemetry.shared` has chosen the folder the processes share); until then
every hook is a no-op, so commands and in-process tests pay nothing. Labels take values from
small fixed sets (no UIDs, no AE titles, no raw paths), so the series stay bounded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.registry import Collector

from vesalius.telemetry.shared import ENV

#: Latency buckets in seconds: sub-millisecond index lookups to minute-long study retrieves.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: HTTP methods kept as label values; any other is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
#: A-ASSOCIATE-RJ (result, source, reason) of PS3.8 Table 9-21 by label value.
REJECT_REASONS = {
    (0x01, 0x01, 0x01): "no-reason",
    (0x01, 0x01, 0x02): "application-context",
    (0x01, 0x01, 0x03): "calling-ae",
    (0x01, 0x01, 0x07): "called-ae",
    (0x01, 0x02, 0x02): "protocol-version",
    (0x02, 0x03, 0x01): "congestion",
    (0x02, 0x03, 0x02): "limit",
}


class Metrics:
    """Every metric a process updates (none registered anywhere: the exposition collects
    them, or in multiprocess mode the files they write)."""

    def __init__(self) -> None:
        self.associations_accepted = Counter(
            "vesalius_dimse_associations_accepted",
            "DIMSE associations accepted.",
            registry=None,
        )
        self.associations_rejected = Counter(
            "vesalius_dimse_associations_rejected",
            "DIMSE association requests refused (A-ASSOCIATE-RJ by reason, or aborted when "
            "the request was malformed: reason=protocol).",
            ["reason"],
            registry=None,
        )
        self.associations_active = Gauge(
            "vesalius_dimse_associations_active",
            "DIMSE associations established now.",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.dimse_operations = Counter(
            "vesalius_dimse_operations",
            "DIMSE operations answered, by command and final status class (PS3.7 C).",
            ["command", "status"],
            registry=None,
        )
        self.instances_stored = Counter(
            "vesalius_instances_stored",
            "Instances received and indexed, by protocol (dimse, stow, import) and outcome "
            "(created, replaced, kept, discarded).",
            ["protocol", "outcome"],
            registry=None,
        )
        self.stored_bytes = Counter(
            "vesalius_stored_bytes",
            "Bytes of instances written to storage (outcomes created and replaced).",
            ["protocol"],
            registry=None,
        )
        self.instances_sent = Counter(
            "vesalius_instances_sent",
            "Instances (or frames, rendered images) sent, by operation (C-MOVE, C-GET, "
            "WADO-RS, WADO-URI, ...).",
            ["operation"],
            registry=None,
        )
        self.sent_bytes = Counter(
            "vesalius_sent_bytes",
            "Stored bytes of the instances sent whole, by operation.",
            ["operation"],
            registry=None,
        )
        self.http_requests = Counter(
            "vesalius_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=None,
        )
        self.http_duration = Histogram(
            "vesalius_http_request_duration_seconds",
            "HTTP request latency (until the response is sent whole), by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.query_duration = Histogram(
            "vesalius_query_duration_seconds",
            "Query latency (C-FIND, QIDO-RS) from the first match asked for to the last sent.",
            ["protocol"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.jobs_finished = Counter(
            "vesalius_jobs_finished",
            "Jobs that ended, by kind and outcome (succeeded, failed, cancelled).",
            ["kind", "outcome"],
            registry=None,
        )
        self.audit_forwarded = Counter(
            "vesalius_audit_syslog_messages",
            "Audit messages for the syslog collector, by outcome (sent, dropped).",
            ["outcome"],
            registry=None,
        )

    def collectors(self) -> Iterable[Collector]:
        return [m for m in vars(self).values() if isinstance(m, (Counter, Gauge, Histogram))]


_metrics: Metrics | None = None


def enable() -> Metrics:
    """Create this process's metrics; in multiprocess mode (:data:`ENV` set, by the main
    process before the workers start) their values live in files of the shared folder."""
    global _metrics
    if os.environ.get(ENV):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    else:
        values.ValueClass = values.MutexValue
    _metrics = Metrics()
    return _metrics


def disable() -> None:
    global _metrics
    _metrics = None


def current() -> Metrics | None:
    """This process's metrics, or None when they are off."""
    return _metrics


def multiprocess() -> bool:
    return bool(os.environ.get(ENV))


# -- hooks of the front doors ------------------------------------------------------------


def association_accepted() -> None:
    if _metrics is not None:
        _metrics.associations_accepted.inc()
        _metrics.associations_active.inc()


def association_ended() -> None:
    """An accepted association ended (released, aborted or cut)."""
    if _metrics is not None:
        _metrics.associations_active.dec()


def association_rejected(reason: tuple[int, int, int] | None) -> None:
    """An association request refused: ``reason`` as sent in the A-ASSOCIATE-RJ, None when
    the request was malformed and answered with an A-ABORT."""
    if _metrics is not None:
        label = "protocol" if reason is None else REJECT_REASONS.get(reason, "other")
        _metrics.associations_rejected.labels(label).inc()


def status_class(status: int) -> str:
    """The class of a DIMSE status (PS3.7 C.1-C.4); ``pending`` for 0xFF00/0xFF01."""
    if status == 0x0000:
        return "success"
    if status in (0xFF00, 0xFF01):
        return "pending"
    if status == 0xFE00:
        return "cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


def dimse_response(command: str, status: int) -> None:
    """A final response to a DIMSE request went out (pending ones are not counted)."""
    if _metrics is not None and status not in (0xFF00, 0xFF01):
        _metrics.dimse_operations.labels(command, status_class(status)).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    if _metrics is not None:
        method = method if method in METHODS else "other"
        _metrics.http_requests.labels(method, route, str(status)).inc()
        _metrics.http_duration.labels(method, route).observe(seconds)


def audit_forwarded(outcome: str) -> None:
    """An audit message sent to the syslog collector, or dropped (queue full, collector
    down)."""
    if _metrics is not None:
        _metrics.audit_forwarded.labels(outcome).inc()
