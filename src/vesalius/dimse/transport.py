"""The transport under the DICOM Upper Layer (PS3.8 9.1.1): a byte stream with blocking reads
and writes and kernel timeouts. TCP today; TLS (PS3.15 B.9-B.12, ``ssl.SSLSocket``) is
another transport of the same shape, so the PDU reader (``pdu.Receiver``) and the association
work on either unchanged.

What the Upper Layer needs of a transport is :class:`Transport`; :func:`connect` and
:func:`listen` open TCP ones with ``TCP_NODELAY`` (small DIMSE responses otherwise wait on
delayed ACKs).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


class Transport(Protocol):
    """A connected byte stream: what ``socket.socket`` and ``ssl.SSLSocket`` both offer."""

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = ..., flags: int = ..., /) -> int: ...

    def sendall(self, data: ReadableBuffer, flags: int = ..., /) -> None: ...

    def setsockopt(self, level: int, optname: int, value: int | ReadableBuffer, /) -> None: ...

    def settimeout(self, value: float | None, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...

    def fileno(self) -> int: ...


def send_parts(transport: Transport, parts: Sequence[ReadableBuffer]) -> None:
    """Send ``parts`` in order, with one ``sendmsg`` (scatter/gather, one system call) where
    the transport has it (plain TCP), else joined (TLS encrypts records from one buffer)."""
    if len(parts) == 1:
        transport.sendall(parts[0])
        return
    sendmsg = getattr(transport, "sendmsg", None)
    if sendmsg is None:
        transport.sendall(b"".join(bytes(p) for p in parts))
        return
    total = sum(len(memoryview(p)) for p in parts)
    sent = int(sendmsg(parts))
    if sent < total:  # rare: finish what the kernel did not take at once
        joined = b"".join(bytes(p) for p in parts)
        transport.sendall(joined[sent:])


def set_timeout(transport: Transport, option: int, seconds: float | None) -> None:
    """``SO_RCVTIMEO`` or ``SO_SNDTIMEO`` (socket(7)) on a blocking transport; None or 0:
    wait without limit."""
    value = max(seconds, 0.001) if seconds else 0.0
    whole = int(value)
    micro = int((value - whole) * 1_000_000)
    with contextlib.suppress(OSError):  # a socket already closed reports on first use
        transport.setsockopt(socket.SOL_SOCKET, option, struct.pack("@ll", whole, micro))


def connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to ``host:port`` with ``TCP_NODELAY`` (``OSError`` when it fails)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener
