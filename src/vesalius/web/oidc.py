"""Signing in through an OpenID Connect provider (OpenID Connect Core 1.0, 3.1: the
authorization code flow, with PKCE, RFC 7636) and the provider's access tokens as bearer
tokens (RFC 6750, RFC 9068). docs/security.md, "OpenID Connect".

- ``/auth/oidc/login?next=PATH`` sends the browser to the provider with a fresh ``state``,
  ``nonce`` and PKCE verifier, kept in a short-lived cookie (HttpOnly, SameSite=Lax, path
  ``/auth/oidc``) signed with a key derived from the client secret, so any worker or node
  can finish the login.
- ``/auth/oidc/callback`` checks ``state`` against that cookie (and ``iss``, RFC 9207), ends
  the cookie (one use), exchanges the code, validates the ID token (``web/oidc_client.py``),
  maps the groups to roles and starts an ordinary Vesalius login session (the accounts
  service), so the viewer and every page work same-origin as after a password login. A user
  whose groups map to no role gets a 403 page. Every failure is a ``user-login`` event with
  outcome ``failure``, method ``oidc`` and the reason; the accounts service records success.
- ``Authorization: Bearer`` with a JWT (three dot-separated parts; Vesalius's own API tokens
  read ``ves_...``) is checked against the provider's keys, issuer, ``auth.oidc_audience`` and
  expiry; an invalid one is a 401, a valid one whose groups map to no role has no role (the
  services answer 403).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from vesalius.errors import AuthenticationError, PeerError
from vesalius.identity import Identity
from vesalius.services.accounts import AccountService
from vesalius.services.oversight import Oversight
from vesalius.web.identity import (
    client_host,
    in_thread,
    is_secure,
    session_cookie,
    set_session_cookie,
)
from vesalius.web.login import safe_next
from vesalius.web.oidc_client import OidcClient, record_failure
from vesalius.web.requests import base_url

LOGIN_PATH = "/auth/oidc/login"
CALLBACK_PATH = "/auth/oidc/callback"
STATE_COOKIE = "vesalius-oidc"
#: Seconds a sign-in may take at the provider.
STATE_SECONDS = 600

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Vesalius</title>
<style>body{{font-family:system-ui,sans-serif;background:#0b1a2b;color:#e8eef5;max-width:40rem;
margin:4rem auto;padding:0 1rem}}a{{color:#5acce6}}</style></head>
<body><main><h1>{title}</h1><p>{text}</p><p><a href="{again}">Sign in again</a></p></main>
</body></html>
"""


