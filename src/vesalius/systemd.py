"""systemd's readiness protocol, ``sd_notify(3)``: a datagram to ``$NOTIFY_SOCKET``.

``vesalius serve`` sends ``READY=1`` once it listens and ``STOPPING=1`` when it starts to shut
down, so a ``Type=notify`` unit (``vesalius service install``) starts what depends on it only
when it answers. Without ``NOTIFY_SOCKET`` (not under systemd) it does nothing. The protocol is
a few lines; no library is needed.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (``KEY=VALUE`` lines) to systemd; whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is not a unix socket path: not notifying systemd", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address.lstrip("\0"), exc.strerror)
        return False
    return True
