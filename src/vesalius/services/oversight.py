"""What every service answers to: the policy that decides who may, and the auditor that
records who did (DESIGN.md, "Services own who-may and who-did"). The wiring builds one and
hands it to each service; no adapter can skip either, since both run inside the services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vesalius.identity import Identity
from vesalius.services.audit import Auditor
from vesalius.services.policy import ARCHIVE, Action, AllowAll, Policy, Resource


@dataclass(frozen=True)
class Oversight:
    """The authorization point and the audit trail of one archive."""

    policy: Policy = field(default_factory=AllowAll)
    auditor: Auditor = field(default_factory=Auditor)

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        """Raise :class:`~vesalius.errors.ForbiddenError` unless ``who`` may do ``action``."""
        self.policy.check(who, action, resource)

    def record(self, event: str, who: Identity, outcome: str = "success", **details: Any) -> None:
        """Write one audit event (never silenced by the log level)."""
        self.auditor.record(event, who, outcome, **details)
