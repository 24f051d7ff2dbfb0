"""Known remote Application Entities: C-MOVE destinations, targets of ``vesalius send``, and
(with ``dicom.known_callers_only``) the only callers accepted.

They live in the index database (table ``peers``), so every node and the coming admin UI
share one list. The settings' ``[modalities]`` seed it at each start (:meth:`PeerDirectory.seed`):
those entries are inserted or updated, and the ones the settings no longer name are removed;
peers added otherwise (the admin UI, another node's API) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from vesalius.errors import ConfigError, NotFoundError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.peers import (
    PeerRow,
    all_peers,
    delete_peer,
    peer_by_ae,
    peer_by_certificate,
    peer_by_name,
    save_peer,
    sync_seeded,
)
from vesalius.services.oversight import Oversight
from vesalius.settings import Modality

log = logging.getLogger(__name__)

#: What a known peer may do unless its entry says otherwise (docs/security.md, "Remote AEs").
DEFAULT_PERMISSIONS = frozenset({"echo", "store", "find", "move", "get"})


def check_dicomweb_url(url: str) -> str | None:
    """``url`` as a peer's DICOMweb base URL (PS3.18 8.2: an absolute http or https URL,
    without query or fragment; the trailing ``/`` dropped), ``None`` for an empty one."""
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"DICOMweb URL {url!r}: give an absolute http:// or https:// URL")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise ConfigError(f"DICOMweb URL {url!r}: no query, fragment or spaces")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"DICOMweb URL {url!r}: its port is not a port number") from None
    return url.rstrip("/")


@dataclass(frozen=True)
class Peer:
    """A known remote AE and what it may do."""

    name: str
    ae_title: str
    host: str
    port: int
    permissions: frozenset[str] = DEFAULT_PERMISSIONS
    source: str = "admin"
    #: Called over TLS; the client certificate Common Name naming it (empty: ``name``).
    tls: bool = False
    certificate_subject: str = ""
    #: Its DICOMweb base URL (PS3.18), if it is reached that way too.
    dicomweb_url: str | None = None

    @classmethod
    def of(cls, row: PeerRow) -> Peer:
        return cls(
            row.name,
            row.ae_title,
            row.host,
            row.port,
            row.permissions,
            row.source,
            row.tls,
            row.certificate_subject,
            row.dicomweb_url,
        )

    def row(self) -> PeerRow:
        return PeerRow(
            self.name,
            self.ae_title,
            self.host,
            self.port,
            self.permissions,
            self.source,
            self.tls,
            self.certificate_subject,
            self.dicomweb_url,
        )


class PeerDirectory:
    """The known remote AEs, by name and by AE title, from the index database."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        oversight: Oversight | None = None,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.catalog = catalog
        #: The authorization point for administering peers (:meth:`configure`, :meth:`drop`).
        self.oversight = oversight or Oversight()
        #: Called after this process changed a peer (the policy's cache forgets its copy).
        self.changed = changed

    def configure(
        self,
        name: str,
        who: Identity,
        *,
        address: str | None = None,
        permissions: frozenset[str] | None = None,
        host: str | None = None,
        dicomweb_url: str | None = None,
    ) -> Peer:
        """Add a peer (``address``: ``AET@HOST:PORT``) or change one an administrator added:
        its address, its permissions, its host, its DICOMweb URL (``""`` removes it). Peers
        from the settings' ``[modalities]`` are changed there (the next start or reload would
        undo a change here)."""
        self.oversight.check(who, "admin")
        current = self.by_name(name)
        if current is not None and current.source == "settings":
            raise ConfigError(
                f"peer {name} comes from the settings ([modalities.{name}] or "
                f"VESALIUS_MODALITY_{name}): change it there"
            )
        if address is not None:
            parsed = Modality.parse(address, name)
            base = Peer(name, parsed.ae_title, parsed.host, parsed.port)
            if current is not None:
                base = replace(base, permissions=current.permissions)
        elif current is None:
            raise NotFoundError(f"no peer named {name!r}: give its AET@HOST:PORT to add it")
        else:
            base = current
        peer = replace(
            base,
            permissions=base.permissions if permissions is None else permissions,
            host=base.host if host is None else host,
            source="admin",
            dicomweb_url=(
                base.dicomweb_url if dicomweb_url is None else check_dicomweb_url(dicomweb_url)
            ),
        )
        self.save(peer)
        self.oversight.record(
            "peer-changed",
            who,
            peer=name,
            ae_title=peer.ae_title,
            host=peer.host,
            permissions=sorted(peer.permissions),
            dicomweb_url=peer.dicomweb_url,
        )
        return peer

    def drop(self, name: str, who: Identity) -> bool:
        """Remove a peer an administrator added."""
        self.oversight.check(who, "admin")
        current = self.by_name(name)
        if current is not None and current.source == "settings":
            raise ConfigError(f"peer {name} comes from the settings: remove it there")
        removed = self.remove(name)
        self.oversight.record("peer-removed", who, peer=name, removed=removed)
        return removed

    def seed(self, modalities: Mapping[str, Modality] | Iterable[Modality]) -> None:
        """Make the peers from the settings exactly ``modalities`` (see the module's text)."""
        items = modalities.values() if isinstance(modalities, Mapping) else modalities
        seeded = [
            PeerRow(
                m.name,
                m.ae_title,
                m.host,
                m.port,
                DEFAULT_PERMISSIONS if m.permissions is None else m.permissions,
                "settings",
                m.tls,
                m.certificate_subject,
            )
            for m in items
        ]
        with self.catalog.write() as conn:
            saved, removed = sync_seeded(conn, seeded)
        self.changed()
        if saved or removed:
            log.info("peers: %d from the settings, %d no longer there removed", saved, removed)

    def all(self) -> list[Peer]:
        with self.catalog.read() as conn:
            return [Peer.of(row) for row in all_peers(conn)]

    def by_ae(self, ae_title: str) -> Peer | None:
        """The known peer with this AE title, if any."""
        with self.catalog.read() as conn:
            found = peer_by_ae(conn, ae_title)
        return None if found is None else Peer.of(found)

    def by_certificate(self, common_name: str) -> Peer | None:
        """The peer a client certificate names (mutual TLS): by ``certificate_subject``, or
        by name for a peer without one."""
        with self.catalog.read() as conn:
            found = peer_by_certificate(conn, common_name)
        return None if found is None else Peer.of(found)

    def by_name(self, name: str) -> Peer | None:
        with self.catalog.read() as conn:
            found = peer_by_name(conn, name)
        return None if found is None else Peer.of(found)

    def save(self, peer: Peer) -> None:
        with self.catalog.write() as conn:
            save_peer(conn, peer.row())
        self.changed()

    def remove(self, name: str) -> bool:
        with self.catalog.write() as conn:
            removed = delete_peer(conn, name)
        self.changed()
        return removed
