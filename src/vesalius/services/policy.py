"""The authorization point of the archive: every service entry point starts with
``policy.check(who, action, resource)`` (DESIGN.md, "Services own who-may and who-did").

A refusal is :class:`~vesalius.errors.ForbiddenError`, which the protocol adapters answer as
DIMSE 0x0124 (Refused: Not Authorized, PS3.7 C.5.2.1) or HTTP 403. Two questions make a policy:
may ``who`` do ``action`` (users by their roles, :data:`ROLE_ACTIONS`; remote AEs by their
peer permissions), and which studies may ``who`` see at all (:meth:`Policy.visible_labels`:
per-study access labels, a filter the query engine puts into the one SQL statement a query
runs, so a study one may not see is absent, and answers "not found" on retrieve).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from vesalius.identity import Identity
from vesalius.index.lookup import RetrieveKeys

#: What an identity asks to do. ``echo``: verify (C-ECHO); ``store``: add instances (C-STORE,
#: STOW-RS, import); ``query``: search the index (C-FIND, QIDO-RS); ``retrieve``: read stored
#: instances, frames, renderings or bulk data (C-MOVE, C-GET, WADO); ``read``: read metadata;
#: ``delete``; ``send``: push to a remote AE; ``export``: de-identified export (PS3.15 Annex E);
#: ``audit``: read the audit trail; ``admin``: configuration, users, peers and labels;
#: ``associate``: open a DIMSE association at all (decided at A-ASSOCIATE-RQ time).
Action = Literal[
    "echo",
    "store",
    "query",
    "retrieve",
    "read",
    "delete",
    "send",
    "export",
    "audit",
    "admin",
    "associate",
]

#: The user roles and what each may do (issue 14: admin; radiologist, read; technologist,
#: upload and send; researcher, de-identified export; auditor, the audit trail only).
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {"echo", "store", "query", "retrieve", "read", "delete", "send", "export", "audit", "admin"}
    ),
    "radiologist": frozenset({"echo", "query", "retrieve", "read"}),
    "technologist": frozenset({"echo", "store", "query", "retrieve", "read", "send"}),
    "researcher": frozenset({"echo", "export"}),
    "auditor": frozenset({"audit"}),
}
ROLES = tuple(ROLE_ACTIONS)


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

    def visible_labels(self, who: Identity) -> frozenset[str] | None:
        """The access labels ``who`` was granted, or ``None`` when ``who`` sees every study
        (administrators, the system). A study with no label is visible to whoever may query;
        a study with labels only to identities granted at least one of them.

        The labels of a user are those granted to its name and to each of its groups; of a
        remote AE, those granted to the known peer of its AE title (an unknown AE: none, so
        it sees unlabeled studies only). ``services/site_policy.py`` answers from grants kept
        for ``labels.cache_seconds``, so an administrator's change applies within that."""
        ...


class AllowAll:
    """Everyone may do everything and see every study (tests, and the embedded laptop
    defaults before any user, permission or label is configured)."""

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        return None

    def visible_labels(self, who: Identity) -> frozenset[str] | None:
        return None


def keys_resource(keys: RetrieveKeys) -> Resource:
    """The resource a retrieve or metadata request names."""
    details: dict[str, str] = {"level": keys.level}
    if keys.patient_id:
        details["patient_id"] = keys.patient_id
    return Resource(keys.study_uids, keys.series_uids, keys.sop_instance_uids, details)
