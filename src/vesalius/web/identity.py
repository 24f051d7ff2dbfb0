"""The identity of each HTTP request, found once by a middleware and read by every app
(``web.requests.who``); docs/security.md, "Users, roles, sessions and tokens".

In order of preference:

- ``Authorization: Bearer TOKEN`` (RFC 6750): an API token of ``vesalius token create``;
- ``Authorization: Basic`` (RFC 7617), only when ``auth.basic`` is on and only over HTTPS (the
  password would otherwise cross the network in clear);
- the session cookie of a login (``web/login.py``): ``__Host-vesalius-session`` over HTTPS
  (Secure, HttpOnly, SameSite=Lax, RFC 6265bis 4.1.3.2), ``vesalius-session`` over plain HTTP.
  A state-changing request (POST, PUT, PATCH, DELETE) made with the cookie must carry the
  session's CSRF token in ``X-CSRF-Token`` and, if it sends ``Origin``, come from this origin;
  the login pages check their forms' own token.

Wrong credentials are a 401, never a fall-back to anonymous. Without any credentials: where
authentication is off, an anonymous identity with ``auth.anonymous_roles``; where it is on, a
browser asking for a page is redirected to ``/login``, any other request gets 401 with
``WWW-Authenticate``; what monitors poll (``/health``, ``/healthz``, ``/readyz``, ``/metrics``)
and the login page stay open. A 403 (no role for the action) is the services' to answer.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, urlsplit

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from vesalius.errors import AuthenticationError, ThrottledError
from vesalius.identity import Identity
from vesalius.services.accounts import AccountService, Session
from vesalius.web.oidc_client import OidcClient, bearer_identity, is_provider_token

T = TypeVar("T")

SESSION_COOKIE = "vesalius-session"
SECURE_SESSION_COOKIE = "__Host-vesalius-session"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Open without credentials when authentication is on (monitors; the login pages).
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/healthz",
        "/readyz",
        "/metrics",
        "/login",
        "/favicon.ico",
        "/auth/oidc/login",  # OpenID Connect (web/oidc.py)
        "/auth/oidc/callback",
    }
)
#: Pages whose forms carry and check their own CSRF token (``web/login.py``).
SELF_CHECKED = frozenset({"/login", "/logout"})
REALM = "Vesalius"


@dataclass(frozen=True)
class AuthConfig:
    """How the host authenticates (``auth.*``)."""

    #: Credentials needed (``auth.required``, resolved: see ``wiring.auth_required``).
    required: bool = False
    #: Accept HTTP Basic over HTTPS (``auth.basic``).
    basic: bool = False
    #: Roles of a request without credentials while ``required`` is off.
    anonymous_roles: frozenset[str] = frozenset({"admin"})
    #: Path prefixes of the APIs: answered 401 there, never redirected to the login page.
    api_prefixes: tuple[str, ...] = field(default=())


def is_secure(scope: Scope) -> bool:
    """Whether the request came over HTTPS (the scheme uvicorn serves)."""
    return scope.get("scheme") == "https"


def session_cookie(scope: Scope) -> str:
    """The session cookie's name for this request's scheme (``__Host-`` needs Secure)."""
    return SECURE_SESSION_COOKIE if is_secure(scope) else SESSION_COOKIE


def set_session_cookie(response: Response, scope: Scope, value: str) -> None:
    """Give the browser its login session (the login form's and OpenID Connect's alike):
    HttpOnly, SameSite=Lax, Secure and ``__Host-`` over HTTPS (RFC 6265bis 4.1.3.2)."""
    response.set_cookie(
        session_cookie(scope),
        value,
        path="/",
        secure=is_secure(scope),
        httponly=True,
        samesite="lax",
    )


def client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def in_thread(call: Callable[..., T], *args: object) -> T:
    """A blocking accounts call (index reads, argon2) off the event loop."""
    return await anyio.to_thread.run_sync(call, *args)


def quick(accounts: AccountService, credential: str) -> bool:
    """Whether to check ``credential`` on the event loop first (``AccountService.quick_*``:
    one point read of a local SQLite file, no write), which saves the hop to a worker thread
    and back (about 0.15 ms of a QIDO-RS, docs/benchmarks.md); anything else, and anything
    the quick check cannot settle, goes to a thread."""
    return bool(credential) and accounts.quick_checks


def _json(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"status": status, "error": reason})
    return Response(body, status, headers, media_type="application/json")


def same_origin(headers: Headers, scope: Scope) -> bool:
    """Whether ``Origin`` (else ``Referer``), if sent, names this server (RFC 6454)."""
    sent = headers.get("origin") or headers.get("referer") or ""
    if not sent or sent == "null":
        return not sent
    parts = urlsplit(sent)
    host = headers.get("host", "")
    scheme = "https" if is_secure(scope) else "http"
    return parts.scheme == scheme and parts.netloc == host


class IdentityMiddleware:
    """Sets ``request.state.identity`` (ASGI ``scope["state"]["identity"]``), and
    ``state["session"]`` for a request made with a login session (see the module's text)."""

    def __init__(
        self,
        app: ASGIApp,
        accounts: AccountService | None = None,
        config: AuthConfig | None = None,
        oidc: OidcClient | None = None,
    ) -> None:
        self.app = app
        self.accounts = accounts
        self.config = config or AuthConfig()
        #: The OpenID provider whose JWT access tokens are accepted as bearer tokens.
        self.oidc = oidc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        refusal = await self._identify(scope, state)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def anonymous(self, scope: Scope) -> Identity:
        roles = frozenset() if self.config.required else self.config.anonymous_roles
        return Identity("user", "anonymous", client_host(scope), roles=roles, method="none")

    async def _identify(self, scope: Scope, state: dict[str, object]) -> Response | None:
        """Fill ``state``; a response when the request is refused or redirected."""
        host = client_host(scope)
        headers = Headers(scope=scope)
        accounts = self.accounts
        authorization = headers.get("authorization", "")
        if accounts is None:  # no accounts wired (tests of the host alone)
            state["identity"] = self.anonymous(scope)
            return None
        try:
            if authorization:
                state["identity"] = await self._header(authorization, scope, accounts)
                return None
            cookie = HTTPConnection(scope).cookies.get(session_cookie(scope), "")
            session = accounts.quick_session(cookie, host) if quick(accounts, cookie) else None
            if session is None and cookie:
                session = await in_thread(accounts.session, cookie, host)
        except ThrottledError as exc:
            return _json(429, exc.message, {"Retry-After": str(exc.retry_after)})
        except AuthenticationError as exc:
            return self._unauthorized(scope, exc.message, error="invalid_token")
        if session is not None:
            state["identity"], state["session"] = session.identity, session
            return self._check_csrf(scope, headers, session)
        state["identity"] = self.anonymous(scope)
        path = str(scope.get("path", ""))
        if not self.config.required or path in PUBLIC_PATHS:
            return None
        if scope.get("method") in ("GET", "HEAD") and not path.startswith(self.config.api_prefixes):
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            target = f"{path}?{query}" if query else path
            return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
        return self._unauthorized(scope, "authentication required")

    async def _header(self, authorization: str, scope: Scope, accounts: AccountService) -> Identity:
        scheme, _, value = authorization.partition(" ")
        host = client_host(scope)
        if scheme.lower() == "bearer":
            if self.oidc is not None and is_provider_token(value.strip()):
                return await bearer_identity(self.oidc, accounts.oversight, value.strip(), host)
            found = accounts.quick_token(value, host) if quick(accounts, value) else None
            if found is not None:
                return found
            return await in_thread(accounts.authenticate_token, value.strip(), host)
        if scheme.lower() == "basic":
            if not self.config.basic:
                raise AuthenticationError("HTTP Basic is not accepted here (auth.basic is off)")
            if not is_secure(scope):
                raise AuthenticationError("HTTP Basic is accepted only over HTTPS")
            try:
                text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise AuthenticationError("malformed Basic credentials") from exc
            name, colon, password = text.partition(":")
            if not colon:
                raise AuthenticationError("malformed Basic credentials")
            return await in_thread(accounts.verify, name, password, host, "basic")
        raise AuthenticationError(f"unsupported authorization scheme {scheme!r}: use Bearer")

    def _challenge(self, scope: Scope, error: str = "") -> str:
        bearer = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
        if self.config.basic and is_secure(scope):
            return f'{bearer}, Basic realm="{REALM}", charset="UTF-8"'
        return bearer

    def _unauthorized(self, scope: Scope, reason: str, error: str = "") -> Response:
        return _json(401, reason, {"WWW-Authenticate": self._challenge(scope, error)})

    @staticmethod
    def _check_csrf(scope: Scope, headers: Headers, session: Session) -> Response | None:
        """A state-changing request made with the session cookie must prove it comes from a
        page of ours: the session's CSRF token in ``X-CSRF-Token``, and no foreign Origin."""
        if scope.get("method") not in UNSAFE_METHODS or scope.get("path") in SELF_CHECKED:
            return None
        token = headers.get(CSRF_HEADER, "")
        if not same_origin(headers, scope) or not hmac.compare_digest(
            token.encode(), session.csrf_token.encode()
        ):
            return _json(403, "CSRF check failed: send the session's token in X-CSRF-Token")
        return None
