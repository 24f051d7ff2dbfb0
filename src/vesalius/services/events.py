"""Events the services publish (DESIGN.md, "Events and jobs"): an instance stored or deleted,
instances transferred, a query run, metadata read. The audit trail subscribes to all of them
(``services/audit.py``); routing, compression, storage commitment and the change feed will
subscribe too. Delivery is in-process and synchronous, after the work it reports: a subscriber
that fails is logged and never fails the work."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vesalius.identity import Identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """What happened (``kind``, e.g. ``instance-stored``), who did it (``who``), how it ended
    (``outcome``), and its details (patient IDs, UIDs, counts)."""

    kind: str
    who: Identity
    outcome: str = "success"
    details: dict[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def event(self) -> str:
        """The event's name, as the audit trail calls it."""
        return self.kind

    def as_json(self) -> str:
        record = {
            "time": self.time.isoformat(),
            "event": self.kind,
            "outcome": self.outcome,
            "who": str(self.who),
            **self.details,
        }
        return json.dumps(record, default=str)


Subscriber = Callable[[Event], None]


class EventBus:
    """Hands each published event to every subscriber, in the order they subscribed."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # a subscriber must not fail the work it is told about
                log.exception("event subscriber %r failed on %s", subscriber, event.kind)
