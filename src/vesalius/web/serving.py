"""Running the HTTP application with uvicorn on a socket bound by the caller.

The main process binds the HTTP port once and every DIMSE worker process serves HTTP on the
same socket too (``vesalius/processes.py``), so concurrent HTTP clients (STOW-RS uploads, a viewer's
parallel frame requests) use more than one core, as concurrent associations do.

uvicorn alone never closes a connection that sends nothing, or half a request, and reads a body
that stalls forever; :class:`GuardedProtocol` bounds each phase of a connection with a timeout,
caps the connections of a process, and refuses a declared body over the upload limit before the
application runs (docs/security.md, "HTTP").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import FrameType
from typing import Any, ClassVar

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from vesalius.tls import ServerTls

log = logging.getLogger(__name__)

#: After a refusal the server still reads (and drops) this much for this long, so a client
#: that is still sending reads the answer rather than a reset connection ("lingering close").
LINGER_BYTES = 16 << 20
LINGER_SECONDS = 2.0
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, drops unsent data
#: The ASGI scope extension holding an :class:`asyncio.Event` set when the server begins to
#: stop: a response that would never end by itself (server-sent events) ends when it is set,
#: so it does not hold the drain for the whole grace period.
STOPPING = "vesalius.stopping"


def stopping_event(scope: Any) -> asyncio.Event | None:
    """The event set when the server serving this request begins to stop (None: a server
    without it, such as a test client)."""
    found = scope.get("extensions", {}).get(STOPPING)
    return found if isinstance(found, asyncio.Event) else None


@dataclass(frozen=True)
class HttpLimits:
    """The ``http.*`` bounds of one server process (docs/configuration.md)."""

    header_timeout: float
    keepalive_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int
    max_body: int  # bytes; 0: no limit


def connection_cap(configured: int) -> int:
    """``configured``, lowered to leave a quarter of the descriptors to everything else."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft * 3 // 4:
        return configured
    cap = max(1, soft * 3 // 4)
    log.warning(
        "open-file limit %d leaves room for %d HTTP connections, not http.max_connections = %d",
        soft,
        cap,
        configured,
    )
    return cap


def _answer(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, with a JSON error body."""
    body = json.dumps({"status": status, "error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with timeouts, a connection cap and an early 413.

    - connect → request line and headers complete: ``header_timeout`` (also from the first byte
      of each later request); then 408 and close.
    - idle between requests: uvicorn's own keep-alive timer.
    - body: ``body_timeout`` without a byte while the server reads it (not while uvicorn's flow
      control has paused reading for a slow application, nor before a client that expects
      ``100 Continue`` was asked for it); then 408 unless a response started, and close.
    - response: ``send_timeout`` with the transport's writing paused (the client reads nothing);
      then the connection is aborted.
    - more than ``max_connections`` open in this process: 503 and close, before reading.
    - a declared Content-Length over ``max_body``: 413 before the application runs; what the
      client still sends is read and dropped for :data:`LINGER_SECONDS`, then close.

    It relies on these uvicorn 0.55 ``HttpToolsProtocol`` internals: the attributes
    ``loop``, ``transport``, ``flow`` (``read_paused``, ``write_paused``), ``connections``,
    ``headers`` (lower-cased names), ``cycle`` (``response_started``, ``response_complete``,
    ``waiting_for_100_continue``, ``disconnected``, ``message_event``) and
    ``timeout_keep_alive_task``, and the parser callbacks it overrides.
    """

    limits: ClassVar[HttpLimits]
    _crowded: ClassVar[bool] = False  # at the connection cap (logged once per episode)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0  # loop time of the last body bytes (or of the head)
        self._lingering: int | None = None  # bytes dropped since a refusal; None: not refused
        self._stopping = asyncio.Event()  # set at shutdown: see STOPPING

    def _arm(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback)

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cls = type(self)
        if len(self.connections) > self.limits.max_connections:
            if not cls._crowded:
                cls._crowded = True
                log.warning(
                    "HTTP: %d connections open, the most allowed: refusing more with 503",
                    self.limits.max_connections,
                )
            transport.write(_answer(503, "too many connections"))
            transport.close()
            return
        if cls._crowded and len(self.connections) < self.limits.max_connections * 9 // 10:
            cls._crowded = False
        self._header_timer = self._arm(self.limits.header_timeout, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._body_timer, self._send_timer, self._linger_timer):
            _cancel(timer)
        self._header_timer = self._body_timer = self._send_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        super().data_received(data)
        idle = self.cycle is None or self.cycle.response_complete
        untimed = self._header_timer is None and self._body_timer is None
        if (
            idle
            and untimed
            and self._lingering is None
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            # Bytes that begin no request (stray CRLFs, the rest of a body the response did not
            # wait for) must not leave the connection without a timer.
            self._header_timer = self._arm(self.limits.header_timeout, self._header_timeout)

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        if self._lingering is not None:
            return
        super().on_message_begin()
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
        extensions[STOPPING] = self._stopping
        if self._header_timer is None:
            self._header_timer = self._arm(self.limits.header_timeout, self._header_timeout)

    def on_headers_complete(self) -> None:
        if self._lingering is not None:
            return
        _cancel(self._header_timer)
        self._header_timer = None
        declared = self._content_length()
        if self.limits.max_body and declared > self.limits.max_body:
            self._refuse_body(declared)
            return
        super().on_headers_complete()
        self._body_seen = self.loop.time()
        self._body_timer = self._arm(self.limits.body_timeout, self._body_timeout)

    def on_body(self, body: bytes) -> None:
        if self._lingering is not None:
            return
        self._body_seen = self.loop.time()  # the timer looks at this when it fires
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._lingering is not None:
            return
        _cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()

    def _content_length(self) -> int:
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit():
                return int(value)
        return 0

    def _refuse_body(self, declared: int) -> None:
        """413 at once for a body declared over the limit; then drop what still comes."""
        mib = self.limits.max_body >> 20
        log.info("HTTP: refused a %d-byte request body (limit %d MiB)", declared, mib)
        self.transport.write(_answer(413, f"request body is over the {mib} MiB limit"))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._lingering = 0
        self._linger_timer = self._arm(LINGER_SECONDS, self.transport.close)

    def shutdown(self) -> None:
        """The server begins to stop: a response under way finishes (uvicorn's graceful
        shutdown), and one that never ends by itself is told to (:data:`STOPPING`)."""
        self._stopping.set()
        super().shutdown()

    # -------------------------------------------------------------- flow control

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self._arm(self.limits.send_timeout, self._send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        _cancel(self._send_timer)
        self._send_timer = None

    # -------------------------------------------------------------- timeouts

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self._give_up(408, "request headers took too long")
        else:
            self._give_up(None, "")  # a pipelined request's response is still under way

    def _body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        now = self.loop.time()
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The application is not reading yet: the client is not the one stalling.
            self._body_seen = now
        silent = now - self._body_seen
        if silent < self.limits.body_timeout:
            self._body_timer = self._arm(self.limits.body_timeout - silent, self._body_timeout)
            return
        started = cycle is not None and cycle.response_started
        self._give_up(None if started else 408, "request body stalled")

    def _send_timeout(self) -> None:
        self._send_timer = None
        if self.flow.write_paused:
            log.info("HTTP: closing a connection whose client reads nothing")
            # A reset: a plain close would leave the kernel holding the unsent response
            # (FIN-WAIT-1 behind a zero window) until its own probes give up.
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.transport.abort()

    def _give_up(self, status: int | None, message: str) -> None:
        """End the connection: the request in progress sees a disconnect."""
        if self.transport.is_closing():
            return
        log.debug("HTTP: closing a connection: %s", message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's later sends are dropped
            cycle.message_event.set()
        if status is not None:
            self.transport.write(_answer(status, message))
        self.transport.close()


def guarded_protocol(limits: HttpLimits) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` class bound to ``limits`` (uvicorn instantiates it)."""

    class BoundGuardedProtocol(GuardedProtocol):
        pass

    BoundGuardedProtocol.limits = limits
    return BoundGuardedProtocol


class HttpServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its own shutdown, which would kill the process
    before the DIMSE side drains; here a signal only asks the server to exit. Worker processes
    ignore SIGINT (``ignore_sigint``): the main process decides when they stop. ``on_exit`` is
    called when a signal asks it to exit, so the rest of the process starts its own drain at
    the same moment (``vesalius/shutdown.py``)."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        ignore_sigint: bool = False,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.ignore_sigint = ignore_sigint
        self.on_exit = on_exit

    def request_exit(self) -> None:
        """Ask the server to exit (it checks between its ticks), as a signal would."""
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and self.ignore_sigint:
            return
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
        if self.on_exit is not None:
            self.on_exit()


class CancelledAtShutdown(logging.Filter):
    """uvicorn logs a request it cancels when the grace period is over (``shutdown_grace``) as
    "Exception in ASGI application" with a traceback of ``CancelledError``; say it in a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError):
            record.msg, record.args, record.exc_info = (
                "HTTP request cancelled at shutdown",
                (),
                None,
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def http_server(
    app: Starlette,
    limits: HttpLimits,
    *,
    ignore_sigint: bool = False,
    grace: float | None = None,
    on_exit: Callable[[], None] | None = None,
    tls: ServerTls | None = None,
) -> HttpServer:
    """A uvicorn server for ``app`` within ``limits``, to ``run(sockets=[...])`` (address from
    the socket); at exit, requests in flight get ``grace`` seconds (None: without limit).
    ``tls``: HTTPS with that live context (a renewed certificate serves new handshakes)."""
    extra: dict[str, Any] = {}
    if tls is not None:
        extra["ssl_context_factory"] = lambda _config, _default: tls.context
    config = uvicorn.Config(
        app,
        log_config=None,  # uvicorn's records go to the root logger's handlers (vesalius.logs)
        log_level=None,
        access_log=False,  # web/access.py writes the access log
        lifespan="off",
        http=guarded_protocol(limits),
        ws="none",
        # Annotated int, but only ever handed to loop.call_later.
        timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]
        # Annotated int, but only ever handed to asyncio.timeout.
        timeout_graceful_shutdown=grace,  # type: ignore[arg-type]
        **extra,
    )
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, CancelledAtShutdown) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(CancelledAtShutdown())
    return HttpServer(config, ignore_sigint=ignore_sigint, on_exit=on_exit)


def bind_http(host: str, port: int) -> socket.socket:
    """The listening HTTP socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)
