"""What every service answers to: the policy that decides who may, and the events that say who
did (DESIGN.md, "Services own who-may and who-did"). The wiring builds one, subscribes the
audit trail to its events, and hands it to each service; no adapter can skip either, since
both run inside the services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vesalius.errors import ForbiddenError
from vesalius.identity import Identity
from vesalius.services.audit import Auditor
from vesalius.services.events import Event, EventBus
from vesalius.services.policy import ARCHIVE, Action, AllowAll, Policy, Resource


def _audited_bus() -> EventBus:
    bus = EventBus()
    bus.subscribe(Auditor())
    return bus


@dataclass(frozen=True)
class Oversight:
    """The authorization point and the event bus (the audit trail among its subscribers)."""

    policy: Policy = field(default_factory=AllowAll)
    events: EventBus = field(default_factory=_audited_bus)

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        """Raise :class:`~vesalius.errors.ForbiddenError` unless ``who`` may do ``action``;
        a refusal is audited (``access-refused``: a Security Alert, PS3.15 A.5.3.11)."""
        try:
            self.policy.check(who, action, resource)
        except ForbiddenError as exc:
            self.record(
                "access-refused",
                who,
                "refused",
                action=action,
                resource=_describe(resource),
                study_uids=list(resource.study_uids),
                reason=exc.message,
            )
            raise

    def visible_labels(self, who: Identity) -> frozenset[str] | None:
        """The access labels ``who`` may see studies of (``None``: every study); the query
        engine filters by them in the same SQL statement."""
        return self.policy.visible_labels(who)

    def record(self, event: str, who: Identity, outcome: str = "success", **details: Any) -> None:
        """Publish what happened; the audit trail records it whatever the log level."""
        self.events.publish(Event(event, who, outcome, details))


def _describe(resource: Resource) -> str:
    """What a refused request was for, in a few words (its UIDs are in the record)."""
    for level, uids in (
        ("instances", resource.sop_instance_uids),
        ("series", resource.series_uids),
        ("studies", resource.study_uids),
    ):
        if uids:
            return f"{len(uids)} {level}"
    return "archive"
