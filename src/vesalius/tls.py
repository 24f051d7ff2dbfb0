"""Transport Layer Security for DIMSE and HTTP: PS3.15 B.9 "BCP 195 TLS Secure Transport
Connection Profile, non-downgrading" (RFC 9325): TLS 1.2 and 1.3 only, forward-secret AEAD
cipher suites (ECDHE with AES-GCM or ChaCha20-Poly1305), no compression, no renegotiation.

:func:`server_context` and :func:`client_context` build the ``ssl.SSLContext``s from PEM files
(:class:`TlsFiles`); :class:`ServerTls` holds a live server context and loads the files again
when they change (checked at most once a second: by a watcher thread, and at each DIMSE
connection), so a renewed certificate is served to new connections without a restart; a new
pair that does not load keeps the old one and logs an error. Sockets the contexts make are
:class:`TlsSocket`\\ s: the DIMSE Upper Layer bounds its reads with the kernel's
``SO_RCVTIMEO`` (``dimse/transport.py``), which OpenSSL would retry forever, so on a TLS socket
those become Python timeouts, applied only when they change.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from vesalius.errors import ConfigError
from vesalius.settings import Settings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger(__name__)

#: TLS 1.2 suites of BCP 195 (RFC 9325 4.2): ephemeral ECDH key exchange with AEAD ciphers.
#: TLS 1.3's suites (all AEAD, all forward secret) are OpenSSL's defaults.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1"
#: How TLS clients are checked (``tls.verify_clients``): no certificate asked for, one checked
#: when presented, or one required.
VERIFY_CLIENTS = ("none", "optional", "required")
#: Seconds between two looks at the files' modification times.
CHECK_INTERVAL = 1.0
#: HTTP Strict Transport Security (RFC 6797) when HTTPS is on: one year.
HSTS = "max-age=31536000"

Verify = Literal["none", "optional", "required"]


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files (``tls.*``): our certificate chain and its key, and the certificates of
    the authorities we trust to sign peers' certificates (empty: the system's)."""

    certificate: str
    private_key: str
    ca_certificates: str = ""
    verify_clients: Verify = "none"

    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.certificate, self.private_key, self.ca_certificates) if p)


def files_from(settings: Settings) -> TlsFiles | None:
    """The PEM files ``tls.*`` name; None when neither a certificate nor authorities are set."""
    if not settings["tls.certificate"] and not settings["tls.ca_certificates"]:
        return None
    return TlsFiles(
        settings["tls.certificate"],
        settings["tls.private_key"],
        settings["tls.ca_certificates"],
        settings["tls.verify_clients"],
    )


class TlsSocket(ssl.SSLSocket):
    """An ``SSLSocket`` for the DIMSE Upper Layer: ``SO_RCVTIMEO``/``SO_SNDTIMEO`` set on it
    are kept and applied as the socket's timeout before each read or write (a blocking
    ``SSLSocket`` whose kernel timer expires would retry the read for ever); ``sendmsg`` is
    one ``sendall`` of the joined parts (TLS encrypts records from one buffer)."""

    _receive_timeout: float | None = None
    _send_timeout: float | None = None

    def setsockopt(  # type: ignore[override]
        self, level: int, optname: int, value: int | ReadableBuffer, /
    ) -> None:
        if (
            level == socket.SOL_SOCKET
            and optname in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO)
            and not isinstance(value, int)
        ):
            whole, micro = struct.unpack("@ll", bytes(value))
            seconds = (whole + micro / 1_000_000) or None
            if optname == socket.SO_RCVTIMEO:
                self._receive_timeout = seconds
            else:
                self._send_timeout = seconds
            return
        super().setsockopt(level, optname, value)

    def settimeout(self, value: float | None, /) -> None:
        super().settimeout(value)
        self._receive_timeout = self._send_timeout = value

    def _use(self, timeout: float | None) -> None:
        if timeout != self.gettimeout():  # settimeout costs a system call: only on a change
            super().settimeout(timeout)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self._use(self._receive_timeout)
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._use(self._send_timeout)
        super().sendall(data, flags)

    def sendmsg(  # type: ignore[override]
        self, buffers: Iterable[ReadableBuffer], *_args: Any, **_kwargs: Any
    ) -> int:
        data = b"".join(bytes(b) for b in buffers)
        self.sendall(data)
        return len(data)


