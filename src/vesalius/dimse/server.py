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
from vesalius.tls import ServerTls, TlsSocket, common_name, failure_reason

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
#: A-ASSOCIATE-RJ: permanent, service-user, calling AE title not recognised (PS3.8 9.3.4).
RJ_CALLING_AE = (1, 1, 3)

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
    #: The TLS context of the port it came on (None: plain TCP).
    tls: ServerTls | None = None
    association: Association | None = None
    negotiating: bool = True


class DimseServer:
    """The listening DIMSE server; ``start`` returns at once, ``stop`` drains then aborts."""

    def __init__(
        self,
        archive: Archive,
        config: DimseConfig,
        load: LoadSlot | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        """``load``: this process's slot on the board shared with the other processes that
        accept on the same socket (``dimse/board.py``); None when it accepts alone. ``tls``:
        also serve DIMSE over TLS on ``config.tls_port`` (PS3.15 B.9)."""
        self.tls = tls
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
        self._tls_listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._connections: dict[int, _Connection] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._draining = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The plain port (0 when plain DIMSE is not served)."""
        if self._listener is None:
            return 0
        return int(self._listener.getsockname()[1])

    @property
    def tls_port(self) -> int:
        """The TLS port (0 when DIMSE over TLS is not served)."""
        if self._tls_listener is None:
            return 0
        return int(self._tls_listener.getsockname()[1])

    def start(
        self, listener: socket.socket | None = None, tls_listener: socket.socket | None = None
    ) -> None:
        """Accept associations on ``listener`` (shared with worker processes), or on a new
        socket bound to the configured address; and over TLS on ``tls_listener`` (or a new
        socket on ``config.tls_port``) when the server has a TLS context."""
        c = self.config
        if listener is None and c.plain:
            listener = listen(c.host, c.port)
        if self.tls is not None and tls_listener is None and c.tls_port >= 0:
            tls_listener = listen(c.host, c.tls_port)
        for sock in (listener, tls_listener):
            if sock is not None:  # the accept loop polls, noticing stop() within ACCEPT_POLL
                sock.setblocking(False)
        self._listener = listener
        self._tls_listener = tls_listener if self.tls is not None else None
        self.load.publish(0)
        self._stopping.clear()
        self._draining.clear()
        self._accepting = threading.Thread(target=self._accept_loop, name="dimse-accept")
        self._accepting.daemon = True
        self._accepting.start()
        if self._listener is not None:
            log.info("DIMSE %s listening on %s:%d", self.ae_title, c.host, self.port)
        if self._tls_listener is not None:
            log.info("DIMSE %s over TLS listening on %s:%d", self.ae_title, c.host, self.tls_port)

    def _accept_loop(self) -> None:
        # stop() clears the attributes, closes the sockets after us
        listeners: dict[int, tuple[socket.socket, ServerTls | None]] = {}
        if self._listener is not None:
            listeners[self._listener.fileno()] = (self._listener, None)
        if self._tls_listener is not None:
            listeners[self._tls_listener.fileno()] = (self._tls_listener, self.tls)
        waiting = select.poll()
        for fd in listeners:
            waiting.register(fd, select.POLLIN)
        while not self._stopping.is_set():
            ready = waiting.poll(ACCEPT_POLL * 1000)
            if not ready:
                continue
            if self.load.busier_than_another():
                time.sleep(BALANCE_DEFER)
                ready = waiting.poll(0)
                if not ready:
                    continue  # a less busy process took it
            for fd, _ in ready:
                listener, tls = listeners[fd]
                try:
                    sock, peer = listener.accept()
                except (TimeoutError, BlockingIOError, InterruptedError):
                    continue  # another worker process took it
                except OSError:
                    if self._stopping.is_set():
                        return
                    time.sleep(0.01)  # e.g. EMFILE: do not spin
                    continue
                self._admit(sock, peer[0], peer[1], tls)

    def _admit(
        self, sock: socket.socket, address: str, port: int, tls: ServerTls | None = None
    ) -> None:
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
            self._connections[id(sock)] = _Connection(sock, address, thread, bucket, refusal, tls)
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
        if self._listener is None and self._tls_listener is None:
            return
        self.drain()
        self.wait_idle(grace)
        self._stopping.set()
        listeners = (self._listener, self._tls_listener)
        self._listener = self._tls_listener = None
        if self._accepting is not None:
            self._accepting.join(timeout=2 + ACCEPT_POLL)
        for listener in listeners:  # no shutdown(): worker processes may share these sockets
            if listener is not None:
                listener.close()
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
        key = id(sock)
        try:
            with bound:
                with self._lock:
                    conn = self._connections.get(key)
                tls = conn.tls if conn is not None else None
                if tls is not None:
                    refused = conn is not None and bool(conn.refusal)
                    secured = self._handshake(sock, address, tls, key, refused)
                    if secured is None:
                        return
                    sock = secured
                assoc = self._negotiate(sock, address, key)
                if assoc is not None:
                    self._run(assoc)
        except Exception:
            log.exception("association with %s failed", address)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                conn = self._connections.pop(key, None)
                if conn is not None and not conn.refusal:
                    self.load.add_host(conn.bucket, -1)
                self._publish_load()

    def _publish_load(self) -> None:
        """Tell the other accepting processes how busy this one is (call holding the lock)."""
        established = sum(1 for c in self._connections.values() if not c.negotiating)
        self.load.set_established(established)
        if not self._draining.is_set():
            self.load.publish(len(self._connections))

    def _handshake(
        self, sock: socket.socket, address: str, tls: ServerTls, key: int, refused: bool
    ) -> TlsSocket | None:
        """The TLS handshake (PS3.15 B.9), within the ACSE timeout (:data:`REFUSE_WAIT` for a
        connection to be refused), in this connection's thread; a failure is one log line and
        the connection is closed."""
        tls.refresh()  # a renewed certificate, looked for at most once a second
        try:
            secured = tls.wrap(sock)
        except (OSError, ValueError) as exc:
            log.warning('tls handshake failed peer=%s reason="%s"', address, failure_reason(exc))
            return None
        with self._lock:
            conn = self._connections.get(key)
            if conn is not None:
                conn.sock = secured  # so a shutdown interrupts the handshake
        try:
            secured.settimeout(REFUSE_WAIT if refused else self.config.acse_timeout)
            secured.do_handshake()
        except (OSError, ValueError) as exc:
            reason = failure_reason(exc)
            log.warning('tls handshake failed peer=%s reason="%s"', address, reason)
            # A Security Alert, Node Authentication (PS3.15 A.5.3.11): who it was is unknown.
            self.archive.oversight.record(
                "authentication-failed",
                Identity("ae", "unknown", address, method="certificate"),
                "failure",
                reason=f"TLS handshake: {reason}",
            )
            with contextlib.suppress(OSError):
                secured.close()
            return None
        return secured

    def _certified_peer(self, sock: socket.socket) -> tuple[str, str] | None:
        """Over mutual TLS, the peer the client certificate names: (its AE title, the
        certificate's Common Name); None when no certificate was presented. A certificate
        that names no known peer answers ("", its Common Name)."""
        if not isinstance(sock, TlsSocket):
            return None
        certificate = sock.getpeercert()
        if not certificate:
            return None
        name = common_name(certificate)
        peer = self.archive.peers.by_certificate(name) if name else None
        return (peer.ae_title if peer is not None else "", name)

    def _negotiate(self, sock: socket.socket, address: str, key: int) -> Association | None:
        """Read the A-ASSOCIATE-RQ, whole, within the ACSE timeout of the connection (the
        ARTIM timer, PS3.8 9.1.5), and accept or reject it."""
        c = self.config
        accepted_at = time.monotonic()
        with self._lock:
            conn = self._connections.get(key)
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
        certified = self._certified_peer(sock)
        try:
            answer, agreed = negotiation.accept(
                request.body,
                self.policy,
                bool(refusal),
                address,
                "certificate" if certified is not None else "ae-title",
            )
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
        if certified is not None and certified[0] != agreed.calling_ae.strip():
            metrics.association_rejected(RJ_CALLING_AE)
            ae, name = certified
            log.warning(
                "rejecting association from %s: calling AE %s, but its TLS certificate (CN=%s) %s",
                address,
                agreed.calling_ae.strip(),
                name,
                f"names peer {ae}" if ae else "names no known peer",
            )
            with contextlib.suppress(OSError):
                sock.sendall(pdu.associate_rj(*RJ_CALLING_AE))
                _linger(sock)
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
        if certified is not None:
            assoc.method = "certificate"
        with self._lock:
            conn = self._connections.get(key)
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

    def _caller_refusal(self, calling_ae: str, address: str, method: str) -> str:
        """Why the archive's policy refuses an association from ``calling_ae`` at
        ``address``, authenticated by ``method`` ("" if it does not): unknown callers, a
        known AE from another host."""
        who = Identity.ae(
            calling_ae, address, method="certificate" if method == "certificate" else "ae-title"
        )
        try:
            self.archive.oversight.check(who, "associate")
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
