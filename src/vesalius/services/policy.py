"""The authorization point of the archive: every service entry point starts with
``policy.check(who, action, resource)`` (DESIGN.md, "Services own who-may and who-did").

A refusal is :class:`~vesalius.errors.ForbiddenError`, which the protocol adapters answer as
DIMSE 0x0124 (Refused: Not Authorized, PS3.7 C.5.2.1) or HTTP 403. The policy in force today
allows everything; users, roles, per-peer permissions and per-study access labels (the security
issue) replace :class:`AllowAll` without touching the services or the adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from vesalius.identity import Identity
from vesalius.index.lookup import RetrieveKeys

#: What an identity asks to do. ``store``: add instances (C-STORE, STOW-RS, import); ``query``:
#: search the index (C-FIND, QIDO-RS); ``retrieve``: read stored instances, frames, renderings
#: or bulk data (C-MOVE, C-GET, WADO); ``read``: read metadata; ``delete``; ``send``: push to a
#: remote AE; ``admin``: configuration and peers.
Action = Literal["store", "query", "retrieve", "read", "delete", "send", "admin"]


@dataclass(frozen=True)
class Resource:
    """What an action is on: the whole archive (no UIDs), or the studies, series and instances
    named. A policy that grants per study (access labels) decides from these."""

    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()
    #: Anything else the policy may want: a destination AE title, a level, a patient ID.
    details: dict[str, str] = field(default_factory=dict)


#: The whole archive, as the resource of a search or of storing something new.
ARCHIVE = Resource()


class Policy(Protocol):
    """Decides whether ``who`` may do ``action`` on ``resource``; raises
    :class:`~vesalius.errors.ForbiddenError` when not."""

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None: ...


class AllowAll:
    """Everyone may do everything: the policy until authentication and permissions land."""

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        return None


def keys_resource(keys: RetrieveKeys) -> Resource:
    """The resource a retrieve or metadata request names."""
    details: dict[str, str] = {"level": keys.level}
    if keys.patient_id:
        details["patient_id"] = keys.patient_id
    return Resource(keys.study_uids, keys.series_uids, keys.sop_instance_uids, details)
