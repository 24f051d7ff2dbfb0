"""An established association: DIMSE messages over P-DATA-TF on a blocking socket
(PS3.8 9.3.5, Annex E; PS3.7 6.3.1).

One thread owns an association and does all its I/O, so there is no reactor, no queue and no
polling: a read blocks on the socket (with the network or DIMSE timeout) and a write goes
straight out. Data set fragments of a C-STORE-RQ are written to a staging file as they arrive
(with a Part 10 header, PS3.10 7.1), so a received instance is never held in memory; a file
sent from storage is read into one reusable PDU-sized buffer.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn, cast

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from vesalius.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    IMPLICIT_VR_LE,
)
from vesalius.dimse import commands, pdu
from vesalius.dimse.commands import Command
from vesalius.dimse.negotiation import Context, Negotiated
from vesalius.dimse.pdu import ConnectionClosed, ProtocolError
from vesalius.dimse.transport import Transport, send_parts, set_timeout
from vesalius.errors import PeerError
from vesalius.identity import Method
from vesalius.services.ingest import ContentHash

log = logging.getLogger(__name__)

#: A command set longer than this ends the association (PS3.7 E.1: a dozen short elements;
#: the longest real ones, with an Error Comment or an Attribute Identifier List, stay far below).
MAX_COMMAND_SET = 16 << 10
#: Identifiers and other data sets received into memory (C-FIND, C-MOVE and C-GET keys, N-*
#: data sets), after any inflation: larger ends the association. 1 MiB holds a UID list of
#: over 15,000 UIDs.
MAX_IDENTIFIER = 1 << 20
#: Largest fragment we send, whatever the peer announces (0 or 4 GiB would otherwise size our
#: send buffer); also the fragment size when our own Maximum Length is 0 (any).
MAX_SEND_FRAGMENT = 1 << 20
#: Fragments are written to the staging file through a buffer of this size.
WRITE_BUFFER = 1 << 20


class Released(PeerError):
    """The peer released the association (A-RELEASE-RQ answered)."""


class Aborted(PeerError):
    """The association ended abnormally: A-ABORT received, connection lost, or a timeout."""


@dataclass(slots=True)
class Message:
    """A received DIMSE message: command, its presentation context, and its data set as bytes
    (identifiers) or as a staged Part 10 file (C-STORE-RQ)."""

    command: Command
    context: Context
    data: bytes | None = None
    path: Path | None = None
    #: (size, SHA-256 hex) of the staged file, computed while it was written.
    digest: tuple[int, str] | None = None
    #: Why a C-STORE-RQ's data set could not be staged (it was read and dropped), if so.
    staging_error: str | None = None


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def part10_header(sop_class: str, sop_instance: str, syntax: str, source_ae: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information for a received data set (PS3.10 7.1)."""
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", sop_class.encode()),
            _element(0x00020003, b"UI", sop_instance.encode()),
            _element(0x00020010, b"UI", syntax.encode()),
            _element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode()),
            _element(0x00020013, b"SH", IMPLEMENTATION_VERSION.encode()),
            _element(0x00020016, b"AE", source_ae.encode("ascii", "replace")[:16]),
        )
    )
    group = _element(0x00020000, b"UL", struct.pack("<L", len(body)))
    return b"\0" * 128 + b"DICM" + group + body


def encode_data_set(ds: Dataset, syntax: str) -> bytes:
    """``ds`` encoded in the context's transfer syntax (identifiers, status data sets)."""
    implicit = syntax == IMPLICIT_VR_LE
    little = syntax != "1.2.840.10008.1.2.2"
    buffer = DicomBytesIO()
    buffer.is_little_endian = little
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    if syntax == DEFLATED_EXPLICIT_VR_LE:
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
    return bytes(data)


