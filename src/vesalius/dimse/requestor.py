"""Opening associations as requestor (PS3.8 7.1.1), for C-MOVE sub-operations.

The same :class:`~vesalius.dimse.association.Association` as on the accepting side carries the
messages once the A-ASSOCIATE-AC is in: blocking I/O in the calling thread, no reactor.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

from pynetdicom.presentation import PresentationContext

from vesalius.dimse import negotiation, pdu
from vesalius.dimse.association import Association
from vesalius.dimse.pdu import ProtocolError
from vesalius.errors import PeerError


class AssociationRefused(PeerError):
    """The peer rejected (A-ASSOCIATE-RJ) or aborted our association request."""


def connect(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    contexts: Sequence[PresentationContext],
    max_pdu: int,
    acse_timeout: float | None,
    network_timeout: float | None,
    dimse_timeout: float | None,
    roles: Sequence[tuple[str, bool, bool]] = (),
) -> Association:
    """Connect, negotiate, and return the established association.

    Raises :class:`AssociationRefused` on rejection or abort and :class:`PeerError` when the
    peer cannot be reached or answers with something other than an association PDU.
    """
    try:
        sock = socket.create_connection((host, port), timeout=acse_timeout)
    except OSError as exc:
        raise PeerError(f"cannot connect to {called_ae} at {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(negotiation.request(calling_ae, called_ae, contexts, max_pdu, roles))
        sock.settimeout(acse_timeout)
        answer = pdu.read_pdu(sock, 0)
        if answer.kind == pdu.ASSOCIATE_RJ:
            body = answer.body
            reason = tuple(body[1:4]) if len(body) >= 4 else ()
            raise AssociationRefused(f"{called_ae} rejected the association {reason}")
        if answer.kind == pdu.ABORT:
            raise AssociationRefused(f"{called_ae} aborted the association request")
        if answer.kind != pdu.ASSOCIATE_AC:
            sock.sendall(pdu.abort(pdu.SOURCE_PROVIDER, pdu.REASON_UNEXPECTED_PDU))
            raise ProtocolError(f"{called_ae} answered with PDU type 0x{answer.kind:02X}")
        agreed = negotiation.accepted(answer.body, contexts, calling_ae)
    except (OSError, PeerError) as exc:
        with contextlib.suppress(OSError):
            sock.close()
        if isinstance(exc, PeerError):
            raise
        raise PeerError(f"association with {called_ae} failed: {exc}") from exc
    return Association(
        sock,
        agreed,
        max_pdu=max_pdu,
        network_timeout=network_timeout,
        dimse_timeout=dimse_timeout,
        peer_address=host,
    )
