"""The identity of each HTTP request, found once by a middleware and read by every app
(``web.requests.who``). Today every client is an anonymous user at its address; the security
issue puts session cookies, API tokens and OpenID Connect here, and nothing else changes."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from vesalius.identity import Identity


class IdentityMiddleware:
    """Sets ``request.state.identity`` (ASGI ``scope["state"]["identity"]``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            state = scope.setdefault("state", {})
            state["identity"] = Identity.http(client[0] if client else "")
        await self.app(scope, receive, send)
