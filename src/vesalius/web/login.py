"""The login and logout pages: a small server-rendered form (no script), and ``/session`` for
same-origin scripts (who is logged in, and the CSRF token their state-changing requests send
in ``X-CSRF-Token``). docs/security.md, "Users, roles, sessions and tokens".

- The login form is protected against login CSRF by a double-submit token: a random value in a
  short-lived HttpOnly SameSite=Strict cookie and in the form's hidden field, which must match.
- A successful login always gets a NEW session id (a session cookie the browser sent is ended,
  never adopted: no session fixation, OWASP ASVS 3.2.1).
- ``next`` (where the user was going) is followed only when it is a path of this server:
  ``/viewer?...`` yes, ``//evil.example`` or ``https://evil.example`` never (no open redirect).
- Logging out is a POST with the session's CSRF token (a link cannot log anyone out).
"""

from __future__ import annotations

import hmac
import html
import secrets
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from vesalius.errors import AuthenticationError, ThrottledError
from vesalius.services.accounts import AccountService, Session
from vesalius.web.identity import (
    client_host,
    in_thread,
    is_secure,
    session_cookie,
    set_session_cookie,
)
from vesalius.web.requests import json_response

LOGIN_COOKIE = "vesalius-login"
MAX_FORM = 16 * 1024

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Vesalius</title>
<style>
body{{font-family:system-ui,sans-serif;background:#0b1a2b;color:#e8eef5;display:flex;
justify-content:center;align-items:center;min-height:100vh;margin:0}}
form{{background:#14283f;padding:2rem;border-radius:8px;min-width:18rem}}
label{{display:block;margin:.8rem 0 .2rem}}
input{{width:100%;padding:.5rem;box-sizing:border-box;border-radius:4px;border:1px solid #456}}
button{{margin-top:1.2rem;width:100%;padding:.6rem;border:0;border-radius:4px;
background:#5acce6;color:#0b1a2b;font-weight:600;cursor:pointer}}
p.error{{color:#ff9b9b}}
</style></head>
<body><main>{body}</main></body></html>
"""


def safe_next(target: str) -> str:
    """``target`` if it is a path on this server, else ``/``."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in target):
        return "/"
    return target


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    response = HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    )
    return response


def _login_form(
    request: Request, target: str, error: str = "", status: int = 200, oidc: bool = False
) -> Response:
    token = secrets.token_urlsafe(24)
    problem = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        '<form method="post" action="/login"><h1>Vesalius</h1>'
        f"{problem}"
        '<label for="name">User name</label>'
        '<input id="name" name="name" autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        f'<input type="hidden" name="csrf" value="{token}">'
        f'<input type="hidden" name="next" value="{html.escape(safe_next(target))}">'
        '<button type="submit">Log in</button>'
        + (  # OpenID Connect (web/oidc.py)
            f'<p><a href="/auth/oidc/login?next={quote(safe_next(target), safe="")}">'
            "Sign in with your organisation's account</a></p>"
            if oidc
            else ""
        )
        + "</form>"
    )
    response = _page("Log in", body, status)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/login",
        secure=is_secure(request.scope),
        httponly=True,
        samesite="strict",
    )
    return response


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (at most :data:`MAX_FORM` bytes)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def _same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())


def _session(request: Request) -> Session | None:
    found = getattr(request.state, "session", None)
    return found if isinstance(found, Session) else None


def login_routes(accounts: AccountService, oidc: bool = False) -> list[BaseRoute]:
    """``/login`` (GET form, POST), ``/logout`` (GET form, POST) and ``/session``; ``oidc``:
    the form links to the OpenID Connect sign-in too."""

    async def login_page(request: Request) -> Response:
        return _login_form(request, request.query_params.get("next", "/"), oidc=oidc)

    async def login(request: Request) -> Response:
        form = await _form(request)
        target = safe_next(form.get("next", "/"))
        if not _same(form.get("csrf", ""), request.cookies.get(LOGIN_COOKIE, "")):
            return _login_form(request, target, "The form expired: please log in again.", 403)
        host = client_host(request.scope)
        try:
            cookie, _session = await in_thread(
                accounts.login, form.get("name", ""), form.get("password", ""), host
            )
        except ThrottledError as exc:
            response = _login_form(request, target, exc.message, 429)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        except AuthenticationError:
            return _login_form(request, target, "Wrong user name or password.", 401)
        old = request.cookies.get(session_cookie(request.scope), "")
        if old:  # never adopt a session id the browser offered: end it
            await in_thread(accounts.logout, old, host)
        response = RedirectResponse(target, 303)
        set_session_cookie(response, request.scope, cookie)
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    async def logout_page(request: Request) -> Response:
        session = _session(request)
        if session is None:
            return RedirectResponse("/login", 303)
        name = html.escape(session.identity.name)
        body = (
            f'<form method="post" action="/logout"><h1>Vesalius</h1><p>Logged in as {name}.</p>'
            f'<input type="hidden" name="csrf" value="{html.escape(session.csrf_token)}">'
            '<button type="submit">Log out</button></form>'
        )
        return _page("Log out", body)

    async def logout(request: Request) -> Response:
        session = _session(request)
        form = await _form(request)
        if session is not None:
            if not _same(form.get("csrf", ""), session.csrf_token):
                return _page("Log out", "<p class='error'>The form expired.</p>", 403)
            cookie = request.cookies.get(session_cookie(request.scope), "")
            await in_thread(accounts.logout, cookie, client_host(request.scope))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(
            session_cookie(request.scope),
            path="/",
            secure=is_secure(request.scope),
            httponly=True,
            samesite="lax",
        )
        return response

    async def current(request: Request) -> Response:
        session = _session(request)
        if session is None:
            return json_response({"authenticated": False})
        return json_response(
            {
                "authenticated": True,
                "user": session.identity.name,
                "roles": sorted(session.identity.roles),
                "groups": sorted(session.identity.groups),
                "method": session.identity.method,
                "csrf_token": session.csrf_token,
            },
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout_page, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/session", current, methods=["GET"]),
    ]
