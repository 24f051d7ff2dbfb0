"""Running the HTTP application with uvicorn on a socket bound by the caller.

The main process binds the HTTP port once and every DIMSE worker process serves HTTP on the
same socket too (``dimse/workers.py``), so concurrent HTTP clients (STOW-RS uploads, a viewer's
parallel frame requests) use more than one core, as concurrent associations do.
"""

from __future__ import annotations

import signal
import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette


class HttpServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its own shutdown, which would kill the process
    before the DIMSE side drains; here a signal only asks the server to exit. Worker processes
    ignore SIGINT (``ignore_sigint``): the main process decides when they stop."""

    def __init__(self, config: uvicorn.Config, *, ignore_sigint: bool = False) -> None:
        super().__init__(config)
        self.ignore_sigint = ignore_sigint

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and self.ignore_sigint:
            return
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def http_server(app: Starlette, *, ignore_sigint: bool = False) -> HttpServer:
    """A uvicorn server for ``app``, to ``run(sockets=[...])`` (address from the socket)."""
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    return HttpServer(config, ignore_sigint=ignore_sigint)


def bind_http(host: str, port: int) -> socket.socket:
    """The listening HTTP socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)
