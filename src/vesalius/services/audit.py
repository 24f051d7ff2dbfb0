"""The audit trail: who touched which patient's data (PS3.15 A.5, RFC 3881 in spirit).

Every service call that reads or writes patient data records an event through the
:class:`Auditor` it was given (the wiring injects it). An auditor hands each event to its sinks;
the one sink today, :class:`LogSink`, writes one JSON object per line to the ``vesalius.audit``
logger, whose level is fixed at INFO so that no log level setting can silence it. A durable
sink (a database table, syslog per RFC 5424) is another :class:`AuditSink` beside it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from vesalius.identity import Identity

AUDIT_LOGGER = "vesalius.audit"


@dataclass(frozen=True)
class AuditEvent:
    """One event: what happened (``event``, e.g. ``instance-stored``), to whom it was done by
    (``who``), how it ended (``outcome``), and its details (patient IDs, UIDs, counts)."""

    event: str
    who: Identity
    outcome: str = "success"
    details: dict[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> str:
        record = {
            "time": self.time.isoformat(),
            "event": self.event,
            "outcome": self.outcome,
            "who": str(self.who),
            **self.details,
        }
        return json.dumps(record, default=str)


class AuditSink(Protocol):
    """Somewhere audit events go; it must not raise (a failing sink is logged, not fatal)."""

    def write(self, event: AuditEvent) -> None: ...


class LogSink:
    """Audit events as JSON lines on the ``vesalius.audit`` logger, at INFO, whatever level the
    rest of the log runs at (the logger's own level is set here, and handlers of the root
    logger pass everything propagated to them)."""

    def __init__(self, name: str = AUDIT_LOGGER) -> None:
        self.logger = logging.getLogger(name)
        self.logger.setLevel(logging.INFO)

    def write(self, event: AuditEvent) -> None:
        self.logger.info(event.as_json())


class MemorySink:
    """Audit events kept in a list (tests, and the coming audit views before a table exists)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def write(self, event: AuditEvent) -> None:
        self.events.append(event)


class Auditor:
    """Records audit events to every sink; injected into each service by the wiring."""

    def __init__(self, sinks: Iterable[AuditSink] = ()) -> None:
        self.sinks = list(sinks) or [LogSink()]

    def record(self, event: str, who: Identity, outcome: str = "success", **details: Any) -> None:
        """Record one event: ``event`` (e.g. ``instance-stored``) by ``who``."""
        entry = AuditEvent(event, who, outcome, details)
        for sink in self.sinks:
            try:
                sink.write(entry)
            except Exception:  # an audit sink failing must not fail the operation audited
                logging.getLogger(__name__).exception("audit sink %r failed", sink)
