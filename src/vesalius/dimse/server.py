"""The DIMSE server (PS3.7, PS3.8): our own association layer wired to the archive.

It accepts every storage SOP class in every transfer syntax the standard defines (stored as
received), Verification, and Query/Retrieve (Patient and Study Root: FIND, MOVE, GET).

Each connection gets one thread that negotiates the association and then reads, handles and
answers one message at a time with blocking socket I/O (:mod:`vesalius.dimse.association`):
no reactor threads, no queues, no polling, so a request is handled as soon as its last PDU is
in. Data sets are written to staging files as they arrive and sent from stored files in
PDU-sized pieces. Every socket has ``TCP_NODELAY`` (small responses otherwise wait on delayed
ACKs). The handlers live in ``store``, ``find`` and ``retrieve``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from vesalius import logcontext
from vesalius.dicom.uids import (
    ALL_TRANSFER_SYNTAXES,
    IMPLEMENTATION_VERSION,
    PATIENT_ROOT_FIND,
    QR_SOP_CLASSES,
    STORAGE_SOP_CLASSES,
    STUDY_ROOT_FIND,
    VERIFICATION,
)
from vesalius.dimse import commands, find, negotiation, pdu, retrieve, store
from vesalius.dimse.association import (
    Aborted,
    Association,
    Message,
    Released,
    set_send_timeout,
)
from vesalius.dimse.board import LoadBoard, LoadSlot, host_bucket
from vesalius.dimse.config import DimseConfig, ScpContext
from vesalius.dimse.contexts import PresentationContext, build_context
from vesalius.dimse.negotiation import RJ_CONGESTION, AcceptorPolicy, Rejected
from vesalius.dimse.pdu import MAX_ASSOCIATE_PDU
from vesalius.dimse.transport import listen
from vesalius.errors import ForbiddenError, PeerError
from vesalius.identity import Identity
from vesalius.services.archive import Archive
from vesalius.telemetry import metrics, tracing

log = logging.getLogger(__name__)

#: Seconds between checks of the stop flag while waiting for connections.
ACCEPT_POLL = 0.25
#: How long a process busier than another leaves a waiting connection to the less busy one
#: (which the kernel woke too; its accept thread may first need the GIL, switched every 5 ms).
BALANCE_DEFER = 0.01
#: Connections a process holds open beyond ``dicom.max_associations`` (peers negotiating or
#: being refused); past that a new connection is closed at once.
EXTRA_CONNECTIONS = 32
#: Connections over a limit that are answered with an A-ASSOCIATE-RJ at once (each waits up
#: to :data:`REFUSE_WAIT` seconds for its A-ASSOCIATE-RQ); past that they are closed at once.
MAX_REFUSING = 16
REFUSE_WAIT = 2.0
#: Seconds the A-ABORTs sent when the grace period is over may take, all together.
ABORT_WAIT = 3.0

__all__ = ["IMPLEMENTATION_VERSION", "DimseServer", "listen", "supported_contexts"]

Handler = Callable[[ScpContext, Association, Message], None]
HANDLERS: dict[int, Handler] = {
    commands.C_ECHO_RQ: store.handle_echo,
    commands.C_STORE_RQ: store.handle_store,
    commands.C_FIND_RQ: find.handle_find,
    commands.C_MOVE_RQ: retrieve.handle_move,
    commands.C_GET_RQ: retrieve.handle_get,
}
#: The SOP classes each command is defined for, checked against the message's context.
COMMAND_SOP_CLASSES: dict[int, frozenset[str]] = {
    commands.C_ECHO_RQ: frozenset({VERIFICATION}),
    commands.C_STORE_RQ: frozenset(uid for _, uid in STORAGE_SOP_CLASSES),
    commands.C_FIND_RQ: frozenset(find.MODELS),
    commands.C_MOVE_RQ: frozenset(k for k in retrieve.MODELS if k.endswith(".2")),
    commands.C_GET_RQ: frozenset(k for k in retrieve.MODELS if k.endswith(".3")),
}
#: Status for a command sent on a context of another SOP class (PS3.7 C.5.x "SOP class not
#: supported" 0x0122 for C-STORE; 0x0211 "unrecognized operation" otherwise).
WRONG_CONTEXT = {commands.C_STORE_RQ: 0x0122}
RESPONSE_FIELD = {
    commands.C_ECHO_RQ: commands.C_ECHO_RSP,
    commands.C_STORE_RQ: commands.C_STORE_RSP,
    commands.C_FIND_RQ: commands.C_FIND_RSP,
    commands.C_MOVE_RQ: commands.C_MOVE_RSP,
    commands.C_GET_RQ: commands.C_GET_RSP,
}


def supported_contexts() -> list[PresentationContext]:
    """What we accept: Verification, every storage class (with the SCP role offered to C-GET
    requestors, PS3.7 D.3.3.4), and the Query/Retrieve classes, in every transfer syntax."""
    syntaxes = list(ALL_TRANSFER_SYNTAXES)
    contexts = [build_context(VERIFICATION, syntaxes)]
    for _, uid in STORAGE_SOP_CLASSES:
        cx = build_context(uid, syntaxes)
        cx.scu_role = False
        cx.scp_role = True
        contexts.append(cx)
    contexts.extend(build_context(uid, syntaxes) for uid in QR_SOP_CLASSES)
    return contexts


@dataclass
class _Connection:
    sock: socket.socket
    address: str
    thread: threading.Thread
    bucket: int
    #: Why this connection is refused when its A-ASSOCIATE-RQ arrives ("" if it is not).
    refusal: str = ""
    association: Association | None = None
    negotiating: bool = True


class DimseServer:
    """The listening DIMSE server; ``start`` returns at once, ``stop`` drains then aborts."""

    def __init__(self, archive: Archive, config: DimseConfig, load: LoadSlot | None = None) -> None:
        """``load``: this process's slot on the board shared with the other processes that
        accept on the same socket (``dimse/board.py``); None when it accepts alone."""
        self.archive = archive
        self.config = config
        self.context = ScpContext(archive, config)
        self.load = load if load is not None else LoadBoard(1).slot(0)
        self.max_associations = config.max_associations
        self.max_per_host = config.max_associations_per_host
        self.ae_title = config.ae_title
        self.max_pdu = config.max_pdu
        self.contexts = supported_contexts()
        self.implementation_version_name = IMPLEMENTATION_VERSION
        self.policy = AcceptorPolicy(
            ae_title=self.ae_title,
            max_pdu=self.max_pdu,
            supported=self.contexts,
            require_called_ae=config.require_called_ae,
            calling_refusal=self._caller_refusal,
            extended={uid: find.extended_answer for uid in (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)},
        )
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._connections: dict[int, _Connection] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._draining = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    def start(self, listener: socket.socket | None = None) -> None:
        """Accept associations on ``listener`` (shared with worker processes), or on a new
        socket bound to the configured address."""
        c = self.config
        if listener is None:
            listener = listen(c.host, c.port)
        listener.setblocking(False)  # the accept loop polls, noticing stop() within ACCEPT_POLL
        self._listener = listener
        self.load.publish(0)
        self._stopping.clear()
        self._draining.clear()
        self._accepting = threading.Thread(target=self._accept_loop, name="dimse-accept")
        self._accepting.daemon = True
        self._accepting.start()
        log.info("DIMSE %s listening on %s:%d", self.ae_title, c.host, self.port)

    def _accept_loop(self) -> None:
        listener = self._listener  # stop() clears the attribute, closes the socket after us
        assert listener is not None
        waiting = select.poll()
        waiting.register(listener, select.POLLIN)
        while not self._stopping.is_set():
            if not waiting.poll(ACCEPT_POLL * 1000):
                continue
            if self.load.busier_than_another():
                time.sleep(BALANCE_DEFER)
                if not waiting.poll(0):
                    continue  # a less busy process took it
            try:
                sock, peer = listener.accept()
            except (TimeoutError, BlockingIOError, InterruptedError):
                continue  # another worker process took it
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)  # e.g. EMFILE: do not spin
                continue
            self._admit(sock, peer[0], peer[1])

    def _admit(self, sock: socket.socket, address: str, port: int) -> None:
        """Give a new connection its thread, unless the limits say otherwise: a connection
        over a limit is answered A-ASSOCIATE-RJ (transient, local limit exceeded) when its
        request comes within :data:`REFUSE_WAIT` seconds, or closed at once when too many
        are being refused already."""
        bucket = host_bucket(address)
        with self._lock:
            refusal = ""
            if self._draining.is_set():
                refusal = "shutting down"
            elif len(self._connections) >= self.max_associations + EXTRA_CONNECTIONS:
                refusal = f"{len(self._connections)} connections open in this process"
            elif self.max_per_host and self.load.host_total(bucket) >= self.max_per_host:
                refusal = (
                    f"{address} has {self.max_per_host} connections open already "
                    "(dicom.max_associations_per_host)"
                )
            if refusal:
                refusing = sum(1 for c in self._connections.values() if c.refusal)
                if refusing >= MAX_REFUSING:
                    log.info("closing a connection from %s at once: %s", address, refusal)
                    with contextlib.suppress(OSError):
                        sock.close()
                    return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(sock, address), daemon=True)
            self._connections[id(sock)] = _Connection(sock, address, thread, bucket, refusal)
            if not refusal:
                self.load.add_host(bucket, 1)
            self._publish_load()
        thread.name = f"dimse-{address}:{port}"
        thread.start()

    def active(self) -> list[_Connection]:
        with self._lock:
            return list(self._connections.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every running association has ended; False on timeout."""
        deadline = time.monotonic() + timeout
        for conn in self.active():
            conn.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not self.active()

    def drain(self) -> None:
        """Begin shutting down (``vesalius/shutdown.py``): running associations go on, and a
        new association request is answered A-ASSOCIATE-RJ (transient, service-provider
        presentation, temporary congestion: PS3.8 Table 9-21) rather than with a closed
        socket, so the peer knows to try again later. :meth:`stop` ends the drain."""
        if not self._draining.is_set():
            self._draining.set()
            self.load.leave()  # a draining process is never the least busy one

    def stop(self, grace: float = 10.0) -> None:
        """Drain: let running associations finish for ``grace`` seconds while new ones are
        refused; then stop accepting and send every association still open an A-ABORT
        (PS3.8 9.3.8), all at once."""
        if self._listener is None:
            return
        self.drain()
        self.wait_idle(grace)
        self._stopping.set()
        listener, self._listener = self._listener, None
        if self._accepting is not None:
            self._accepting.join(timeout=2 + ACCEPT_POLL)
        listener.close()  # no shutdown(): worker processes may share this socket
        enders = [
            threading.Thread(target=_end_at_shutdown, args=(conn,), daemon=True)
            for conn in self.active()
        ]
        for ender in enders:  # in parallel: a peer that reads nothing delays only its own
            ender.start()
        deadline = time.monotonic() + ABORT_WAIT
        for ender in enders:
            ender.join(max(0.0, deadline - time.monotonic()))
        self.wait_idle(2)

    # -- one connection ------------------------------------------------------------------

    def _serve(self, sock: socket.socket, address: str) -> None:
        # Every line logged for this connection carries its association id.
        bound = logcontext.bound(logcontext.ASSOCIATION, logcontext.new_id())
        try:
            with bound:
                assoc = self._negotiate(sock, address)
                if assoc is not None:
                    self._run(assoc)
        except Exception:
            log.exception("association with %s failed", address)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                conn = self._connections.pop(id(sock), None)
                if conn is not None and not conn.refusal:
                    self.load.add_host(conn.bucket, -1)
                self._publish_load()

    def _publish_load(self) -> None:
        """Tell the other accepting processes how busy this one is (call holding the lock)."""
        established = sum(1 for c in self._connections.values() if not c.negotiating)
        self.load.set_established(established)
        if not self._draining.is_set():
            self.load.publish(len(self._connections))

    def _negotiate(self, sock: socket.socket, address: str) -> Association | None:
        """Read the A-ASSOCIATE-RQ, whole, within the ACSE timeout of the connection (the
        ARTIM timer, PS3.8 9.1.5), and accept or reject it."""
        c = self.config
        accepted_at = time.monotonic()
        with self._lock:
            conn = self._connections.get(id(sock))
        refusal = conn.refusal if conn is not None else ""
        artim = REFUSE_WAIT if refusal else c.acse_timeout
        sock.settimeout(None)  # blocking, with kernel timeouts (pdu.Receiver)
        set_send_timeout(sock, c.network_timeout)
        receiver = pdu.Receiver(sock)
        budget = pdu.Budget(artim, 0, "A-ASSOCIATE-RQ", start=accepted_at)
        try:
            request = receiver.read(MAX_ASSOCIATE_PDU, idle=artim, pdu=None, message=budget)
        except pdu.DeadlineExpired:
            log.info("no complete A-ASSOCIATE-RQ from %s within %g s: closing", address, artim)
            return None
        except (OSError, PeerError) as exc:
            log.info("connection from %s ended before association: %s", address, exc)
            return None
        if request.kind != pdu.ASSOCIATE_RQ:
            metrics.association_rejected(None)
            with contextlib.suppress(OSError):
                sock.sendall(pdu.abort(pdu.SOURCE_PROVIDER, pdu.REASON_UNEXPECTED_PDU))
            return None
        if self._draining.is_set():
            log.info("rejecting association from %s: shutting down", address)
            with contextlib.suppress(OSError):
                sock.sendall(pdu.associate_rj(*RJ_CONGESTION))
                _linger(sock)
            return None
        if not refusal and self.load.established_total() >= self.max_associations:
            refusal = f"{self.max_associations} associations established (dicom.max_associations)"
        try:
            answer, agreed = negotiation.accept(request.body, self.policy, bool(refusal), address)
        except Rejected as exc:
            metrics.association_rejected(exc.reason)
            log.info("rejecting association from %s: %s", address, refusal or exc)
            with contextlib.suppress(OSError):
                sock.sendall(pdu.associate_rj(*exc.reason))
                _linger(sock)
            return None
        except PeerError as exc:
            metrics.association_rejected(None)
            log.info("bad association request from %s: %s", address, exc)
            with contextlib.suppress(OSError):
                sock.sendall(pdu.abort(pdu.SOURCE_PROVIDER, pdu.REASON_INVALID_PARAMETER))
            return None
        sock.sendall(answer)
        assoc = Association(
            sock,
            agreed,
            max_pdu=self.max_pdu,
            network_timeout=c.network_timeout,
            dimse_timeout=c.dimse_timeout,
            staging=self.archive.ingest.staging_file,
            peer_address=address,
            min_rate=c.min_receive_rate,
            receiver=receiver,
        )
        with self._lock:
            conn = self._connections.get(id(sock))
            if conn is not None:
                conn.association = assoc
                conn.negotiating = False
                self._publish_load()
        log.info(
            "association from %s to %s (%s) accepted: %d contexts",
            agreed.calling_ae,
            agreed.called_ae,
            address,
            len(agreed.contexts),
            extra={"calling_ae": agreed.calling_ae, "called_ae": agreed.called_ae, "peer": address},
        )
        return assoc

    def _caller_refusal(self, calling_ae: str, address: str) -> str:
        """Why the archive's policy refuses an association from ``calling_ae`` at
        ``address`` ("" if it does not): unknown callers, a known AE from another host."""
        try:
            self.archive.oversight.check(Identity.ae(calling_ae, address), "associate")
        except ForbiddenError as exc:
            return exc.message
        return ""

    def _run(self, assoc: Association) -> None:
        """Handle messages until the peer releases or the association ends."""
        started = time.monotonic()
        counts: Counter[str] = Counter()
        metrics.association_accepted()
        try:
            while True:
                message = assoc.receive()
                counts[message.command.name] += 1
                field = message.command.field
                if field == commands.C_CANCEL_RQ:
                    continue  # for an operation that has already ended
                handler = HANDLERS.get(field)
                if handler is None:
                    log.info("%s from %s: not supported", message.command.name, assoc.calling_ae)
                    assoc.abort(pdu.REASON_UNRECOGNIZED_PARAMETER)
                    return
                if message.context.abstract_syntax not in COMMAND_SOP_CLASSES[field]:
                    self._wrong_context(assoc, message)
                    continue
                name = message.command.name.removesuffix("-RQ")
                with tracing.dimse_span(name, assoc.calling_ae):
                    handler(self.context, assoc, message)
        except Released:
            log.info(
                "association with %s released after %.1f s: %s",
                assoc.calling_ae,
                time.monotonic() - started,
                _tally(counts),
            )
        except (Aborted, PeerError) as exc:
            log.info(
                "association with %s ended after %.1f s (%s): %s",
                assoc.calling_ae,
                time.monotonic() - started,
                _tally(counts),
                exc,
            )
        finally:
            assoc.close()
            metrics.association_ended()

    @staticmethod
    def _wrong_context(assoc: Association, message: Message) -> None:
        field = message.command.field
        if message.path is not None:
            message.path.unlink(missing_ok=True)
        status = WRONG_CONTEXT.get(field, 0x0211)
        comment = f"{message.command.name} on a {message.context.abstract_syntax} context"
        rsp = commands.response(
            message.command,
            RESPONSE_FIELD[field],
            status,
            extra=[(commands.ERROR_COMMENT, comment[:64])],
        )
        assoc.send(message.context.id, rsp)


def _tally(counts: Counter[str]) -> str:
    """``3 C-STORE-RQ, 1 C-ECHO-RQ`` (or ``no messages``)."""
    return ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "no messages"


def _end_at_shutdown(conn: _Connection) -> None:
    """The grace period is over: A-ABORT an association, close a connection not yet one."""
    if conn.association is not None:
        log.warning(
            "aborting association with %s at shutdown: the grace period is over",
            conn.association.calling_ae,
        )
        conn.association.abort()
    else:
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)


def _linger(sock: socket.socket, timeout: float = 2.0) -> None:
    """After an A-ASSOCIATE-RJ, give the peer a moment to read it and close (PS3.8 9.1.4)."""
    sock.settimeout(timeout)
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass
