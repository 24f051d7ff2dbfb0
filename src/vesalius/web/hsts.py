"""HTTP Strict Transport Security (RFC 6797) for a host served over HTTPS (``http.tls``):
every answer tells browsers to use HTTPS only, for a year (:data:`vesalius.tls.HSTS`)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vesalius.tls import HSTS

HEADER = (b"strict-transport-security", HSTS.encode())


class StrictTransportSecurity:
    """ASGI middleware adding ``Strict-Transport-Security`` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append(HEADER)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