def inflate_bounded(data: bytes, limit: int) -> bytes:
    """Raw DEFLATE ``data`` inflated (PS3.5 A.5), or :class:`ProtocolError` when it inflates
    past ``limit`` bytes or is corrupt: a 1 MiB identifier cannot become a 1 GiB one."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(
            f"corrupt deflated data set: {exc}", pdu.REASON_INVALID_PARAMETER
        ) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ProtocolError(
            f"deflated data set inflates past {limit >> 10} KiB", pdu.REASON_INVALID_PARAMETER
        )
    return out


def decode_data_set(data: bytes, syntax: str) -> Dataset:
    """Decode an identifier received in ``syntax`` (deflated: inflated up to
    :data:`MAX_IDENTIFIER` bytes)."""
    if syntax == DEFLATED_EXPLICIT_VR_LE:
        data = inflate_bounded(data, MAX_IDENTIFIER)
    implicit = syntax == IMPLICIT_VR_LE
    little = syntax != "1.2.840.10008.1.2.2"
    ds = read_dataset(cast(BinaryIO, DicomBytesIO(data)), implicit, little)
    ds.set_original_encoding(implicit, little, None)
    return ds


def set_send_timeout(sock: Transport, seconds: float | None) -> None:
    """``SO_SNDTIMEO`` (socket(7)): how long one send may wait for the peer to read; None or
    0: without limit."""
    set_timeout(sock, socket.SO_SNDTIMEO, seconds)


def send_fragment_size(peer_max_pdu: int, own_max_pdu: int) -> int:
    """Largest PDV fragment to send (PS3.8 D.1): what the peer's Maximum Length allows (6
    bytes go to the PDV header), but never more than our own Maximum Length nor
    :data:`MAX_SEND_FRAGMENT`, so a peer announcing 0xFFFFFFFF does not size our buffers."""
    cap = min(own_max_pdu - 6, MAX_SEND_FRAGMENT) if own_max_pdu > 6 else MAX_SEND_FRAGMENT
    return min(peer_max_pdu - 6, cap) if peer_max_pdu > 6 else cap


class Association:
    """One established association; every method is called from its owning thread, except
    :meth:`abort`, which may come from another (shutdown).

    Receiving runs against deadlines (:class:`~vesalius.dimse.pdu.Receiver`): between
    messages the association may stay idle ``network_timeout`` seconds; a PDU must arrive
    whole within ``network_timeout`` of its first byte and a message within ``dimse_timeout``
    of its first byte, both extended by a second per ``min_rate`` bytes received.
    """

    def __init__(
        self,
        sock: Transport,
        agreed: Negotiated,
        *,
        max_pdu: int,
        network_timeout: float | None,
        dimse_timeout: float | None,
        staging: Callable[[], tuple[int, Path]] | None = None,
        peer_address: str = "",
        min_rate: int = 0,
        receiver: pdu.Receiver | None = None,
    ) -> None:
        self.sock = sock
        self.agreed = agreed
        self.max_pdu = max_pdu
        self.network_timeout = network_timeout
        self.dimse_timeout = dimse_timeout
        self.staging = staging
        self.peer_address = peer_address
        #: How the calling AE was authenticated (``certificate``: over mutual TLS).
        self.method: Method = "ae-title"
        self.min_rate = min_rate
        self.ended = False
        self._pending: deque[tuple[int, int, memoryview]] = deque()
        self._message_id = 0
        self._fragment = send_fragment_size(agreed.peer_max_pdu, max_pdu)
        self._buffer: bytearray | None = None  # for send_file, made on first use
        # Blocking socket with kernel timeouts: each recv and send is then one system call,
        # where Python's own socket timeout polls before every call and switches the
        # blocking mode with an ioctl at every settimeout (about 20 system calls per CT image).
        sock.settimeout(None)
        set_send_timeout(sock, network_timeout)
        self._receiver = receiver or pdu.Receiver(sock)
        self._pdu = (
            None if network_timeout is None else pdu.Budget(network_timeout, min_rate, "PDU")
        )

    def _pdu_budget(self) -> pdu.Budget | None:
        """The budget of the next PDU (one object, reset by each read)."""
        return self._pdu

    def _message_budget(self) -> pdu.Budget | None:
        if self.dimse_timeout is None:
            return None
        return pdu.Budget(self.dimse_timeout, self.min_rate, "DIMSE message")

    # -- identity ------------------------------------------------------------------------

    @property
    def calling_ae(self) -> str:
        return self.agreed.calling_ae

    @property
    def contexts(self) -> dict[int, Context]:
        return self.agreed.contexts

    def next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    # -- receiving -----------------------------------------------------------------------

    def _next_pdv(
        self, idle: float | None, message: pdu.Budget | None
    ) -> tuple[int, int, memoryview]:
        """The next PDV of a P-DATA-TF; release and abort end the association here."""
        while True:
            if self._pending:
                return self._pending.popleft()
            try:
                received = self._receiver.read(
                    self.max_pdu,
                    idle=idle,
                    pdu=self._pdu_budget(),
                    message=message,
                )
            except pdu.IdleExpired as exc:
                self.abort()
                raise Aborted(f"no data from the peer within the timeout ({exc})") from exc
            except pdu.DeadlineExpired as exc:
                self.abort()
                raise Aborted(f"too slow: {exc}") from exc
            except ConnectionClosed as exc:
                self.ended = True
                raise Aborted("connection closed by the peer") from exc
            except OSError as exc:
                self.ended = True
                raise Aborted(f"connection lost: {exc}") from exc
            except ProtocolError as exc:
                self.abort(exc.reason)
                raise
            if received.kind == pdu.P_DATA_TF:
                try:
                    self._pending.extend(pdu.pdvs(received.body))
                except ProtocolError as exc:
                    self.abort(exc.reason)
                    raise
                continue
            if received.kind == pdu.RELEASE_RQ:
                self._send_raw(pdu.release_rp())
                self.close()
                raise Released("released by the peer")
            if received.kind == pdu.ABORT:
                self.close()
                raise Aborted("aborted by the peer")
            self.abort(pdu.REASON_UNEXPECTED_PDU)
            raise ProtocolError(f"unexpected PDU type 0x{received.kind:02X}")

    def receive(self, timeout: float | None = None) -> Message:
        """The next complete DIMSE message (blocking up to ``timeout`` per PDU; the network
        timeout when None). Raises :class:`Released` or :class:`Aborted` when it ends."""
        wait = timeout if timeout is not None else self.network_timeout
        budget = self._message_budget()
        command_bytes = bytearray()
        context_id, control = 0, 0
        while not control & 0x02:
            context_id, control, fragment = self._next_pdv(wait, budget)
            if not control & 0x01:
                self._protocol_error("data set fragment where a command was expected")
            command_bytes += fragment
            if len(command_bytes) > MAX_COMMAND_SET:
                self.abort(pdu.REASON_INVALID_PARAMETER)
                raise Aborted(f"command set longer than {MAX_COMMAND_SET >> 10} KiB")
        context = self.contexts.get(context_id)
        if context is None:
            self._protocol_error(f"message on presentation context {context_id}, not accepted")
        try:
            command = commands.decode(command_bytes)
        except ProtocolError as exc:
            self.abort(exc.reason)
            raise
        message = Message(command, context)
        if log.isEnabledFor(logging.DEBUG):
            _log_message("received", command)
        if not command.has_data_set:
            return message
        if command.field == commands.C_STORE_RQ and self.staging is not None:
            try:
                fd, path = self.staging()
            except OSError as exc:
                for _ in self._data_fragments(context.id, wait, budget):
                    pass
                message.staging_error = f"cannot create a staging file: {exc.strerror}"
                return message
            self._receive_to_file(message, fd, path, wait, budget)
        else:
            message.data = self._receive_to_memory(context_id, wait, budget)
        return message

    def _data_fragments(
        self, context_id: int, wait: float | None, budget: pdu.Budget | None
    ) -> Iterator[memoryview]:
        control = 0
        while not control & 0x02:
            cid, control, fragment = self._next_pdv(wait, budget)
            if control & 0x01 or cid != context_id:
                self._protocol_error("data set fragment expected on the message's context")
            yield fragment

    def _receive_to_memory(
        self, context_id: int, wait: float | None, budget: pdu.Budget | None
    ) -> bytes:
        data = bytearray()
        for fragment in self._data_fragments(context_id, wait, budget):
            data += fragment
            if len(data) > MAX_IDENTIFIER:
                self.abort(pdu.REASON_INVALID_PARAMETER)
                raise Aborted(f"data set longer than {MAX_IDENTIFIER >> 10} KiB to hold in memory")
        return bytes(data)

    def _receive_to_file(
        self, message: Message, fd: int, path: Path, wait: float | None, budget: pdu.Budget | None
    ) -> None:
        """Write the data set behind a Part 10 header into the staging file ``fd`` (at
        ``path``), hashing it on the way (SHA-256, as the archive records it), into
        ``message.path`` and ``message.digest``.

        When the file cannot be written (disk full), the rest of the data set is still read
        and dropped, the partial file removed, and ``message.staging_error`` says why: the
        C-STORE fails with 0xA700 and the association goes on (PS3.4 B.2.3). When the
        association ends mid data set, the partial file is removed before that propagates.
        """
        command, context = message.command, message.context
        handle = open(fd, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115 - closed below
        failed: OSError | None = None
        try:
            header = part10_header(
                command.text(commands.AFFECTED_SOP_CLASS),
                command.text(commands.AFFECTED_SOP_INSTANCE),
                context.transfer_syntax,
                self.calling_ae,
            )
            content = ContentHash(header)
            try:
                handle.write(header)
            except OSError as exc:
                failed = exc
            for fragment in self._data_fragments(context.id, wait, budget):
                if failed is not None:
                    continue
                try:
                    handle.write(fragment)
                except OSError as exc:
                    failed = exc
                    continue
                content.update(fragment)
            try:
                handle.close()
            except OSError as exc:
                failed = failed or exc
        except BaseException:
            with contextlib.suppress(OSError):
                handle.close()
            path.unlink(missing_ok=True)
            raise
        if failed is not None:
            with contextlib.suppress(OSError):
                handle.close()
            path.unlink(missing_ok=True)
            log.warning("cannot write a received data set to staging: %s", failed)
            message.staging_error = f"cannot write to staging: {failed.strerror or failed}"
            return
        message.path, message.digest = path, content.digest()

    def cancel_requested(self, message_id: int) -> bool:
        """Whether a C-CANCEL-RQ for ``message_id`` is waiting on the socket (PS3.7 9.3.2.3).
        Reads only what has already arrived; any other message then is a protocol error."""
        while self._pending or self._readable():
            message = self.receive()
            if message.command.field != commands.C_CANCEL_RQ:
                self._protocol_error(f"{message.command.name} while an operation is running")
            if message.command.us(commands.RESPONDED_TO) == message_id:
                return True
        return False

    def _readable(self) -> bool:
        try:
            ready, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True  # let the read report it
        return bool(ready)

    def _protocol_error(self, message: str) -> NoReturn:
        self.abort(pdu.REASON_UNEXPECTED_PDU)
        raise ProtocolError(message)

    # -- sending -------------------------------------------------------------------------

    def _send_raw(self, *parts: bytes | memoryview) -> None:
        try:
            send_parts(self.sock, parts)
        except OSError as exc:
            self.ended = True
            raise Aborted(f"cannot send to the peer: {exc}") from exc

    def send_command(self, context_id: int, command: bytes) -> None:
        for start in range(0, len(command), self._fragment):
            chunk = command[start : start + self._fragment]
            last = start + self._fragment >= len(command)
            self._send_raw(pdu.pdata_header(context_id, 0x03 if last else 0x01, len(chunk)), chunk)

    def send_data(self, context_id: int, data: bytes) -> None:
        if not data:
            self._send_raw(pdu.pdata_header(context_id, 0x02, 0))
            return
        view = memoryview(data)
        for start in range(0, len(data), self._fragment):
            chunk = view[start : start + self._fragment]
            last = start + self._fragment >= len(data)
            self._send_raw(pdu.pdata_header(context_id, 0x02 if last else 0x00, len(chunk)), chunk)

    def send_file(self, context_id: int, handle: BinaryIO, size: int) -> None:
        """Send ``size`` bytes from ``handle``'s position as the message's data set (read into
        one reused buffer; by ``read`` for a reader without ``readinto``)."""
        if self._buffer is None:
            self._buffer = bytearray(self._fragment)
        view = memoryview(self._buffer)
        readinto = getattr(handle, "readinto", None) or _reader_into(handle)
        left = size
        while True:
            n = readinto(view[: min(self._fragment, left)]) if left else 0
            if n is None or (n == 0 and left):
                raise OSError("stored file is shorter than expected")
            left -= n
            control = 0x00 if left else 0x02
            self._send_raw(pdu.pdata_header(context_id, control, n), view[:n])
            if not left:
                return

    def send(
        self,
        context_id: int,
        command: bytes,
        data: bytes | None = None,
        file: tuple[BinaryIO, int] | None = None,
    ) -> None:
        """One DIMSE message: the command, then the data set from bytes or an open file."""
        if log.isEnabledFor(logging.DEBUG):
            with contextlib.suppress(ProtocolError):
                _log_message("sent", commands.decode(command))
        self.send_command(context_id, command)
        if data is not None:
            self.send_data(context_id, data)
        elif file is not None:
            self.send_file(context_id, *file)

    # -- ending --------------------------------------------------------------------------

    def release(self) -> None:
        """Release as requestor (PS3.8 7.2): A-RELEASE-RQ, wait for the RP (or anything)."""
        if self.ended:
            return
        try:
            self._send_raw(pdu.release_rq())
            while True:
                received = self._receiver.read(
                    self.max_pdu,
                    idle=self.network_timeout,
                    pdu=self._pdu_budget(),
                )
                if received.kind in (pdu.RELEASE_RP, pdu.ABORT):
                    break
                if received.kind == pdu.RELEASE_RQ:  # release collision (PS3.8 7.2.1)
                    self._send_raw(pdu.release_rp())
                    break
        except (PeerError, OSError):
            pass
        self.close()

    def abort(self, reason: int | None = None) -> None:
        """Send an A-ABORT (provider source with ``reason``, else user source) and close."""
        if self.ended:
            return
        source = pdu.SOURCE_USER if reason is None else pdu.SOURCE_PROVIDER
        with contextlib.suppress(OSError):
            self.sock.settimeout(2)
            self.sock.sendall(pdu.abort(source, reason or 0))
        self.close()

    def close(self) -> None:
        self.ended = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def _log_message(direction: str, command: commands.Command) -> None:
    """A debug line for one DIMSE message: command, SOP class and instance, status (UIDs are
    identifiers: only at debug, docs/operations.md "Logs")."""
    extra: dict[str, object] = {
        "command": command.name,
        "message_id": command.message_id_responded or command.message_id,
        "sop_class": command.text(commands.AFFECTED_SOP_CLASS)
        or command.text(commands.REQUESTED_SOP_CLASS),
    }
    instance = command.text(commands.AFFECTED_SOP_INSTANCE) or command.text(
        commands.REQUESTED_SOP_INSTANCE
    )
    if instance:
        extra["sop_instance"] = instance
    status = command.us(commands.STATUS)
    if status is not None:
        extra["status"] = f"0x{status:04X}"
    log.debug("%s %s", direction, command.name, extra=extra)


def _reader_into(handle: BinaryIO) -> Callable[[memoryview], int]:
    """``readinto`` for a reader that has only ``read``."""

    def readinto(view: memoryview) -> int:
        data = handle.read(len(view))
        view[: len(data)] = data
        return len(data)

    return readinto
