"""Per-study access labels: what an administrator does with them (label a study, grant a label
to a user, a group or a peer, state rules that label studies at ingest), and what the policy
and ingest read of them, kept briefly in memory (docs/security.md, "Per-study access labels").

The policy (``services/site_policy.py``) asks :class:`AccessCache` for the grants and the known
peers on every request; the cache reads them from the index at most every
``labels.cache_seconds`` (default 5), so an administrator's change, made by any process (the
CLI, another node, the coming REST API), applies within that time; a change made through this
process's :class:`LabelService` applies at once.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword

from vesalius.dicom.header import InstanceHeader
from vesalius.dicom.metadata import decode
from vesalius.errors import NotFoundError, QueryError
from vesalius.identity import Identity
from vesalius.index import labels as table
from vesalius.index.catalog import Catalog
from vesalius.index.peers import all_peers
from vesalius.index.queries import ATTRIBUTES
from vesalius.services.oversight import Oversight
from vesalius.services.peers import Peer

__all__ = ["AccessCache", "AccessSnapshot", "Grant", "LabelService", "Rule"]

log = logging.getLogger(__name__)

Grant = table.Grant
Rule = table.Rule

#: The pseudo keyword of a rule on the calling AE title (C-STORE); the others are DICOM keywords.
CALLING_AE = "CallingAETitle"
#: What a label may be: short, printable, no separators a list would need.
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def check_label(label: str) -> str:
    """``label`` if it is a valid label name, else :class:`QueryError` saying what is."""
    if not _LABEL_RE.match(label):
        raise QueryError(
            f"label {label!r}: 1 to 64 letters, digits, '_', '.', ':' or '-', starting with a "
            "letter or digit"
        )
    return label


@dataclass
class AccessSnapshot:
    """The grants, rules and known peers, as read at ``taken`` (a monotonic time)."""

    taken: float
    #: (grantee kind, grantee) -> labels.
    grants: dict[tuple[str, str], frozenset[str]]
    rules: tuple[Rule, ...]
    #: AE title -> the known peer with it (the first by name, as ``peers.by_ae``).
    peers: dict[str, Peer]
    #: Peer host -> its addresses (resolved on first use, kept as long as the snapshot).
    addresses: dict[str, frozenset[str]] = field(default_factory=dict)

    def labels_of(self, kind: str, name: str) -> frozenset[str]:
        return self.grants.get((kind, name), frozenset())

    def host_addresses(self, host: str) -> frozenset[str]:
        """The IP addresses of ``host`` (itself if it is one; none if it does not resolve)."""
        found = self.addresses.get(host)
        if found is None:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
                found = frozenset(str(info[4][0]) for info in infos)
            except (OSError, UnicodeError):
                found = frozenset()
            self.addresses[host] = found
        return found


class AccessCache:
    """The current :class:`AccessSnapshot`, read again once older than ``ttl`` seconds."""

    def __init__(self, catalog: Catalog, ttl: float = 5.0) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self._snapshot: AccessSnapshot | None = None
        self._lock = threading.Lock()

    def current(self) -> AccessSnapshot:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot.taken < self.ttl:
            return snapshot
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or time.monotonic() - snapshot.taken >= self.ttl:
                snapshot = self._snapshot = self._read()
        return snapshot

    def invalidate(self) -> None:
        """Forget the snapshot: the next request reads the index again."""
        self._snapshot = None

    def _read(self) -> AccessSnapshot:
        taken = time.monotonic()
        with self.catalog.read() as conn:
            grants = table.all_grants(conn)
            rules = table.all_rules(conn)
            peers = all_peers(conn)
        granted: dict[tuple[str, str], set[str]] = {}
        for grant in grants:
            granted.setdefault((grant.kind, grant.grantee), set()).add(grant.label)
        by_ae: dict[str, Peer] = {}
        for row in peers:  # ordered by name: the first of an AE title wins
            by_ae.setdefault(row.ae_title, Peer.of(row))
        return AccessSnapshot(
            taken,
            {key: frozenset(found) for key, found in granted.items()},
            tuple(rules),
            by_ae,
        )


def _header_value(header: InstanceHeader, keyword: str) -> list[str] | None:
    """The value of ``keyword`` from the indexed attributes (None: not indexed)."""
    attribute = ATTRIBUTES.get(keyword)
    if attribute is None or not hasattr(header, attribute.column.name):
        return None
    value = getattr(header, attribute.column.name)
    if value is None:
        return []
    return [v for v in str(value).split("\\")]


def _json_values(document: dict[str, Any], keyword: str) -> list[str]:
    """The values of ``keyword`` in an instance's DICOM JSON (PS3.18 F.2)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return []
    element = document.get(f"{tag:08X}")
    if not isinstance(element, dict):
        return []
    found = []
    for value in element.get("Value", ()):
        if isinstance(value, dict):  # a person name's groups
            value = value.get("Alphabetic", "")
        if isinstance(value, str | int | float):
            found.append(str(value))
    return found


class _Attributes:
    """The attribute values of one arriving instance, read as the rules ask for them."""

    def __init__(self, header: InstanceHeader, metadata: bytes, who: Identity) -> None:
        self.header = header
        self.metadata = metadata
        self.who = who
        self._document: dict[str, Any] | None = None

    def values(self, keyword: str) -> list[str]:
        if keyword == CALLING_AE:
            return [self.who.name] if self.who.kind == "ae" else []
        indexed = _header_value(self.header, keyword)
        if indexed is not None:
            return indexed
        if self._document is None:
            try:
                parsed = json.loads(decode(self.metadata)) if self.metadata else {}
            except ValueError:
                parsed = {}
            self._document = parsed if isinstance(parsed, dict) else {}
        return _json_values(self._document, keyword)


