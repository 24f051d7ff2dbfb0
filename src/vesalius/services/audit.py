"""The audit trail: who touched which patient's data (PS3.15 A.5, RFC 3881 in spirit).

The :class:`Auditor` subscribes to every event the services publish (``services/events.py``)
and hands each to its sinks; the one sink today, :class:`LogSink`, writes one JSON object per
line to the ``vesalius.audit`` logger, whose level is fixed at INFO so that no log level setting
can silence it. A durable sink (a database table, syslog per RFC 5424) is another
:class:`AuditSink` beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from vesalius.services.events import Event

AUDIT_LOGGER = "vesalius.audit"
#: The audit record of one event (the name the trail's readers know).
AuditEvent = Event


class AuditSink(Protocol):
    """Somewhere audit events go; it must not raise (a failing sink is logged, not fatal)."""

    def write(self, event: Event) -> None: ...


class LogSink:
    """Audit events as JSON lines on the ``vesalius.audit`` logger, at INFO, whatever level the
    rest of the log runs at (the logger's own level is set here, and handlers of the root
    logger pass everything propagated to them)."""

    def __init__(self, name: str = AUDIT_LOGGER) -> None:
        self.logger = logging.getLogger(name)
        self.logger.setLevel(logging.INFO)

    def write(self, event: Event) -> None:
        self.logger.info(event.as_json())


class MemorySink:
    """Audit events kept in a list (tests, and the coming audit views before a table exists)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, event: Event) -> None:
        self.events.append(event)


class Auditor:
    """Writes every event it is given to every sink; subscribed to the services' events by the
    wiring."""

    def __init__(self, sinks: Iterable[AuditSink] = ()) -> None:
        self.sinks = list(sinks) or [LogSink()]

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.write(event)
            except Exception:  # an audit sink failing must not fail the operation audited
                logging.getLogger(__name__).exception("audit sink %r failed", sink)