def _protocol(context: ssl.SSLContext) -> ssl.SSLContext:
    """The BCP 195 non-downgrading settings every context shares."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    context.sslsocket_class = TlsSocket
    return context


def _load_chain(context: ssl.SSLContext, files: TlsFiles) -> None:
    """``load_cert_chain``, its failures as a :class:`ConfigError` naming the setting."""
    for key, path in (
        ("tls.certificate", files.certificate),
        ("tls.private_key", files.private_key),
    ):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{key} {path}: cannot read it: {exc.strerror}") from None
    try:
        context.load_cert_chain(files.certificate, files.private_key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(
                f"tls.private_key {files.private_key} is not the key of tls.certificate "
                f"{files.certificate}: give the pair that belongs together"
            ) from None
        raise ConfigError(
            f"tls.certificate {files.certificate} and tls.private_key {files.private_key} do not "
            f"load as a PEM certificate chain and its unencrypted key: {exc.reason or exc}"
        ) from None


def _load_authorities(context: ssl.SSLContext, files: TlsFiles) -> None:
    if not files.ca_certificates:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return
    try:
        context.load_verify_locations(cafile=files.ca_certificates)
    except OSError as exc:
        reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"tls.ca_certificates {files.ca_certificates}: cannot load it as PEM certificates: "
            f"{reason}"
        ) from None


def server_context(files: TlsFiles, *, http: bool = False) -> ssl.SSLContext:
    """A server context with our certificate; for DIMSE it asks for client certificates,
    checked against ``ca_certificates``, as ``verify_clients`` says (mutual TLS). ``http``:
    ALPN http/1.1 and no client certificates (browsers would prompt for one; HTTP clients are
    authenticated as users)."""
    context = _protocol(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(context, files)
    if files.verify_clients != "none" and not http:
        if not files.ca_certificates:
            raise ConfigError(
                f"tls.verify_clients is {files.verify_clients}: set tls.ca_certificates to the "
                "authorities that sign the clients' certificates"
            )
        _load_authorities(context, files)
        context.verify_mode = (
            ssl.CERT_REQUIRED if files.verify_clients == "required" else ssl.CERT_OPTIONAL
        )
    if http:
        context.set_alpn_protocols(["http/1.1"])
    return context


def client_context(files: TlsFiles | None) -> ssl.SSLContext:
    """A client context: the server's certificate is checked against ``ca_certificates`` (or
    the system's authorities) and its name against the host called; our certificate, when
    configured, is presented for mutual TLS."""
    context = _protocol(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if files is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    _load_authorities(context, files)
    if files.certificate:
        _load_chain(context, files)
    return context


class ClientTls:
    """The client context for calling peers over TLS, made on first use (so a command that
    calls no TLS peer reads no certificate)."""

    def __init__(self, files: TlsFiles | None) -> None:
        self.files = files
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    @property
    def context(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = client_context(self.files)
            return self._context


def _stamps(paths: Iterable[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0))
    return tuple(out)


class ServerTls:
    """A live server context (:func:`server_context`) that follows its files: :meth:`refresh`
    loads them into the same context when their modification times change, so handshakes
    from then on use them. Every instance joins :func:`reload_all` and the watcher."""

    def __init__(self, files: TlsFiles, *, http: bool = False) -> None:
        self.files = files
        self.http = http
        self.context = server_context(files, http=http)
        self._stamps = _stamps(files.paths())
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        with _LIVE_LOCK:
            _LIVE.add(self)

    def wrap(self, sock: socket.socket) -> TlsSocket:
        """``sock`` as the server side of a TLS connection, the handshake not yet done."""
        with self._lock:  # not while load_cert_chain changes the context
            wrapped = self.context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        assert isinstance(wrapped, TlsSocket)
        return wrapped

    def refresh(self, *, force: bool = False, files: TlsFiles | None = None) -> bool:
        """Load the files again if they changed (looked at no more than once a second unless
        ``force``); True if a new certificate is in use. A pair that does not load is logged
        and the running one stays."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_INTERVAL:
            return False
        self._checked = now
        wanted = files or self.files
        stamps = _stamps(wanted.paths())
        if not force and stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            with self._lock:
                _load_chain(self.context, wanted)
                if wanted.verify_clients != "none" and wanted.ca_certificates and not self.http:
                    _load_authorities(self.context, wanted)
        except ConfigError as exc:
            log.error("tls: the new certificate does not load, the running one stays: %s", exc)
            return False
        self.files = wanted
        log.warning(
            "tls: certificate %s loaded (%s)",
            wanted.certificate,
            "HTTPS" if self.http else "DIMSE",
        )
        return True


