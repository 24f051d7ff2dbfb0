"""Audit messages to a syslog collector: RFC 5424 messages over TLS (RFC 5425, octet-counting
framing), plain TCP (RFC 6587 octet counting) or UDP (RFC 5426), as IHE ATNA's Record Audit
Event transaction sends them.

One message per audit record: PRI ``authpriv.notice`` (facility 10; ``warning`` when the
event failed), the record's time, the host name, APP-NAME (``audit.syslog_app_name``), the
process id, MSGID the event kind (``instances-stored``, ``query``, …), no structured data, and
the A.5 message's XML (UTF-8, after a BOM) as MSG.

:class:`SyslogSender` never holds up the work audited: records wait in a bounded queue for a
sender thread that connects (again, with a growing pause) when it must; when the queue is full
a record is dropped, counted (``vesalius_audit_syslog_messages_total{outcome="dropped"}``) and
logged. The index keeps every record whatever happens here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vesalius.errors import ConfigError
from vesalius.services.audit_trail import AuditRecord
from vesalius.telemetry import metrics

log = logging.getLogger(__name__)

#: authpriv (10), the facility of security and authorization messages (RFC 5424 6.2.1).
FACILITY = 10
NOTICE = 5
WARNING = 4
BOM = b"\xef\xbb\xbf"
SCHEMES = {"udp": 514, "tcp": 601, "tls": 6514}
_UDP_MAX = 65507


@dataclass(frozen=True)
class Collector:
    """Where the messages go: ``udp://``, ``tcp://`` or ``tls://host:port``."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Collector:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ConfigError(
                f"audit.syslog_url {url!r}: give udp://host:514, tcp://host:601 or tls://host:6514"
            )
        return cls(parts.scheme, parts.hostname, parts.port or SCHEMES[parts.scheme])


def format_message(record: AuditRecord, app_name: str, hostname: str, procid: int) -> bytes:
    """The RFC 5424 message of ``record`` (HEADER SP STRUCTURED-DATA SP MSG)."""
    severity = NOTICE if record.outcome in _SUCCESSFUL else WARNING
    pri = FACILITY * 8 + severity
    header = (
        f"<{pri}>1 {record.time} {_field(hostname, 255)} {_field(app_name, 48)} "
        f"{procid} {_field(record.kind, 32)} -"
    )
    return header.encode("ascii") + b" " + BOM + record.xml.encode("utf-8")


_SUCCESSFUL = {"success", "created", "replaced", "kept", "discarded"}


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` long, ``-`` if
    empty (RFC 5424 6)."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def tls_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client context for the collector: its certificate checked against ``ca_file`` (or
    the system's CAs) and its name; TLS 1.2 or later (RFC 5425 and BCP 195); our own
    certificate offered when given (collectors may require mutual TLS, as IHE ATNA does)."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class SyslogSender:
    """Sends audit records to one collector from its own thread (see the module's docstring);
    :meth:`submit` never blocks."""

    def __init__(
        self,
        collector: Collector,
        *,
        app_name: str = "vesalius",
        context: ssl.SSLContext | None = None,
        max_queue: int = 10_000,
        timeout: float = 10.0,
    ) -> None:
        self.collector = collector
        self.app_name = app_name
        self.context = context
        self.timeout = timeout
        self.hostname = socket.gethostname()
        self.sent = 0
        self.dropped = 0
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(max_queue)
        self._socket: socket.socket | None = None
        self._failing = False  # the last attempt failed: a close does not wait for it
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()

    def __call__(self, record: AuditRecord) -> None:
        self.submit(record)

    def submit(self, record: AuditRecord) -> None:
        """Queue ``record``; drop it (counted, logged) when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._drop(1, "the queue is full")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds; not at all while the collector
        cannot be reached), then stop."""
        if self._failing:
            self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._stopping.set()
        self._thread.join(1.0)
        self._disconnect()

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        for _ in range(count):
            metrics.audit_forwarded("dropped")
        if self.dropped == count or self.dropped % 1000 < count:  # the first, then every 1000
            log.warning(
                "audit: %d message(s) for the syslog collector %s:%d dropped so far (%s)",
                self.dropped,
                self.collector.host,
                self.collector.port,
                why,
            )

    def _run(self) -> None:
        pause = 0.5
        pending: AuditRecord | None = None
        while not self._stopping.is_set():
            if pending is None:
                pending = self._queue.get()
                if pending is None:
                    return
            try:
                self._send(format_message(pending, self.app_name, self.hostname, os.getpid()))
            except OSError as exc:
                self._failing = True
                self._disconnect()
                log.warning(
                    "audit: cannot send to the syslog collector %s://%s:%d: %s; trying again "
                    "in %.0f s",
                    self.collector.scheme,
                    self.collector.host,
                    self.collector.port,
                    exc,
                    pause,
                )
                if self._stopping.wait(pause):
                    break
                pause = min(pause * 2, 30.0)
                continue
            pause = 0.5
            self._failing = False
            pending = None
            self.sent += 1
            metrics.audit_forwarded("sent")

    def _send(self, message: bytes) -> None:
        if self.collector.scheme == "udp":
            sock = self._connected()
            sock.send(message[:_UDP_MAX])
            return
        sock = self._connected()
        sock.sendall(f"{len(message)} ".encode("ascii") + message)

    def _connected(self) -> socket.socket:
        if self._socket is not None:
            return self._socket
        address = (self.collector.host, self.collector.port)
        if self.collector.scheme == "udp":
            family = socket.getaddrinfo(*address, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family[0], socket.SOCK_DGRAM)
            sock.connect(family[4])
        else:
            sock = socket.create_connection(address, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.collector.scheme == "tls":
                context = self.context or tls_context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=self.collector.host)
                except BaseException:
                    sock.close()
                    raise
        self._socket = sock
        return sock

    def _disconnect(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None


def sender_for(
    url: str,
    *,
    app_name: str,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
    max_queue: int = 10_000,
) -> SyslogSender:
    """The sender ``audit.syslog_url`` names (a TLS context made from the files given)."""
    collector = Collector.parse(url)
    context = None
    if collector.scheme == "tls":
        for name in (ca_file, cert_file, key_file):
            if name and not Path(name).is_file():
                raise ConfigError(f"audit.syslog_url: no such file {name}")
        context = tls_context(ca_file, cert_file, key_file)
    return SyslogSender(collector, app_name=app_name, context=context, max_queue=max_queue)