def _matches(rule: Rule, attributes: _Attributes) -> bool:
    return any(
        fnmatch.fnmatchcase(value.strip(), rule.pattern)
        for value in attributes.values(rule.keyword)
    )


class LabelService:
    """Labels on studies, grants of labels, and the rules that label studies at ingest."""

    def __init__(self, catalog: Catalog, cache: AccessCache, *, oversight: Oversight) -> None:
        self.catalog = catalog
        self.cache = cache
        self.oversight = oversight

    # -- at ingest ---------------------------------------------------------------------

    def labels_for(self, header: InstanceHeader, metadata: bytes, who: Identity) -> frozenset[str]:
        """The labels the rules give the study of an arriving instance (stored with it, in
        the same transaction)."""
        rules = self.cache.current().rules
        if not rules:
            return frozenset()
        attributes = _Attributes(header, metadata, who)
        return frozenset(rule.label for rule in rules if _matches(rule, attributes))

    def labeler(self) -> Callable[[InstanceHeader, bytes, Identity], frozenset[str]]:
        return self.labels_for

    # -- studies -----------------------------------------------------------------------

    def add(self, study_uid: str, labels: Iterable[str], who: Identity) -> int:
        """Label a stored study; the number of labels it did not have yet."""
        wanted = [check_label(label) for label in labels]
        self.oversight.check(who, "admin")
        with self.catalog.write() as conn:
            added = table.add_labels(conn, study_uid, wanted)
        if added is None:
            raise NotFoundError(f"no study {study_uid} is stored")
        self.oversight.record("labels-changed", who, study_uid=study_uid, added=sorted(wanted))
        return added

    def remove(self, study_uid: str, labels: Iterable[str], who: Identity) -> int:
        """Take labels off a stored study; the number it had."""
        wanted = list(labels)
        self.oversight.check(who, "admin")
        with self.catalog.write() as conn:
            removed = table.remove_labels(conn, study_uid, wanted)
        if removed is None:
            raise NotFoundError(f"no study {study_uid} is stored")
        self.oversight.record("labels-changed", who, study_uid=study_uid, removed=sorted(wanted))
        return removed

    def of_studies(self, who: Identity, study_uid: str | None = None) -> list[tuple[str, str]]:
        """(study UID, label) pairs, of one study or of every labeled study."""
        self.oversight.check(who, "admin")
        with self.catalog.read() as conn:
            return table.study_label_list(conn, study_uid)

    def in_use(self, who: Identity) -> list[tuple[str, int]]:
        """Every label on a study, and on how many."""
        self.oversight.check(who, "admin")
        with self.catalog.read() as conn:
            return table.label_counts(conn)

    # -- grants ------------------------------------------------------------------------

    def grant(self, grant: Grant, who: Identity) -> bool:
        """Grant a label to a user, a group or a known peer (by its name); False if it was."""
        self._check_grant(grant)
        self.oversight.check(who, "admin")
        with self.catalog.write() as conn:
            if grant.kind == "peer":
                known = {row.name for row in all_peers(conn)}
                if grant.grantee not in known:
                    raise NotFoundError(f"no peer named {grant.grantee!r} (vesalius peer list)")
            added = table.add_grant(conn, grant)
        self.cache.invalidate()
        self.oversight.record(
            "label-granted", who, label=grant.label, grantee_kind=grant.kind, grantee=grant.grantee
        )
        return added

    def revoke(self, grant: Grant, who: Identity) -> bool:
        """Revoke a grant; False if there was none."""
        self._check_grant(grant)
        self.oversight.check(who, "admin")
        with self.catalog.write() as conn:
            removed = table.remove_grant(conn, grant)
        self.cache.invalidate()
        self.oversight.record(
            "label-revoked", who, label=grant.label, grantee_kind=grant.kind, grantee=grant.grantee
        )
        return removed

    def grants(self, who: Identity) -> list[Grant]:
        self.oversight.check(who, "admin")
        with self.catalog.read() as conn:
            return table.all_grants(conn)

    @staticmethod
    def _check_grant(grant: Grant) -> None:
        check_label(grant.label)
        if grant.kind not in table.GRANTEE_KINDS:
            raise QueryError(f"grant to a user, a group or a peer, not a {grant.kind!r}")
        if not grant.grantee.strip():
            raise QueryError(f"name the {grant.kind} to grant {grant.label!r} to")

    # -- rules -------------------------------------------------------------------------

    def add_rule(self, label: str, keyword: str, pattern: str, who: Identity) -> int:
        """Label every study that receives an instance whose ``keyword`` (a DICOM keyword, or
        ``CallingAETitle``) matches ``pattern`` (``*`` and ``?`` wildcards); the rule's number.
        Studies stored before are not relabeled."""
        check_label(label)
        if keyword != CALLING_AE and tag_for_keyword(keyword) is None:
            raise QueryError(f"{keyword!r} is not a DICOM keyword (nor {CALLING_AE})")
        if not pattern:
            raise QueryError("a rule needs a value to match (use * for any)")
        self.oversight.check(who, "admin")
        with self.catalog.write() as conn:
            pk = table.add_rule(conn, label, keyword, pattern)
        self.cache.invalidate()
        self.oversight.record("label-rule-added", who, rule=pk, label=label, keyword=keyword)
        return pk

    def remove_rule(self, pk: int, who: Identity) -> bool:
        self.oversight.check(who, "admin")
        with self.catalog.write() as conn:
            removed = table.remove_rule(conn, pk)
        self.cache.invalidate()
        self.oversight.record("label-rule-removed", who, rule=pk)
        return removed

    def rules(self, who: Identity) -> list[Rule]:
        self.oversight.check(who, "admin")
        with self.catalog.read() as conn:
            return table.all_rules(conn)
