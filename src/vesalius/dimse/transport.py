"""Socket and flow-control tuning shared by every association we take part in.

* ``TCP_NODELAY`` on every socket: small DIMSE responses otherwise wait on delayed ACKs.
* A bounded send queue: pynetdicom queues every P-DATA PDU of a message for its DUL thread with
  no limit, so streaming a large file to a slow peer would pile the whole file up in memory.
"""

from __future__ import annotations

import contextlib
import queue
import socket
from typing import Any

from pynetdicom.pdu_primitives import P_DATA

#: P-DATA PDUs queued for sending at most (see :func:`bound_send_queue`).
SEND_QUEUE_PDUS = 16


def set_nodelay(event: Any) -> None:
    """EVT_CONN_OPEN: disable Nagle's algorithm on the association's socket."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def bound_send_queue(assoc: Any, max_pdus: int = SEND_QUEUE_PDUS) -> None:
    """Give sending back-pressure: pynetdicom puts every P-DATA PDU of a message on an unbounded
    queue that its DUL thread drains, so a large streamed file would pile up in memory whenever
    the network is slower than the disk. Bound that queue for P-DATA only (release and abort
    requests never wait); once the DUL thread has stopped nothing drains the queue, so the
    bound is lifted rather than block."""
    dul = assoc.dul
    provider_queue: Any = dul.to_provider_queue
    put = provider_queue.put

    def put_now(item: Any) -> None:
        with provider_queue.not_full:  # Queue.put without the size check
            provider_queue._put(item)
            provider_queue.unfinished_tasks += 1
            provider_queue.not_empty.notify()

    def bounded_put(item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not isinstance(item, P_DATA):
            put_now(item)
            return
        while True:
            try:
                put(item, True, 0.2)
                return
            except queue.Full:
                if not dul.is_alive() or getattr(dul, "_kill_thread", False):
                    put_now(item)
                    return

    provider_queue.maxsize = max_pdus
    provider_queue.put = bounded_put
