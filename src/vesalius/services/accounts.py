"""Users, API tokens and login sessions: who a request is (issue 14; docs/security.md "Users,
roles, sessions and tokens"). No protocol here: the HTTP host (``web/identity.py``,
``web/login.py``) and the commands call these methods and turn what they raise into answers.

- **Passwords** are hashed with argon2id (RFC 9106) by argon2-cffi, with its default
  parameters; a hash made with older parameters is re-hashed at the next good login. An unknown
  name costs a verification against a dummy hash too, so timing does not tell names apart.
  HTTP Basic's repeated checks of one password are remembered (an HMAC under a per-process key)
  while the stored hash stays the same.
- **Throttling** (the brute-force defence): after ``max_failures`` failed logins in a row a user
  is locked for ``lockout_minutes``, doubled for each further failure (at most a day); a client
  address after ``max_failures_per_address`` the same way (so guessing many names from one
  address is slowed too). While locked, a login is refused without looking at the password
  (:class:`~vesalius.errors.ThrottledError`, HTTP 429). A good login resets the user's count.
- **API tokens** read ``ves_<id>_<secret>``: the id is stored as is, the secret only as its
  SHA-256 (a random 256-bit secret needs no slow hash), compared in constant time. A token
  carries scopes, a subset of its user's roles; the identity it gives has the roles in both.
- **Sessions** live in the index database so every node shares them; the cookie's value is a
  fresh random id at each login (never one the client offered: no session fixation), stored
  only as its SHA-256. Each session has a CSRF token. ``session_minutes`` of inactivity end it.

Events (the audit trail maps them to PS3.15 A.5.3.12 User Authentication and others):
``user-login`` (outcome ``success``/``failure``; details ``method`` and, on failure,
``reason``), ``user-logout``, ``user-changed`` (``change``: added, disabled, enabled,
password-reset), ``token-created``, ``token-revoked``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from vesalius.errors import AuthenticationError, InvalidDataError, NotFoundError, ThrottledError
from vesalius.identity import Identity, Method
from vesalius.index import accounts as table
from vesalius.index.accounts import SessionCheck, SessionRow, TokenCheck, TokenRow, UserRow
from vesalius.index.catalog import Catalog
from vesalius.services.oversight import Oversight
from vesalius.services.policy import ROLE_ACTIONS

log = logging.getLogger(__name__)

#: A user name: letters, digits and ``._@-`` (an e-mail address fits), 1 to 128 characters.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
TOKEN_RE = re.compile(r"^ves_([A-Za-z0-9]{8,32})_([A-Za-z0-9_-]{20,128})$")
MIN_PASSWORD = 8
MAX_LOCK = timedelta(days=1)
#: A session's last use is written at most this often (each write is an index write).
TOUCH_EVERY = timedelta(seconds=60)
#: Most HTTP Basic verifications remembered (:meth:`AccountService.verify`).
MAX_REMEMBERED = 1024


@dataclass(frozen=True)
class AccountConfig:
    """The ``auth.*`` settings the accounts service uses."""

    session_minutes: float = 480.0
    max_failures: int = 5
    max_failures_per_address: int = 20
    lockout_minutes: float = 15.0


@dataclass(frozen=True)
class User:
    """A user as listed (never the password hash)."""

    name: str
    roles: frozenset[str]
    groups: frozenset[str]
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Token:
    """An API token as listed (never the secret)."""

    token_id: str
    user: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: TokenRow) -> Token:
        return cls(
            row.token_id,
            row.user_name,
            row.scopes,
            row.created_at,
            row.expires_at,
            row.revoked_at,
            row.last_used_at,
        )


@dataclass(frozen=True)
class Session:
    """A live login session: who, and the CSRF token its browser forms must carry."""

    identity: Identity
    csrf_token: str


def _now() -> datetime:
    return datetime.now(UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_roles(roles: frozenset[str]) -> frozenset[str]:
    unknown = sorted(roles - set(ROLE_ACTIONS))
    if unknown:
        raise InvalidDataError(
            f"unknown role {', '.join(unknown)}: the roles are {', '.join(ROLE_ACTIONS)}"
        )
    return roles


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidDataError(
            f"invalid user name {name!r}: letters, digits and . _ @ - (at most 128)"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidDataError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


class AccountService:
    """Users, tokens and sessions in the index database (see the module's text)."""

    def __init__(
        self, catalog: Catalog, *, oversight: Oversight, config: AccountConfig | None = None
    ) -> None:
        self.catalog = catalog
        self.oversight = oversight
        self.config = config or AccountConfig()
        self.hasher = PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_hex(16))
        #: HTTP Basic sends the password with every request; an argon2 check each time would
        #: cost tens of milliseconds. A password once verified is remembered as an HMAC under
        #: a key of this process alone, valid while the user's stored hash is the same one.
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[str, str]] = {}

    # -- users (administrators) -------------------------------------------------------------

    def add_user(
        self,
        name: str,
        password: str,
        roles: frozenset[str],
        who: Identity,
        groups: frozenset[str] = frozenset(),
    ) -> User:
        self.oversight.check(who, "admin")
        check_name(name)
        check_roles(roles)
        hashed = self.hasher.hash(check_password(password))
        now = _now()
        try:
            with self.catalog.write() as conn:
                pk = table.add_user(conn, name, hashed, roles, now)
                table.set_groups(conn, pk, groups, now)
        except IntegrityError as exc:
            raise InvalidDataError(f"user {name!r} exists already") from exc
        self.oversight.record("user-changed", who, user=name, change="added", roles=sorted(roles))
        return self.user(name, who)

    def has_users(self) -> bool:
        """Whether any user exists (``serve`` warns when authentication is on and none does)."""
        with self.catalog.read() as conn:
            return table.any_user(conn)

    def user(self, name: str, who: Identity) -> User:
        self.oversight.check(who, "admin")
        with self.catalog.read() as conn:
            return _listed(self._row(conn, name))

    def users(self, who: Identity) -> list[User]:
        self.oversight.check(who, "admin")
        with self.catalog.read() as conn:
            return [_listed(row) for row in table.all_users(conn)]

    def set_disabled(self, name: str, disabled: bool, who: Identity) -> None:
        """Disable (its sessions end, its tokens are refused) or enable a user."""
        self.oversight.check(who, "admin")
        now = _now()
        with self.catalog.write() as conn:
            row = self._row(conn, name)
            table.update_user(
                conn, row.pk, now, disabled=int(disabled), failed_logins=0, locked_until=None
            )
            if disabled:
                table.delete_sessions_of(conn, name)
        change = "disabled" if disabled else "enabled"
        self.oversight.record("user-changed", who, user=name, change=change)

    def set_roles(
        self,
        name: str,
        who: Identity,
        *,
        roles: frozenset[str] | None = None,
        groups: frozenset[str] | None = None,
    ) -> None:
        """Replace a user's roles and/or groups (None: unchanged); its sessions end, so the
        change applies at once (a session keeps the roles it started with)."""
        self.oversight.check(who, "admin")
        if roles is not None:
            check_roles(roles)
        for group in groups or ():
            check_name(group)
        now = _now()
        with self.catalog.write() as conn:
            row = self._row(conn, name)
            if roles is not None:
                table.update_user(conn, row.pk, now, roles=table.joined(roles))
            if groups is not None:
                table.set_groups(conn, row.pk, groups, now)
            table.delete_sessions_of(conn, name)
        changes: dict[str, Any] = {}
        if roles is not None:
            changes["roles"] = sorted(roles)
        if groups is not None:
            changes["groups"] = sorted(groups)
        self.oversight.record("user-changed", who, user=name, change="roles", **changes)

    def reset_password(self, name: str, password: str, who: Identity) -> None:
        """A new password; the user's sessions end and the lock is lifted."""
        self.oversight.check(who, "admin")
        hashed = self.hasher.hash(check_password(password))
        now = _now()
        with self.catalog.write() as conn:
            row = self._row(conn, name)
            table.update_user(
                conn, row.pk, now, password_hash=hashed, failed_logins=0, locked_until=None
            )
            table.delete_sessions_of(conn, name)
        self.oversight.record("user-changed", who, user=name, change="password-reset")

    @staticmethod
    def _row(conn: Connection, name: str) -> UserRow:
        row = table.user_by_name(conn, name)
        if row is None:
            raise NotFoundError(f"no user {name!r}")
        return row

    # -- passwords and throttling -----------------------------------------------------------

    def verify(self, name: str, password: str, host: str, method: Method = "basic") -> Identity:
        """The identity of ``name`` if ``password`` is theirs; else
        :class:`AuthenticationError` (or :class:`ThrottledError` while locked). Records
        ``user-login`` either way."""
        now = _now()
        try:
            row = self._check(name, password, host, now, remember=method == "basic")
        except AuthenticationError as exc:
            reason = "throttled" if isinstance(exc, ThrottledError) else str(exc)
            self.oversight.record(
                "user-login",
                Identity("user", name, host, method=method),
                "failure",
                method=method,
                reason=reason,
            )
            raise
        who = Identity("user", row.name, host, row.roles, row.groups, method)
        if method != "basic":  # HTTP Basic checks at every request: not a login each time
            self.oversight.record("user-login", who, method=method)
        return who

    def _check(
        self, name: str, password: str, host: str, now: datetime, *, remember: bool = False
    ) -> UserRow:
        with self.catalog.read() as conn:
            _failures, address_lock, _seen = table.address_failures(conn, host)
            row = table.user_by_name(conn, name) if NAME_RE.match(name) else None
        for locked in (address_lock, row.locked_until if row else None):
            if locked is not None and locked > now:
                wait = int((locked - now).total_seconds()) + 1
                raise ThrottledError(
                    f"too many failed logins: try again in {wait} seconds", retry_after=wait
                )
        mac = hmac.new(self._key, f"{name}\0{password}".encode(), "sha256").hexdigest()
        if row is not None and not row.disabled and not row.failed_logins:
            known = self._verified.get(name)
            if known and known[1] == row.password_hash and hmac.compare_digest(known[0], mac):
                return row  # checked before against this very hash (HTTP Basic: every request)
        good = self._password_matches(row.password_hash if row else "", password)
        if row is not None and good and not row.disabled:
            if row.failed_logins or row.locked_until:
                with self.catalog.write() as conn:
                    table.update_user(conn, row.pk, now, failed_logins=0, locked_until=None)
            if good == "rehash":
                with self.catalog.write() as conn:
                    table.update_user(conn, row.pk, now, password_hash=self.hasher.hash(password))
            elif remember:
                if len(self._verified) >= MAX_REMEMBERED:
                    self._verified.clear()
                self._verified[name] = (mac, row.password_hash)
            return row
        self._failed(row, host, now)
        if row is not None and good:
            raise AuthenticationError("this user is disabled")
        raise AuthenticationError("wrong user name or password")

    def _password_matches(self, hashed: str, password: str) -> str:
        """``"yes"``, ``"rehash"`` (right, but hashed with older parameters) or ``""``."""
        try:
            self.hasher.verify(hashed or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return ""
        if not hashed:
            return ""
        return "rehash" if self.hasher.check_needs_rehash(hashed) else "yes"

    def _lock(self, failures: int, limit: int, now: datetime) -> datetime | None:
        if failures < limit:
            return None
        factor: int = 2 ** min(failures - limit, 16)
        lock = timedelta(minutes=self.config.lockout_minutes) * factor
        return now + min(lock, MAX_LOCK)

    def _failed(self, row: UserRow | None, host: str, now: datetime) -> None:
        window = timedelta(minutes=self.config.lockout_minutes)
        with self.catalog.write() as conn:
            if row is not None:
                count = row.failed_logins + 1
                lock = self._lock(count, self.config.max_failures, now)
                table.update_user(conn, row.pk, now, failed_logins=count, locked_until=lock)
                if lock is not None:
                    log.warning("login: user %s locked after %d failures", row.name, count)
            failures, locked, seen = table.address_failures(conn, host)
            stale = now - seen > window * 4 and (locked is None or locked <= now)
            count = 1 if stale else failures + 1
            lock = self._lock(count, self.config.max_failures_per_address, now)
            table.save_address_failures(conn, host, count, lock, now)
            if lock is not None:
                log.warning("login: address %s locked after %d failures", host, count)

    # -- sessions ---------------------------------------------------------------------------

    def login(self, name: str, password: str, host: str) -> tuple[str, Session]:
        """Check the password and start a session: (the cookie's value, the session)."""
        who = self.verify(name, password, host, method="session")
        return self._start(who, host)

    def start_external_session(
        self, name: str, roles: frozenset[str], groups: frozenset[str], host: str
    ) -> tuple[str, str]:
        """A session for a user an external provider (OpenID Connect) authenticated: returns
        (the cookie's value, its CSRF token). ``roles`` are kept as given (unknown ones are
        dropped); no ``users`` row is needed. Records ``user-login`` with method ``oidc``."""
        known = frozenset(roles) & frozenset(ROLE_ACTIONS)
        who = Identity("user", name, host, known, frozenset(groups), "oidc")
        self.oversight.record("user-login", who, method="oidc")
        cookie, session = self._start(who, host)
        return cookie, session.csrf_token

    def _start(self, who: Identity, host: str) -> tuple[str, Session]:
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = _now()
        row = SessionRow(
            0,
            who.name,
            who.roles,
            who.groups,
            who.method,
            csrf,
            host,
            now,
            now,
            now + timedelta(minutes=self.config.session_minutes),
        )
        with self.catalog.write() as conn:
            table.add_session(conn, _sha256(cookie), row)
            if secrets.randbelow(64) == 0:  # now and then, clear the expired ones
                table.delete_expired_sessions(conn, now)
        return cookie, Session(who, csrf)

    @property
    def quick_checks(self) -> bool:
        """Whether :meth:`quick_token` and :meth:`quick_session` may run on the event loop
        (a SQLite file: one point read of tens of microseconds, cheaper than a hop to a
        worker thread and back)."""
        return self.catalog.quick_reads

    def quick_token(self, text: str, host: str) -> Identity | None:
        """:meth:`authenticate_token` for the common case, with one read and no write: the
        identity of a good token whose last use was recorded lately; None when the full check
        must answer (a failure to record, a last use to write). The same row, read the same
        way: a revoked token is refused at once."""
        try:
            row = self._token(text, _now(), quick=True)
        except (AuthenticationError, OperationalError):  # a busy file: the thread decides
            return None
        return None if row.touch else self._token_identity(row, host)

    def quick_session(self, cookie: str, host: str) -> Session | None:
        """:meth:`session` for the common case, with one read and no write: the live session
        of the cookie when its expiry needs no moving on; None when :meth:`session` must
        answer (unknown, expired, or to be moved on)."""
        if not cookie or len(cookie) > 256:
            return None
        now = _now()
        try:
            with self.catalog.quick_read() as conn:
                row = table.session_check(conn, _sha256(cookie), now, now - TOUCH_EVERY)
        except OperationalError:  # a busy file: the thread decides
            return None
        if row is None or row.expired or row.touch:
            return None
        return self._session_of(row, host)

    def session(self, cookie: str, host: str) -> Session | None:
        """The live session of a cookie's value, its expiry moved on (sliding); ``None`` when
        unknown or expired."""
        if not cookie or len(cookie) > 256:
            return None
        now = _now()
        with self.catalog.read() as conn:
            row = table.session_check(conn, _sha256(cookie), now, now - TOUCH_EVERY)
        if row is None:
            return None
        if row.expired:
            with self.catalog.write() as conn:
                table.delete_session(conn, _sha256(cookie))
            return None
        if row.touch:
            with self.catalog.write() as conn:
                expires = now + timedelta(minutes=self.config.session_minutes)
                table.touch_session(conn, row.pk, now, expires)
        return self._session_of(row, host)

    @staticmethod
    def _session_of(row: SessionCheck, host: str) -> Session:
        method: Method = "oidc" if row.method == "oidc" else "session"
        who = Identity("user", row.user_name, host, row.roles, row.groups, method)
        return Session(who, row.csrf_token)

    def logout(self, cookie: str, host: str) -> bool:
        """End the session of a cookie's value; whether there was one."""
        found = self.session(cookie, host)
        with self.catalog.write() as conn:
            gone = table.delete_session(conn, _sha256(cookie))
        if found is not None:
            self.oversight.record("user-logout", found.identity, method=found.identity.method)
        return gone

    # -- API tokens -------------------------------------------------------------------------

    def create_token(
        self,
        name: str,
        who: Identity,
        scopes: frozenset[str] = frozenset(),
        expires_days: float | None = None,
    ) -> tuple[Token, str]:
        """A new token for user ``name``: (the token as listed, the bearer text, shown only
        now). ``scopes`` must be among the user's roles (empty: all of them)."""
        self.oversight.check(who, "admin")
        check_roles(scopes)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = _now()
        expires = now + timedelta(days=expires_days) if expires_days else None
        with self.catalog.write() as conn:
            row = self._row(conn, name)
            extra = scopes - row.roles
            if extra:
                raise InvalidDataError(
                    f"user {name!r} does not have the role {', '.join(sorted(extra))}: a "
                    "token's scopes are among its user's roles"
                )
            table.add_token(conn, token_id, _sha256(secret), row.pk, scopes, now, expires)
            created = table.token_by_id(conn, token_id)
        assert created is not None
        self.oversight.record(
            "token-created", who, user=name, token=token_id, scopes=sorted(scopes)
        )
        return Token.of(created), f"ves_{token_id}_{secret}"

    def tokens(self, who: Identity, user: str = "") -> list[Token]:
        self.oversight.check(who, "admin")
        with self.catalog.read() as conn:
            return [Token.of(row) for row in table.all_tokens(conn, user)]

    def revoke_token(self, token_id: str, who: Identity) -> None:
        self.oversight.check(who, "admin")
        with self.catalog.write() as conn:
            found = table.token_by_id(conn, token_id)
            if found is None:
                raise NotFoundError(f"no token {token_id!r}")
            table.revoke_token(conn, token_id, _now())
        self.oversight.record("token-revoked", who, user=found.user_name, token=token_id)

    def authenticate_token(self, text: str, host: str) -> Identity:
        """The identity a bearer token gives (roles: its scopes among its user's roles), or
        :class:`AuthenticationError` for a malformed, unknown, expired or revoked token or a
        disabled user (recorded as a failed ``user-login``)."""
        now = _now()
        try:
            row = self._token(text, now)
        except AuthenticationError as exc:
            self.oversight.record(
                "user-login",
                Identity("user", "unknown", host, method="token"),
                "failure",
                method="token",
                reason=str(exc),
            )
            raise
        if row.touch:
            with self.catalog.write() as conn:
                table.token_used(conn, row.pk, now)
        return self._token_identity(row, host)

    @staticmethod
    def _token_identity(row: TokenCheck, host: str) -> Identity:
        roles = (row.scopes or row.roles) & row.roles
        return Identity("user", row.user_name, host, roles, row.groups, "token")

    def _token(self, text: str, now: datetime, *, quick: bool = False) -> TokenCheck:
        match = TOKEN_RE.match(text.strip())
        if match is None:
            raise AuthenticationError("malformed bearer token")
        token_id, secret = match.groups()
        with self.catalog.quick_read() if quick else self.catalog.read() as conn:
            row = table.token_check(conn, token_id, now, now - TOUCH_EVERY)
        if row is None or not hmac.compare_digest(row.secret_hash, _sha256(secret)):
            raise AuthenticationError("unknown bearer token")
        if row.revoked:
            raise AuthenticationError("this token was revoked")
        if row.expired:
            raise AuthenticationError("this token has expired")
        if row.disabled:
            raise AuthenticationError("this user is disabled")
        return row


def _listed(row: UserRow) -> User:
    return User(row.name, row.roles, row.groups, row.disabled, row.locked_until, row.created_at)
