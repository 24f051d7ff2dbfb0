"""A policy by user roles alone (:data:`~vesalius.services.policy.ROLE_ACTIONS`): what the
accounts work needs to answer 403 until the site policy (peer permissions, access labels)
replaces it. The wiring installs it when authentication is on (``wiring.assemble``); remote AEs
and the system are allowed everything here, as by :class:`~vesalius.services.policy.AllowAll`.
"""

from __future__ import annotations

from vesalius.errors import ForbiddenError
from vesalius.identity import Identity
from vesalius.services.policy import ARCHIVE, ROLE_ACTIONS, Action, Resource


class RolePolicy:
    """A user may do what one of its roles allows; every other identity may do everything."""

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        if who.kind != "user":
            return
        if any(action in ROLE_ACTIONS.get(role, ()) for role in who.roles):
            return
        roles = ", ".join(sorted(who.roles)) or "none"
        raise ForbiddenError(f"{who.name} (roles: {roles}) may not {action}")

    def visible_labels(self, who: Identity) -> frozenset[str] | None:
        return None
