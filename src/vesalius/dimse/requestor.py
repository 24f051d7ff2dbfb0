"""Opening associations as requestor (PS3.8 7.1.1): for C-MOVE sub-operations and for the
``vesalius`` SCU commands.

The same :class:`~vesalius.dimse.association.Association` as on the accepting side carries the
messages once the A-ASSOCIATE-AC is in: blocking I/O in the calling thread, no reactor.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from vesalius.dimse import negotiation, pdu, transport
from vesalius.dimse.association import Association
from vesalius.dimse.contexts import PresentationContext
from vesalius.dimse.pdu import ProtocolError
from vesalius.errors import PeerError
from vesalius.tls import failure_reason

#: A-ASSOCIATE-RJ results, sources and reasons (PS3.8 Table 9-21), as people read them.
RESULTS = {1: "permanent", 2: "transient"}
SOURCES = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE)",
    3: "DICOM UL service-provider (presentation)",
}
REASONS = {
    (1, 1): "No reason given",
    (1, 2): "Application context name not supported",
    (1, 3): "Calling AE title not recognised",
    (1, 7): "Called AE title not recognised",
    (2, 1): "No reason given",
    (2, 2): "Protocol version not supported",
    (3, 1): "Temporary congestion",
    (3, 2): "Local limit exceeded",
}


class AssociationRefused(PeerError):
    """The peer rejected (A-ASSOCIATE-RJ) or aborted our association request."""


class Unreachable(PeerError):
    """The peer could not be reached (connection refused, no route, timed out)."""


class HandshakeFailed(PeerError):
    """The TLS handshake with the peer failed (PS3.15 B.9): its reason in words."""


def rejection(body: bytes | bytearray) -> str:
    """The reason of an A-ASSOCIATE-RJ body, in words: ``Called AE title not recognised
    (permanent, DICOM UL service-user)``."""
    if len(body) < 4:
        return "no reason given"
    result, source, reason = body[1], body[2], body[3]
    meaning = REASONS.get((source, reason), f"reason {reason}")
    return f"{meaning} ({RESULTS.get(result, result)}, {SOURCES.get(source, source)})"


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
    staging: Callable[[], tuple[int, Path]] | None = None,
    min_rate: int = 0,
    tls: ssl.SSLContext | None = None,
) -> Association:
    """Connect, negotiate, and return the established association; ``staging`` makes the
    association receive C-STORE data sets (C-GET sub-operations) into files it hands out;
    ``tls``: over TLS (PS3.15 B.9), the peer's certificate checked for ``host``.

    Raises :class:`Unreachable` when the peer cannot be reached, :class:`AssociationRefused`
    on rejection or abort, :class:`PeerError` for anything else it answers.
    """
    try:
        sock = transport.connect(host, port, acse_timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise Unreachable(f"cannot connect to {called_ae} at {host}:{port}: {reason}") from exc
    if tls is not None:
        sock = _secure(sock, tls, host, port, called_ae)
    try:
        sock.sendall(negotiation.request(calling_ae, called_ae, contexts, max_pdu, roles))
        sock.settimeout(acse_timeout)
        answer = pdu.read_pdu(sock, 0)
        if answer.kind == pdu.ASSOCIATE_RJ:
            raise AssociationRefused(
                f"{called_ae} rejected the association: {rejection(answer.body)}"
            )
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
        reason = failure_reason(exc) if isinstance(exc, ssl.SSLError) else str(exc)
        raise PeerError(f"association with {called_ae} failed: {reason}") from exc
    return Association(
        sock,
        agreed,
        max_pdu=max_pdu,
        network_timeout=network_timeout,
        dimse_timeout=dimse_timeout,
        peer_address=host,
        staging=staging,
        min_rate=min_rate,
    )


def _secure(
    sock: socket.socket, tls: ssl.SSLContext, host: str, port: int, called_ae: str
) -> socket.socket:
    """The TLS handshake on a new connection (within its connect timeout)."""
    try:
        wrapped = tls.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            sock.close()
        raise HandshakeFailed(
            f"TLS handshake with {called_ae} at {host}:{port} failed: {failure_reason(exc)}"
        ) from exc
    return wrapped
