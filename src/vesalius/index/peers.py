"""The peers table: known remote AEs, read and written in one place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from vesalius.index.schema import peers


@dataclass(frozen=True)
class PeerRow:
    """One known remote AE."""

    name: str
    ae_title: str
    host: str
    port: int
    permissions: frozenset[str]
    source: str = "admin"
    tls: bool = False
    certificate_subject: str = ""
    #: Its DICOMweb base URL (PS3.18), if it is reached that way too.
    dicomweb_url: str | None = None
    #: The login to its DICOMweb service: ``""``, ``basic`` or ``bearer``; the user name
    #: (basic); the password or token (never shown).
    dicomweb_auth: str = ""
    dicomweb_user: str = ""
    dicomweb_secret: str = field(default="", repr=False)


def _row(found: Sequence[Any]) -> PeerRow:
    name, ae, host, port, permissions, source, tls, subject, web, auth, user, secret = tuple(found)
    wanted = frozenset(p for p in str(permissions).split(",") if p)
    return PeerRow(
        str(name),
        str(ae),
        str(host),
        int(port),
        wanted,
        str(source),
        bool(tls),
        str(subject),
        None if web is None else str(web),
        str(auth or ""),
        str(user or ""),
        str(secret or ""),
    )


_COLUMNS = (
    peers.c.name,
    peers.c.ae_title,
    peers.c.host,
    peers.c.port,
    peers.c.permissions,
    peers.c.source,
    peers.c.tls,
    peers.c.certificate_subject,
    peers.c.dicomweb_url,
    peers.c.dicomweb_auth,
    peers.c.dicomweb_user,
    peers.c.dicomweb_secret,
)


def all_peers(conn: Connection) -> list[PeerRow]:
    return [_row(r) for r in conn.execute(select(*_COLUMNS).order_by(peers.c.name))]


def peer_by_ae(conn: Connection, ae_title: str) -> PeerRow | None:
    """The peer with this AE title (the first by name if several share it)."""
    query = select(*_COLUMNS).where(peers.c.ae_title == ae_title).order_by(peers.c.name)
    found = conn.execute(query.limit(1)).first()
    return None if found is None else _row(found)


def peer_by_certificate(conn: Connection, common_name: str) -> PeerRow | None:
    """The peer a client certificate with this subject Common Name names: the one whose
    ``certificate_subject`` it is, else the one of that name whose ``certificate_subject`` is
    empty."""
    query = select(*_COLUMNS).where(
        (peers.c.certificate_subject == common_name)
        | ((peers.c.certificate_subject == "") & (peers.c.name == common_name))
    )
    found = conn.execute(query.order_by(peers.c.certificate_subject.desc()).limit(1)).first()
    return None if found is None else _row(found)


def peer_by_name(conn: Connection, name: str) -> PeerRow | None:
    found = conn.execute(select(*_COLUMNS).where(peers.c.name == name)).first()
    return None if found is None else _row(found)


def _values(peer: PeerRow) -> dict[str, object]:
    return {
        "ae_title": peer.ae_title,
        "host": peer.host,
        "port": peer.port,
        "permissions": ",".join(sorted(peer.permissions)),
        "source": peer.source,
        "tls": peer.tls,
        "certificate_subject": peer.certificate_subject,
        "dicomweb_url": peer.dicomweb_url,
        "dicomweb_auth": peer.dicomweb_auth,
        "dicomweb_user": peer.dicomweb_user,
        "dicomweb_secret": peer.dicomweb_secret,
        "updated_at": datetime.now(UTC),
    }


def save_peer(conn: Connection, peer: PeerRow) -> None:
    """Insert ``peer``, or update the one of the same name."""
    changed = conn.execute(update(peers).where(peers.c.name == peer.name).values(_values(peer)))
    if not changed.rowcount:
        conn.execute(insert(peers).values(name=peer.name, **_values(peer)))


def delete_peer(conn: Connection, name: str) -> bool:
    return bool(conn.execute(delete(peers).where(peers.c.name == name)).rowcount)


def sync_seeded(conn: Connection, seeded: Iterable[PeerRow]) -> tuple[int, int]:
    """Make the peers that came from the settings (``source = 'settings'``) exactly
    ``seeded``: insert or update each, remove the ones the settings no longer name; peers an
    administrator added are left alone. Returns (saved, removed)."""
    wanted = {peer.name: peer for peer in seeded}
    for peer in wanted.values():
        save_peer(conn, peer)
    stale = conn.execute(
        select(peers.c.name).where(peers.c.source == "settings", peers.c.name.not_in(wanted))
    ).scalars()
    removed = [name for name in stale]
    for name in removed:
        delete_peer(conn, name)
    return len(wanted), len(removed)
