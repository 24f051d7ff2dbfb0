"""Worker processes that accept DIMSE associations on the server's port, and HTTP requests on
its HTTP port, so concurrent associations and HTTP clients use more than one core (the GIL
keeps one process's handlers on one).

The main process binds the listening socket and hands it to each worker (multiprocessing
duplicates the descriptor); every process accepts on it and the kernel gives each connection
to one of them. Which one is the kernel's choice, and with a few associations arriving together
it often picks one process for most of them while the others idle; a :class:`LoadBoard` in
shared memory holds each process's count of associations, and a process busier than another
leaves a waiting connection a moment for the less busy one (``DimseServer._accept_loop``).
Each worker opens its own :class:`~vesalius.services.archive.Archive` on the
same database and storage, so nothing is shared in memory: an instance stored by any process is
visible to all as soon as its index row is committed. SIGTERM makes a worker stop accepting,
finish its associations (``grace`` seconds) and exit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from vesalius.settings import Settings

log = logging.getLogger(__name__)

#: Upper bound of the automatic worker count (``dicom.workers = 0``).
MAX_AUTO_WORKERS = 4


class LoadSlot:
    """One process's entry on a :class:`LoadBoard`."""

    def __init__(self, counts: Any, index: int) -> None:
        self.counts = counts
        self.index = index

    def publish(self, active: int) -> None:
        """Record this process's number of associations."""
        self.counts[self.index] = active

    def leave(self) -> None:
        """This process stops accepting: never count it as the least busy."""
        self.counts[self.index] = LoadBoard.GONE

    def busier_than_another(self) -> bool:
        mine = self.counts[self.index]
        return any(other < mine for other in self.counts)


class LoadBoard:
    """Association counts of the processes accepting on one socket, in shared memory."""

    GONE = 1 << 30

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.counts = context.RawArray("i", [self.GONE] * processes)

    def slot(self, index: int) -> LoadSlot:
        return LoadSlot(self.counts, index)


def worker_count(settings: Settings) -> int:
    """Processes to accept associations in, the main one included."""
    configured = int(settings["dicom.workers"])
    if configured > 0:
        return configured
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


class WorkerPool:
    """``count`` extra processes accepting on ``listener``, on slots 1 to ``count`` of
    ``board`` (slot 0 is the main process's). Each runs ``entry`` (a module-level function,
    ``vesalius.server.worker_main``) with ``(settings, listener, grace, ready, slot,
    http_socket)``; it sets ``ready`` once it accepts and returns after SIGTERM."""

    def __init__(
        self,
        entry: Callable[..., None],
        settings: Settings,
        listener: socket.socket,
        count: int,
        board: LoadBoard,
        http_socket: socket.socket | None = None,
    ) -> None:
        self.entry = entry
        self.settings = settings
        self.listener = listener
        self.count = count
        self.board = board
        self.http_socket = http_socket
        self.processes: list[BaseProcess] = []

    def start(self, grace: float = 10.0, timeout: float = 120.0) -> None:
        """Start the workers and return once each accepts associations (so a server that says
        it is ready spreads associations from the first one on); a worker that fails to start
        is logged and the others carry on."""
        context = multiprocessing.get_context("spawn")  # no inherited threads or connections
        started = []
        for number in range(self.count):
            ready = context.Event()
            process = context.Process(
                target=self.entry,
                args=(
                    self.settings,
                    self.listener,
                    grace,
                    ready,
                    self.board.slot(number + 1),
                    self.http_socket,
                ),
                name=f"vesalius-dimse-{number + 1}",
                daemon=True,
            )
            process.start()
            self.processes.append(process)
            started.append((process, ready))
        deadline = time.monotonic() + timeout
        for process, ready in started:
            while not ready.wait(0.2):
                if not process.is_alive() or time.monotonic() > deadline:
                    log.error("DIMSE worker %s did not start", process.name)
                    break
        log.info("%d DIMSE worker processes accepting", self.count)

    def stop(self, timeout: float = 15.0) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                log.warning("worker %s did not stop; killing it", process.name)
                process.kill()
                process.join(2)
