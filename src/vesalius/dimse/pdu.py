"""PDU framing for the DICOM Upper Layer (PS3.8 9.3): reading whole PDUs off a blocking socket
and encoding the small fixed-format ones.

Association PDUs (A-ASSOCIATE-RQ/AC/RJ) carry nested items; those are decoded and encoded with
pynetdicom's PDU classes (:mod:`vesalius.dimse.negotiation`). Everything on the hot path —
P-DATA-TF, A-RELEASE, A-ABORT — is framed here with ``struct`` and ``recv_into``, so receiving a
fragment costs one or two system calls and no intermediate objects.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from vesalius.errors import PeerError

ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07
PDU_TYPES = frozenset(range(0x01, 0x08))

#: A-ABORT source (PS3.8 Table 9-26): 0 service user, 2 service provider.
SOURCE_USER = 0x00
SOURCE_PROVIDER = 0x02
#: A-ABORT provider reasons (PS3.8 Table 9-26).
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNIZED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_UNRECOGNIZED_PARAMETER = 0x04
REASON_INVALID_PARAMETER = 0x06

_HEADER = struct.Struct(">BxL")
_PDV = struct.Struct(">LBB")
#: Largest association PDU accepted before negotiation (a real A-ASSOCIATE-RQ is a few KiB;
#: 128 contexts with many syntaxes and user identity stay far below this).
MAX_ASSOCIATE_PDU = 1 << 20


class ConnectionClosed(PeerError):
    """The peer closed the TCP connection (PS3.8 Evt17)."""


class ProtocolError(PeerError):
    """The peer sent something the Upper Layer cannot accept; ``reason`` goes in the A-ABORT."""

    def __init__(self, message: str, reason: int = REASON_UNEXPECTED_PDU) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Pdu:
    """One received PDU: its type and its body (everything after the 6-byte header)."""

    kind: int
    body: bytearray


def recv_exact(sock: socket.socket, size: int) -> bytearray:
    """Read exactly ``size`` bytes; :class:`ConnectionClosed` if the peer closes first.

    A timeout on the socket applies to each wait: Python's (``TimeoutError`` propagates) or
    the kernel's ``SO_RCVTIMEO`` on a blocking socket (``BlockingIOError`` propagates).
    """
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ConnectionClosed("connection closed by the peer")
        got += n
    return buffer


def read_pdu(sock: socket.socket, max_length: int) -> Pdu:
    """Read one PDU; a type outside PS3.8 Table 9-1 or a P-DATA-TF longer than ``max_length``
    (the Maximum Length we announced, 0 = any) is a :class:`ProtocolError`."""
    kind, length = _HEADER.unpack(recv_exact(sock, 6))
    if kind not in PDU_TYPES:
        raise ProtocolError(f"unknown PDU type 0x{kind:02X}", REASON_UNRECOGNIZED_PDU)
    if kind == P_DATA_TF:
        if max_length and length > max_length + 6:  # PDV headers on top of the PDV payload
            raise ProtocolError(f"P-DATA-TF of {length} bytes exceeds our maximum {max_length}")
    elif length > MAX_ASSOCIATE_PDU:
        raise ProtocolError(f"PDU type 0x{kind:02X} of {length} bytes", REASON_INVALID_PARAMETER)
    return Pdu(kind, recv_exact(sock, length))


def pdvs(body: bytearray) -> Iterator[tuple[int, int, memoryview]]:
    """The Presentation Data Value items of a P-DATA-TF body: ``(context id, message control
    header, fragment)`` (PS3.8 9.3.5.1, E.2). The fragment is a view into ``body``."""
    view = memoryview(body)
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 6:
            raise ProtocolError("truncated PDV item", REASON_INVALID_PARAMETER)
        length, context_id, control = _PDV.unpack_from(body, pos)
        if length < 2 or pos + 4 + length > end:
            raise ProtocolError("PDV item length out of range", REASON_INVALID_PARAMETER)
        yield context_id, control, view[pos + 6 : pos + 4 + length]
        pos += 4 + length


def pdata_header(context_id: int, control: int, fragment_length: int) -> bytes:
    """The 12 bytes before a single-PDV P-DATA-TF's fragment (PDU header + PDV header)."""
    return _HEADER.pack(P_DATA_TF, fragment_length + 6) + _PDV.pack(
        fragment_length + 2, context_id, control
    )


def release_rq() -> bytes:
    return _HEADER.pack(RELEASE_RQ, 4) + b"\0\0\0\0"


def release_rp() -> bytes:
    return _HEADER.pack(RELEASE_RP, 4) + b"\0\0\0\0"


def abort(source: int, reason: int = REASON_NOT_SPECIFIED) -> bytes:
    """A-ABORT (PS3.8 9.3.8); the reason is only meaningful for the provider source."""
    return _HEADER.pack(ABORT, 4) + bytes((0, 0, source, reason if source == 2 else 0))


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent / 2 transient, source 1-3, reason."""
    return _HEADER.pack(ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))
