"""The site's policy (``services/policy.py``'s :class:`Policy`): who may do what, and which
studies each identity sees (docs/security.md, "Remote AEs" and "Per-study access labels").

- The system (the server itself) may do everything and sees every study.
- A user may do the actions of its roles (:data:`ROLE_ACTIONS`); an administrator sees every
  study, any other user the studies without a label and those with a label granted to its
  name or one of its groups.
- A remote AE (a DIMSE caller) may do what its peer entry permits (``peers.permissions``:
  echo, store, find, move, get, commitment, worklist), or, when its AE title is no known peer,
  ``dicom.unknown_caller_permissions`` (echo and store by default: any modality may send; only
  known AEs may query and retrieve). It sees the studies without a label and those with a
  label granted to its peer. With ``dicom.known_callers_only`` (or no permission at all for
  unknown callers) an unknown AE title is rejected at association; with
  ``dicom.check_caller_host`` so is a known one calling from another address than its host's
  (unless a verified TLS client certificate named it: mutual TLS).

Refusals are :class:`ForbiddenError` (DIMSE 0x0124, HTTP 403; at association time an
A-ASSOCIATE-RJ, calling AE title not recognized) whose message says why; the adapters log it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from vesalius.errors import ForbiddenError
from vesalius.identity import Identity
from vesalius.services.labels import AccessCache, AccessSnapshot
from vesalius.services.policy import ARCHIVE, ROLE_ACTIONS, Action, Resource

#: The peer permission each DIMSE action needs (retrieve: by the operation, see
#: :func:`_permission`).
AE_PERMISSIONS: dict[str, str] = {"echo": "echo", "store": "store", "query": "find"}


@dataclass(frozen=True)
class CallerRules:
    """How remote AEs are treated (``dicom.*``)."""

    unknown_permissions: frozenset[str] = frozenset({"echo", "store"})
    known_callers_only: bool = False
    check_host: bool = False


def _permission(action: Action, resource: Resource) -> str | None:
    """The peer permission ``action`` needs; None: no AE may do it."""
    if action == "retrieve":
        operation = resource.details.get("operation", "")
        return "get" if operation == "C-GET" else "move"
    return AE_PERMISSIONS.get(action)


def _same_address(address: str, addresses: Iterable[str]) -> bool:
    try:
        caller = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(caller, ipaddress.IPv6Address) and caller.ipv4_mapped is not None:
        caller = caller.ipv4_mapped
    for known in addresses:
        try:
            if ipaddress.ip_address(known.split("%")[0]) == caller:
                return True
        except ValueError:
            continue
    return False


class SitePolicy:
    """Roles for users, peer permissions for remote AEs, access labels for both."""

    def __init__(
        self,
        cache: AccessCache,
        callers: CallerRules | None = None,
        *,
        anonymous_roles: frozenset[str] = frozenset(),
    ) -> None:
        """``anonymous_roles``: the roles of a user identity that no authentication
        established (``method == "none"``) and that carries no roles of its own: the laptop
        defaults, where nothing asks who one is, give it ``admin``."""
        self.cache = cache
        self.callers = callers or CallerRules()
        self.anonymous_roles = anonymous_roles

    # -- Policy ------------------------------------------------------------------------

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        if who.kind == "system":
            return
        if who.kind == "user":
            roles = self._roles(who)
            if not any(action in ROLE_ACTIONS.get(role, ()) for role in roles):
                held = ", ".join(sorted(roles)) or "none"
                raise ForbiddenError(f"{who} may not {action} (roles: {held})")
            return
        self._check_ae(who, action, resource)

    def visible_labels(self, who: Identity) -> frozenset[str] | None:
        if who.kind == "system":
            return None
        snapshot = self.cache.current()
        if who.kind == "user":
            if "admin" in self._roles(who):
                return None
            found = set(snapshot.labels_of("user", who.name))
            for group in who.groups:
                found.update(snapshot.labels_of("group", group))
            return frozenset(found)
        peer = snapshot.peers.get(who.name)
        return frozenset() if peer is None else snapshot.labels_of("peer", peer.name)

    # -- users -------------------------------------------------------------------------

    def _roles(self, who: Identity) -> frozenset[str]:
        if not who.roles and who.method == "none":
            return self.anonymous_roles
        return who.roles

    # -- remote AEs --------------------------------------------------------------------

    def _check_ae(self, who: Identity, action: Action, resource: Resource) -> None:
        snapshot = self.cache.current()
        peer = snapshot.peers.get(who.name)
        if action == "associate":
            refusal = self._admission(who, snapshot)
            if refusal:
                raise ForbiddenError(refusal)
            return
        if peer is not None and self.callers.check_host:
            refusal = self._wrong_host(who, snapshot)
            if refusal:
                raise ForbiddenError(refusal)
        needed = _permission(action, resource)
        permitted = self.callers.unknown_permissions if peer is None else peer.permissions
        if needed is None or needed not in permitted:
            known = f"known peer {peer.name}" if peer is not None else "an unknown AE title"
            what = needed or action
            raise ForbiddenError(
                f"calling AE {who.name!r} ({known}) has no {what} permission"
                + (" (only known peers may)" if peer is None else "")
            )

    def _admission(self, who: Identity, snapshot: AccessSnapshot) -> str:
        """Why an association from ``who`` is rejected outright ("" when it is not)."""
        peer = snapshot.peers.get(who.name)
        if peer is None:
            if self.callers.known_callers_only:
                return f"calling AE title {who.name!r} is not a known peer (known_callers_only)"
            if not self.callers.unknown_permissions:
                return (
                    f"calling AE title {who.name!r} is not a known peer and unknown callers "
                    "have no permission (dicom.unknown_caller_permissions)"
                )
            return ""
        if self.callers.check_host:
            return self._wrong_host(who, snapshot)
        return ""

    @staticmethod
    def _wrong_host(who: Identity, snapshot: AccessSnapshot) -> str:
        peer = snapshot.peers.get(who.name)
        if peer is None or who.method == "certificate":
            return ""  # a TLS client certificate names the peer better than its address does
        if _same_address(who.host, snapshot.host_addresses(peer.host)):
            return ""
        return (
            f"calling AE title {who.name!r} (peer {peer.name}) called from {who.host}, not from "
            f"its host {peer.host} (check_caller_host)"
        )
