"""Known remote Application Entities: C-MOVE destinations, targets of ``vesalius send``, and
(with ``dicom.known_callers_only``) the only callers accepted.

They live in the index database (table ``peers``), so every node and the coming admin UI
share one list. The settings' ``[modalities]`` seed it at each start (:meth:`PeerDirectory.seed`):
those entries are inserted or updated, and the ones the settings no longer name are removed;
peers added otherwise (the admin UI, another node's API) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
from vesalius.settings import Modality

log = logging.getLogger(__name__)

#: What a peer seeded from the settings may do until the security work refines it.
DEFAULT_PERMISSIONS = frozenset({"echo", "store", "find", "move", "get"})


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
        )


class PeerDirectory:
    """The known remote AEs, by name and by AE title, from the index database."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def seed(self, modalities: Mapping[str, Modality] | Iterable[Modality]) -> None:
        """Make the peers from the settings exactly ``modalities`` (see the module's text)."""
        items = modalities.values() if isinstance(modalities, Mapping) else modalities
        seeded = [
            PeerRow(
                m.name,
                m.ae_title,
                m.host,
                m.port,
                DEFAULT_PERMISSIONS,
                "settings",
                m.tls,
                m.certificate_subject,
            )
            for m in items
        ]
        with self.catalog.write() as conn:
            saved, removed = sync_seeded(conn, seeded)
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

    def remove(self, name: str) -> bool:
        with self.catalog.write() as conn:
            return delete_peer(conn, name)