#: The live server contexts of this process (a context goes when its server does).
_LIVE: weakref.WeakSet[ServerTls] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_watcher: threading.Thread | None = None


def _live() -> list[ServerTls]:
    with _LIVE_LOCK:
        return list(_LIVE)


def reload_all(files: TlsFiles | None = None) -> None:
    """Load the certificates again into every live server context of this process (SIGHUP,
    ``reload.py``); ``files``: the paths of the re-read settings (``tls.verify_clients`` is
    kept as it started: a restart changes it)."""
    for server in _live():
        wanted = server.files
        if files is not None:
            wanted = TlsFiles(
                files.certificate,
                files.private_key,
                files.ca_certificates,
                server.files.verify_clients,
            )
        server.refresh(force=True, files=wanted)


def watch() -> None:
    """Start (once per process, when it has a live context) a thread that looks at the live
    contexts' files each second."""
    global _watcher
    with _LIVE_LOCK:
        if _watcher is not None or not _LIVE:
            return
        _watcher = threading.Thread(target=_watch_loop, name="tls-watch", daemon=True)
    _watcher.start()


def _watch_loop() -> None:
    while True:
        time.sleep(CHECK_INTERVAL)
        for server in _live():
            with contextlib.suppress(Exception):
                server.refresh()


#: OpenSSL reasons for a failed handshake, as an operator reads them.
_REASONS = {
    "WRONG_VERSION_NUMBER": "not a TLS client (plain DICOM on the TLS port?)",
    "HTTP_REQUEST": "not a TLS client (plain HTTP on the TLS port)",
    "UNKNOWN_PROTOCOL": "not a TLS client",
    "UNSUPPORTED_PROTOCOL": "TLS version refused (TLS 1.2 or 1.3 only)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "TLS version refused (TLS 1.2 or 1.3 only)",
    "NO_SHARED_CIPHER": "no cipher suite in common (BCP 195 suites only)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate (tls.verify_clients = required)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the authority of our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
}


#: OpenSSL verify codes (x509_vfy.h) of a certificate whose authority we do not trust.
_UNTRUSTED = {
    18: "a self-signed certificate, not in tls.ca_certificates",
    19: "a certificate chain ending in an authority not in tls.ca_certificates",
    20: "a certificate signed by an authority not in tls.ca_certificates",
}


def failure_reason(exc: BaseException) -> str:
    """Why a handshake failed, in words (``certificate has expired``, ``not a TLS client``)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        hint = _UNTRUSTED.get(exc.verify_code)
        return f"{hint} ({exc.verify_message})" if hint else str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        return _REASONS.get(reason, reason.replace("_", " ").lower() or str(exc))
    if isinstance(exc, TimeoutError):
        return "no handshake within dicom.acse_timeout"
    if isinstance(exc, ConnectionError):
        return "connection closed during the handshake"
    return str(exc) or type(exc).__name__


def common_name(certificate: dict[str, Any] | None) -> str:
    """The subject Common Name of a certificate as ``getpeercert`` gives it ("" if none)."""
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def fingerprint(der: bytes | None) -> str:
    """``sha256:HEX`` of a DER certificate ("" if none)."""
    return "sha256:" + hashlib.sha256(der).hexdigest() if der else ""
