"""Known remote Application Entities: C-MOVE destinations, targets of ``vesalius send``, and
(with ``dicom.known_callers_only``) the only callers accepted.

They live in the index database (table ``peers``), so every node and the coming admin UI
share one list. The settings' ``[modalities]`` seed it at each start (:meth:`PeerDirectory.seed`):
those entries are inserted or updated, and the ones the settings no longer name are removed;
peers added otherwise (the admin UI, another node's API) are left alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit, urlunsplit

from vesalius.errors import ConfigError, InvalidDataError, NotFoundError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.peers import (
    PeerRow,
    all_peers,
    delete_peer,
    peer_by_ae,
    peer_by_certificate,
    peer_by_name,
    save_peer,
    sync_seeded,
)
from vesalius.services.oversight import Oversight
from vesalius.settings import PEER_PERMISSIONS, Modality, parse_permissions

log = logging.getLogger(__name__)

#: Every permission a peer may have (``[modalities]``' ``permissions``).
PERMISSION_NAMES: tuple[str, ...] = tuple(PEER_PERMISSIONS)
#: What a known peer may do unless its entry says otherwise (docs/security.md, "Remote AEs").
DEFAULT_PERMISSIONS = frozenset({"echo", "store", "find", "move", "get"})


class SettingsPeerError(ConfigError):
    """The peer comes from the settings' ``[modalities]``: change it there."""

    http_status = 409


class InvalidPeerError(InvalidDataError):
    """A peer as given breaks a rule; ``fields`` holds each field's problem."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


#: A peer's name: what ``[modalities.NAME]`` and the URL path can carry.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9._:\-\[\]%]{1,253}$")


def check_name(name: str) -> str | None:
    """The problem with ``name`` as a peer's name, or None."""
    if not NAME_RE.match(name):
        return "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def check_ae_title(ae_title: str) -> str | None:
    """The problem with ``ae_title``, or None (PS3.5 6.2, VR AE: at most 16 characters of the
    default repertoire, no backslash or control character; leading and trailing spaces are
    not significant, and an AE title of spaces only is not allowed)."""
    if not ae_title.strip(" "):
        return "must not be empty"
    if len(ae_title) > 16:
        return "at most 16 characters (PS3.5 6.2)"
    if any(not (" " <= c <= "~") or c == "\\" for c in ae_title):
        return "ASCII letters, digits, spaces and punctuation only, no backslash (PS3.5 6.2)"
    return None


@dataclass(frozen=True)
class EchoResult:
    """How a C-ECHO to a peer went (PS3.7 9.1.5): ``status`` is the response's, None when
    none came (refused, unreachable, timed out)."""

    ok: bool
    status: int | None
    message: str
    milliseconds: float


#: Calls a peer with a C-ECHO: given by the wiring (``dimse/scu/echo.py``).
Echoer = Callable[["Peer"], tuple[int | None, str]]


def check_dicomweb_url(url: str) -> str | None:
    """``url`` as a peer's DICOMweb base URL (PS3.18 8.2: an absolute http or https URL,
    without query or fragment; the trailing ``/`` dropped), ``None`` for an empty one."""
    url = url.strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"DICOMweb URL {url!r}: not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"DICOMweb URL {url!r}: give an absolute http:// or https:// URL")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise ConfigError(f"DICOMweb URL {url!r}: no query, fragment or spaces")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"DICOMweb URL {url!r}: its port is not a port number") from None
    return url.rstrip("/")


#: The logins a peer's DICOMweb service may need: none, HTTP Basic (RFC 7617: a user name and
#: password) or a bearer token (RFC 6750).
WEB_LOGINS = ("none", "basic", "bearer")
_VISIBLE = re.compile(r"^[\x21-\x7e]+$")


