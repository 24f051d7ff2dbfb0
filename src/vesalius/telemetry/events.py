"""Metrics counted from the services' events (``services/events.py``): what was stored, sent,
queried and how jobs ended, whichever front door asked. The wiring subscribes
:func:`count_event` to the event bus; it does nothing while metrics are off."""

from __future__ import annotations

from vesalius.services.events import Event
from vesalius.telemetry import metrics

#: The protocol an instance arrived by, from the kind of identity that stored it.
STORED_BY = {"ae": "dimse", "user": "stow", "system": "import"}
#: The protocol a query came by.
QUERIED_BY = {"ae": "dimse", "user": "dicomweb", "system": "local"}
#: Outcomes after which the instance's bytes were written to storage.
WRITTEN = frozenset({"created", "replaced"})
#: Job events and the outcome they end a job with.
JOB_ENDS = {"job-succeeded": "succeeded", "job-failed": "failed", "job-cancelled": "cancelled"}


def count_event(event: Event) -> None:
    """Update the metrics an event bears on (an event bus subscriber)."""
    m = metrics.current()
    if m is None:
        return
    details = event.details
    if event.kind == "instance-stored":
        protocol = STORED_BY.get(event.who.kind, "other")
        m.instances_stored.labels(protocol, event.outcome).inc()
        if event.outcome in WRITTEN:
            m.stored_bytes.labels(protocol).inc(int(details.get("size", 0)))
    elif event.kind == "instances-transferred":
        operation = str(details.get("operation", "other"))
        completed = int(details.get("completed", 0)) + int(details.get("warning", 0))
        if completed:
            m.instances_sent.labels(operation).inc(completed)
        sent = int(details.get("bytes", 0))
        if sent:
            m.sent_bytes.labels(operation).inc(sent)
    elif event.kind == "query":
        seconds = details.get("seconds")
        if seconds is not None:
            protocol = QUERIED_BY.get(event.who.kind, "other")
            m.query_duration.labels(protocol).observe(float(seconds))
    elif event.kind in JOB_ENDS:
        m.jobs_finished.labels(str(details.get("kind", "other")), JOB_ENDS[event.kind]).inc()
