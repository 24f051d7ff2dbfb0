"""PDU framing for the DICOM Upper Layer (PS3.8 9.3): reading whole PDUs off a blocking socket
and encoding the small fixed-format ones.

Association PDUs (A-ASSOCIATE-RQ/AC/RJ) carry nested items; those are decoded and encoded in
:mod:`vesalius.dimse.associate_pdu`. Everything on the hot path (P-DATA-TF, A-RELEASE,
A-ABORT) is framed here with ``struct`` and ``recv_into``, so receiving a fragment costs one
or two system calls and no intermediate objects.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from time import monotonic

from vesalius.dimse.transport import Transport, set_timeout
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


#: A P-DATA-TF body up to this long (it is at most ``dicom.max_pdu``, 256 KiB by default) is
#: allocated whole once its header is in: only established associations, whose number is
#: capped, send them. Longer ones, and association PDUs (up to 1 MiB, from any connection),
#: start at :data:`FIRST_BUFFER` bytes or what has arrived, and double as bytes arrive.
MAX_UPFRONT = 1 << 20
FIRST_BUFFER = 64 << 10
#: A kernel receive timeout up to this many seconds longer than the time left is left as it is
#: (changing it costs a system call): a deadline is kept to within this.
TIMER_SLACK = 1.0


def recv_exact(sock: Transport, size: int) -> bytearray:
    """Read exactly ``size`` bytes; :class:`ConnectionClosed` if the peer closes first.

    The buffer starts at :data:`FIRST_BUFFER` bytes and doubles as bytes arrive, so a peer
    that announces a large PDU and sends nothing costs little. A timeout on the socket applies
    to each wait: Python's (``TimeoutError`` propagates) or the kernel's ``SO_RCVTIMEO`` on a
    blocking socket (``BlockingIOError`` propagates).
    """

    buffer = bytearray(min(size, FIRST_BUFFER))
    got = 0
    while got < size:
        if got == len(buffer):
            buffer += bytes(min(len(buffer), size - len(buffer)))
        with memoryview(buffer) as view:
            n = sock.recv_into(view[got:size])
        if n == 0:
            raise ConnectionClosed("connection closed by the peer")
        got += n
    return buffer


def _check_header(kind: int, length: int, max_length: int) -> None:
    if kind not in PDU_TYPES:
        raise ProtocolError(f"unknown PDU type 0x{kind:02X}", REASON_UNRECOGNIZED_PDU)
    if kind == P_DATA_TF:
        if max_length and length > max_length + 6:  # PDV headers on top of the PDV payload
            raise ProtocolError(f"P-DATA-TF of {length} bytes exceeds our maximum {max_length}")
    elif length > MAX_ASSOCIATE_PDU:
        raise ProtocolError(f"PDU type 0x{kind:02X} of {length} bytes", REASON_INVALID_PARAMETER)


def read_pdu(sock: Transport, max_length: int) -> Pdu:
    """Read one PDU with the socket's own timeout per wait; a type outside PS3.8 Table 9-1 or
    a P-DATA-TF longer than ``max_length`` (the Maximum Length we announced, 0 = any) is a
    :class:`ProtocolError`. :class:`Receiver` reads with deadlines instead."""
    kind, length = _HEADER.unpack(recv_exact(sock, 6))
    _check_header(kind, length, max_length)
    return Pdu(kind, recv_exact(sock, length))


class DeadlineExpired(PeerError):
    """A PDU, a message or the association request did not arrive in the time allowed."""


class IdleExpired(DeadlineExpired):
    """Nothing at all arrived within the idle time: the peer is silent, not slow."""


@dataclass(slots=True)
class Budget:
    """Time allowed for one exchange: ``timeout`` seconds from its first byte, plus one second
    for every ``rate`` bytes received (0: no extension), as Apache's mod_reqtimeout does. A
    slow but steady sender of a large data set keeps going; a trickle is cut off."""

    timeout: float
    rate: int = 0
    what: str = "message"
    #: ``time.monotonic()`` of the first byte; None until it arrives.
    start: float | None = None
    received: int = 0

    def expires(self) -> float:
        assert self.start is not None
        extra = self.received / self.rate if self.rate else 0.0
        return self.start + self.timeout + extra


def _set_receive_timeout(sock: Transport, seconds: float | None) -> None:
    """``SO_RCVTIMEO`` (socket(7)); None: wait without limit."""
    set_timeout(sock, socket.SO_RCVTIMEO, seconds)


class Receiver:
    """Reads whole PDUs off a blocking socket against deadlines, not per-read timeouts.

    Each :meth:`read` waits up to ``idle`` seconds for a PDU's first byte; from then on the
    whole PDU must arrive within ``pdu`` (a :class:`Budget`), and within the enclosing
    ``message`` budget when one is given (its clock starts at the message's first byte). The
    kernel's ``SO_RCVTIMEO`` bounds each wait; it is changed only when the time left falls more
    than :data:`TIMER_SLACK` below it, so a fast transfer costs no extra system calls.
    """

    def __init__(self, sock: Transport) -> None:
        self.sock = sock
        #: The kernel receive timeout now set; None: none (wait without limit).
        self._timeout: float | None = None
        self._count = array.array("i", [0])

    def _queued(self) -> int:
        """Bytes already in the socket's receive queue (FIONREAD), 0 if unknown: a body
        that has arrived is read in one piece, without growing its buffer."""
        try:
            fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, self._count)
        except (OSError, ValueError):
            return 0
        return int(self._count[0])

    def _wait_at_most(self, seconds: float) -> None:
        """Set the kernel receive timeout to ``seconds``."""
        _set_receive_timeout(self.sock, seconds)
        self._timeout = seconds

    def _recv_into(self, view: memoryview, deadline: float | None, what: str) -> int:
        """One ``recv_into`` that returns data before ``deadline`` (monotonic) or raises."""
        while True:
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    raise DeadlineExpired(f"{what} did not arrive in time")
                current = self._timeout
                if current is None or current > left + TIMER_SLACK:
                    self._wait_at_most(left)
            try:
                n = self.sock.recv_into(view)
            except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO expired (EAGAIN)
                # No deadline, or not reached yet (the kernel timer is left a little long or
                # short, to save a system call): wait again.
                continue
            if n == 0:
                raise ConnectionClosed("connection closed by the peer")
            return n

    def read(
        self,
        max_length: int,
        *,
        idle: float | None,
        pdu: Budget | None,
        message: Budget | None = None,
    ) -> Pdu:
        """The next PDU; :class:`IdleExpired` when nothing arrives within ``idle`` seconds,
        :class:`DeadlineExpired` when the PDU or message budget runs out,
        :class:`ConnectionClosed` or :class:`ProtocolError` as :func:`read_pdu`."""
        header = bytearray(6)
        view = memoryview(header)
        started = message is not None and message.start is not None
        first_wait = None if idle is None else time.monotonic() + idle
        if started:
            assert message is not None
            ends = message.expires()
            first_wait = ends if first_wait is None else min(first_wait, ends)
        try:
            got = self._recv_into(view, first_wait, "data")
        except DeadlineExpired as exc:
            if message is not None and started:
                raise DeadlineExpired(f"{message.what} did not arrive in time") from None
            raise IdleExpired(f"no data from the peer within {idle:g} s") from exc
        now = time.monotonic()
        if pdu is not None:
            pdu.start, pdu.received = now, got
        if message is not None:
            if message.start is None:
                message.start, message.received = now, 0
            message.received += got
        while got < 6:
            got += self._receive_more(view[got:], pdu, message)
        kind, length = _HEADER.unpack(header)
        _check_header(kind, length, max_length)
        # The body, inline (the hot path: one PDU per 16 KiB of every data set): the deadline
        # is worked out again only when a receive returned less than was missing.
        if kind == P_DATA_TF and length <= MAX_UPFRONT:
            size = length  # the hot path: no growing, no copying
        else:
            size = min(length, max(FIRST_BUFFER, self._queued()))
        body = bytearray(size)
        got = 0
        deadline, what = _earliest(pdu, message)
        while True:
            if got == len(body):
                body += bytes(min(len(body), length - len(body)))
            with memoryview(body) as into:
                n = self._recv_into(into[got:length], deadline, what)
            got += n
            if pdu is not None:
                pdu.received += n
            if message is not None:
                message.received += n
            if got >= length:
                return Pdu(kind, body)
            deadline, what = _earliest(pdu, message)

    def _receive_more(self, into: memoryview, pdu: Budget | None, message: Budget | None) -> int:
        """Receive into ``into`` before the earliest budget runs out; count the bytes."""
        ends, what = _earliest(pdu, message)
        n = self._recv_into(into, ends, what)
        if pdu is not None:
            pdu.received += n
        if message is not None:
            message.received += n
        return n


def _earliest(pdu: Budget | None, message: Budget | None) -> tuple[float | None, str]:
    """When the first of the two budgets runs out, and what it is for."""
    if pdu is None:
        return (message.expires(), message.what) if message else (None, "data")
    ends, what = pdu.expires(), pdu.what
    if message is not None:
        other = message.expires()
        if other < ends:
            return other, message.what
    return ends, what


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