def _page(status: int, title: str, text: str) -> HTMLResponse:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text), again=LOGIN_PATH)
    response = HTMLResponse(body, status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    return response


class LoginState:
    """The pending sign-in, carried by the browser in a signed cookie."""

    def __init__(self, client_secret: str) -> None:
        self._key = hmac.new(
            client_secret.encode(), b"vesalius oidc login state", hashlib.sha256
        ).digest()

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def seal(self, values: dict[str, str]) -> str:
        body = json.dumps({**values, "exp": int(time.time()) + STATE_SECONDS}).encode()
        payload = base64.urlsafe_b64encode(body).rstrip(b"=")
        return f"{payload.decode()}.{self._mac(payload)}"

    def open(self, cookie: str) -> dict[str, Any] | None:
        """The values sealed in ``cookie``, or ``None`` if forged, altered or expired."""
        payload, _, mac = cookie.partition(".")
        if not payload or not hmac.compare_digest(
            mac.encode(), self._mac(payload.encode()).encode()
        ):
            return None
        try:
            values = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(values, dict) or not isinstance(values.get("exp"), int):
            return None
        return values if values["exp"] >= time.time() else None


def oidc_routes(
    accounts: AccountService, oversight: Oversight, client: OidcClient
) -> list[BaseRoute]:
    """``/auth/oidc/login`` and ``/auth/oidc/callback`` (see the module's text)."""
    sealer = LoginState(client.config.client_secret)

    async def login(request: Request) -> Response:
        target = safe_next(request.query_params.get("next", "/"))
        try:
            metadata = await client.metadata()
        except PeerError as exc:
            return _page(502, "Sign-in unavailable", str(exc))
        redirect_uri = base_url(request) + CALLBACK_PATH
        pending = client.login_request(redirect_uri, metadata["authorization_endpoint"])
        response = RedirectResponse(pending.url, 303)
        response.headers["Cache-Control"] = "no-store"
        response.set_cookie(
            STATE_COOKIE,
            sealer.seal(
                {
                    "state": pending.state,
                    "nonce": pending.nonce,
                    "verifier": pending.verifier,
                    "redirect_uri": redirect_uri,
                    "next": target,
                }
            ),
            max_age=STATE_SECONDS,
            path="/auth/oidc",
            secure=is_secure(request.scope),
            httponly=True,
            samesite="lax",
        )
        return response

    async def refuse(
        request: Request, status: int, title: str, reason: str, name: str = "unknown"
    ) -> Response:
        who = Identity("user", name, client_host(request.scope), method="oidc")
        await in_thread(record_failure, oversight, who, reason)
        response = _page(status, title, reason)
        response.delete_cookie(STATE_COOKIE, path="/auth/oidc")
        return response

    async def callback(request: Request) -> Response:
        params = request.query_params
        pending = sealer.open(request.cookies.get(STATE_COOKIE, ""))
        if pending is None:
            return await refuse(
                request,
                400,
                "Sign-in failed",
                "no sign-in in progress in this browser (or it took too long): start again",
            )
        if not secrets.compare_digest(params.get("state", "").encode(), pending["state"].encode()):
            return await refuse(
                request,
                400,
                "Sign-in failed",
                "state mismatch: this answer is not for this sign-in",
            )
        if "error" in params:
            error = params["error"][:100]
            detail = params.get("error_description", "")[:200]
            reason = f"the provider refused: {error}" + (f" ({detail})" if detail else "")
            return await refuse(request, 401, "Sign-in refused", reason)
        if "iss" in params and params["iss"] != client.config.issuer:  # RFC 9207 2.4
            return await refuse(request, 400, "Sign-in failed", "the answer names another issuer")
        try:
            tokens = await client.exchange(
                params.get("code", ""), pending["verifier"], pending["redirect_uri"]
            )
            raw = tokens.get("id_token")
            if not isinstance(raw, str):
                raise AuthenticationError("the provider sent no ID token")
            claims = await client.id_token_claims(raw, pending["nonce"])
        except AuthenticationError as exc:
            return await refuse(request, 401, "Sign-in failed", str(exc))
        except PeerError as exc:
            return await refuse(request, 502, "Sign-in unavailable", str(exc))
        user = client.user(claims)
        if not user.roles:
            return await refuse(
                request,
                403,
                "No access to Vesalius",
                f"{user.name} signed in, but none of their groups "
                f"({', '.join(sorted(user.groups)) or 'none'}) grants a Vesalius role; an "
                "administrator maps groups to roles in auth.oidc_role_map",
                user.name,
            )
        host = client_host(request.scope)
        old = request.cookies.get(session_cookie(request.scope), "")
        if old:  # never adopt a session id the browser offered: end it
            await in_thread(accounts.logout, old, host)
        cookie, _csrf = await in_thread(
            accounts.start_external_session, user.name, user.roles, user.groups, host
        )
        response = RedirectResponse(safe_next(str(pending.get("next", "/"))), 303)
        set_session_cookie(response, request.scope, cookie)
        response.delete_cookie(STATE_COOKIE, path="/auth/oidc")
        return response

    return [
        Route(LOGIN_PATH, login, methods=["GET"]),
        Route(CALLBACK_PATH, callback, methods=["GET"]),
    ]