def split_userinfo(url: str) -> tuple[str, str | None, str]:
    """``url`` without a ``user:password@`` part, and that user (None: there was none) and
    password, unquoted (RFC 3986 3.2.1)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None, ""
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, unquote(parts.username), unquote(parts.password or "")


@dataclass(frozen=True)
class WebLogin:
    """How we log in to a peer's DICOMweb service: ``kind`` ``""`` (none), ``basic`` with
    ``user`` and ``secret`` the password, or ``bearer`` with ``secret`` the token. The secret
    is kept to be sent and is never shown (not in ``repr``, the API, the audit trail)."""

    kind: str = ""
    user: str = ""
    secret: str = field(default="", repr=False)


def resolve_login(
    current: WebLogin,
    url: str | None,
    kind: str | None,
    user: str | None,
    secret: str | None,
) -> tuple[str | None, WebLogin, dict[str, str]]:
    """The DICOMweb URL and login a change asks for, and each field's problem. ``kind`` None
    keeps the current login (its kind, user and secret); an empty or absent ``secret`` keeps
    the current one when the kind stays the same (the secret is write-only: a form that edits
    a peer does not know it). A ``user:password@`` in the URL becomes a Basic login, and the
    URL is kept without it."""
    problems: dict[str, str] = {}
    if url is not None:
        url, url_user, url_password = split_userinfo(url)
        if url_user is not None:
            if kind not in (None, "basic") or user or secret:
                problems["dicomweb_url"] = (
                    "a user and password both in the URL and in the login: give them once"
                )
            kind, user, secret = "basic", url_user, url_password
    if kind is None:
        return url, current if url else WebLogin(), problems
    if kind in ("none", ""):
        return url, WebLogin(), problems
    if kind not in WEB_LOGINS:
        problems["dicomweb_auth"] = "none, basic or bearer"
        return url, current, problems
    if not url:
        problems["dicomweb_auth"] = "a login needs a DICOMweb URL"
    kept = current.secret if current.kind == kind else ""
    secret = secret or kept
    name = ""
    if kind == "basic":
        name = current.user if user is None and current.kind == "basic" else (user or "")
        if not name or ":" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            problems["dicomweb_user"] = "a user name, without ':' or control characters"
        if not secret or any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
            problems["dicomweb_secret"] = "the password, without control characters"
    elif not secret or not _VISIBLE.match(secret):
        problems["dicomweb_secret"] = "the token: visible ASCII characters, no spaces"
    if len(secret) > 4096:
        problems["dicomweb_secret"] = "at most 4096 characters"
    return url, WebLogin(kind, name, secret), problems


@dataclass(frozen=True)
class Peer:
    """A known remote AE and what it may do."""

    name: str
    ae_title: str
    host: str
    port: int
    permissions: frozenset[str] = DEFAULT_PERMISSIONS
    source: str = "admin"
    #: Called over TLS; the client certificate Common Name naming it (empty: ``name``).
    tls: bool = False
    certificate_subject: str = ""
    #: Its DICOMweb base URL (PS3.18), if it is reached that way too.
    dicomweb_url: str | None = None
    #: The login its DICOMweb service needs (none by default).
    dicomweb_login: WebLogin = WebLogin()

    @classmethod
    def of(cls, row: PeerRow) -> Peer:
        return cls(
            row.name,
            row.ae_title,
            row.host,
            row.port,
            row.permissions,
            row.source,
            row.tls,
            row.certificate_subject,
            row.dicomweb_url,
            WebLogin(row.dicomweb_auth, row.dicomweb_user, row.dicomweb_secret),
        )

    def row(self) -> PeerRow:
        return PeerRow(
            self.name,
            self.ae_title,
            self.host,
            self.port,
            self.permissions,
            self.source,
            self.tls,
            self.certificate_subject,
            self.dicomweb_url,
            self.dicomweb_login.kind,
            self.dicomweb_login.user,
            self.dicomweb_login.secret,
        )


class PeerDirectory:
    """The known remote AEs, by name and by AE title, from the index database."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        oversight: Oversight | None = None,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.catalog = catalog
        #: The authorization point for administering peers (:meth:`configure`, :meth:`drop`).
        self.oversight = oversight or Oversight()
        #: Called after this process changed a peer (the policy's cache forgets its copy).
        self.changed = changed
        #: Calls a peer with a C-ECHO (the wiring's, ``dimse/scu/echo.py``): status, message.
        self.echoer: Echoer | None = None

    def configure(
        self,
        name: str,
        who: Identity,
        *,
        address: str | None = None,
        permissions: frozenset[str] | None = None,
        host: str | None = None,
        dicomweb_url: str | None = None,
    ) -> Peer:
        """Add a peer (``address``: ``AET@HOST:PORT``) or change one an administrator added:
        its address, its permissions, its host, its DICOMweb URL (``""`` removes it). Peers
        from the settings' ``[modalities]`` are changed there (the next start or reload would
        undo a change here)."""
        self.oversight.check(who, "admin")
        current = self.by_name(name)
        if current is not None and current.source == "settings":
            raise SettingsPeerError(
                f"peer {name} comes from the settings ([modalities.{name}] or "
                f"VESALIUS_MODALITY_{name}): change it there"
            )
        if address is not None:
            parsed = Modality.parse(address, name)
            base = Peer(name, parsed.ae_title, parsed.host, parsed.port)
            if current is not None:
                base = replace(base, permissions=current.permissions)
        elif current is None:
            raise NotFoundError(f"no peer named {name!r}: give its AET@HOST:PORT to add it")
        else:
            base = current
        web, login = base.dicomweb_url, base.dicomweb_login
        if dicomweb_url is not None:
            web, login, problems = resolve_login(
                login, check_dicomweb_url(dicomweb_url), None, None, None
            )
            if problems:
                raise InvalidPeerError(problems)
        peer = replace(
            base,
            permissions=base.permissions if permissions is None else permissions,
            host=base.host if host is None else host,
            source="admin",
            dicomweb_url=web,
            dicomweb_login=login,
        )
        self.save(peer)
        self.oversight.record(
            "peer-changed",
            who,
            peer=name,
            ae_title=peer.ae_title,
            host=peer.host,
            permissions=sorted(peer.permissions),
            dicomweb_url=peer.dicomweb_url,
            dicomweb_auth=peer.dicomweb_login.kind or "none",
        )
        return peer

    def put(
        self,
        name: str,
        who: Identity,
        *,
        ae_title: str,
        host: str,
        port: int,
        permissions: Iterable[str] | None = None,
        tls: bool = False,
        dicomweb_url: str | None = None,
        dicomweb_auth: str | None = None,
        dicomweb_user: str | None = None,
        dicomweb_secret: str | None = None,
    ) -> tuple[Peer, bool]:
        """Create or replace the peer ``name`` with exactly these values (the REST API's
        ``PUT``); the peer, and whether it is new. The DICOMweb login is the exception: its
        secret is write-only, so an absent ``dicomweb_auth`` keeps the stored login and an
        absent ``dicomweb_secret`` the stored secret (:func:`resolve_login`).
        :class:`InvalidPeerError` names each field that breaks a rule; a peer from the settings
        is changed there."""
        self.oversight.check(who, "admin")
        problems: dict[str, str] = {}
        for field_name, problem in (
            ("name", check_name(name)),
            ("ae_title", check_ae_title(ae_title)),
            ("host", None if _HOST_RE.match(host.strip()) else "a host name or IP address"),
            ("port", None if 1 <= port <= 65535 else "a TCP port, 1 to 65535"),
        ):
            if problem is not None:
                problems[field_name] = problem
        wanted = DEFAULT_PERMISSIONS
        if permissions is not None:
            try:
                wanted = parse_permissions(list(permissions))
            except ConfigError as exc:
                problems["permissions"] = exc.message
        web: str | None = None
        try:
            web = check_dicomweb_url(dicomweb_url or "")
        except ConfigError as exc:
            problems["dicomweb_url"] = exc.message
        current = self.by_name(name) if not problems.get("name") else None
        web, login, login_problems = resolve_login(
            current.dicomweb_login if current is not None else WebLogin(),
            web,
            dicomweb_auth,
            dicomweb_user,
            dicomweb_secret,
        )
        if "dicomweb_url" not in problems:
            problems.update(login_problems)
        if problems:
            raise InvalidPeerError(problems)
        if current is not None and current.source == "settings":
            raise SettingsPeerError(
                f"peer {name} comes from the settings ([modalities.{name}] or "
                f"VESALIUS_MODALITY_{name}): change it there"
            )
        peer = Peer(
            name,
            ae_title.strip(" "),
            host.strip(),
            port,
            wanted,
            "admin",
            tls,
            current.certificate_subject if current is not None else "",
            web,
            login,
        )
        self.save(peer)
        self.oversight.record(
            "peer-changed",
            who,
            peer=name,
            ae_title=peer.ae_title,
            host=peer.host,
            port=peer.port,
            permissions=sorted(peer.permissions),
            tls=peer.tls,
            dicomweb_url=peer.dicomweb_url,
            dicomweb_auth=login.kind or "none",
            dicomweb_user=login.user,
        )
        return peer, current is None

    def get(self, name: str, who: Identity) -> Peer:
        """The peer ``name`` (administrators only: addresses are configuration)."""
        self.oversight.check(who, "admin")
        found = self.by_name(name)
        if found is None:
            raise NotFoundError(f"no peer named {name!r}")
        return found

    def listed(self, who: Identity) -> list[Peer]:
        """Every known peer, by name (administrators only)."""
        self.oversight.check(who, "admin")
        return self.all()

    def echo(self, name: str, who: Identity) -> EchoResult:
        """Verify the peer ``name`` answers: a C-ECHO over an association we open (PS3.7
        9.1.5), timed from the connection to the response."""
        peer = self.get(name, who)
        if self.echoer is None:
            raise ConfigError("this process cannot call peers (no DIMSE client wired)")
        began = time.perf_counter()
        status, message = self.echoer(peer)
        elapsed = (time.perf_counter() - began) * 1000
        result = EchoResult(status == 0, status, message, round(elapsed, 1))
        self.oversight.record(
            "peer-echoed",
            who,
            "success" if result.ok else "failure",
            peer=name,
            ae_title=peer.ae_title,
            status=status,
            message=message,
        )
        return result

    def drop(self, name: str, who: Identity) -> bool:
        """Remove a peer an administrator added."""
        self.oversight.check(who, "admin")
        current = self.by_name(name)
        if current is not None and current.source == "settings":
            raise SettingsPeerError(f"peer {name} comes from the settings: remove it there")
        removed = self.remove(name)
        self.oversight.record("peer-removed", who, peer=name, removed=removed)
        return removed

    def seed(self, modalities: Mapping[str, Modality] | Iterable[Modality]) -> None:
        """Make the peers from the settings exactly ``modalities`` (see the module's text)."""
        items = modalities.values() if isinstance(modalities, Mapping) else modalities
        seeded = [
            PeerRow(
                m.name,
                m.ae_title,
                m.host,
                m.port,
                DEFAULT_PERMISSIONS if m.permissions is None else m.permissions,
                "settings",
                m.tls,
                m.certificate_subject,
            )
            for m in items
        ]
        with self.catalog.write() as conn:
            saved, removed = sync_seeded(conn, seeded)
        self.changed()
        if saved or removed:
            log.info("peers: %d from the settings, %d no longer there removed", saved, removed)

    def all(self) -> list[Peer]:
        with self.catalog.read() as conn:
            return [Peer.of(row) for row in all_peers(conn)]

    def by_ae(self, ae_title: str) -> Peer | None:
        """The known peer with this AE title, if any."""
        with self.catalog.read() as conn:
            found = peer_by_ae(conn, ae_title)
        return None if found is None else Peer.of(found)

    def by_certificate(self, common_name: str) -> Peer | None:
        """The peer a client certificate names (mutual TLS): by ``certificate_subject``, or
        by name for a peer without one."""
        with self.catalog.read() as conn:
            found = peer_by_certificate(conn, common_name)
        return None if found is None else Peer.of(found)

    def by_name(self, name: str) -> Peer | None:
        with self.catalog.read() as conn:
            found = peer_by_name(conn, name)
        return None if found is None else Peer.of(found)

    def save(self, peer: Peer) -> None:
        with self.catalog.write() as conn:
            save_peer(conn, peer.row())
        self.changed()

    def remove(self, name: str) -> bool:
        with self.catalog.write() as conn:
            removed = delete_peer(conn, name)
        self.changed()
        return removed
