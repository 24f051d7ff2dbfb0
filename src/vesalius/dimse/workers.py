"""Worker processes that accept DIMSE associations on the server's port, so concurrent
associations use more than one core (the GIL keeps one process's handlers on one).

The main process binds the listening socket and hands it to each worker (multiprocessing
duplicates the descriptor); every process accepts on it and the kernel gives each connection
to one of them. Each worker opens its own :class:`~vesalius.services.archive.Archive` on the
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
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from vesalius.settings import Settings

log = logging.getLogger(__name__)

#: Upper bound of the automatic worker count (``dicom.workers = 0``).
MAX_AUTO_WORKERS = 4


def worker_count(settings: Settings) -> int:
    """Processes to accept associations in, the main one included."""
    configured = int(settings["dicom.workers"])
    if configured > 0:
        return configured
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


def _worker_main(settings: Settings, listener: socket.socket, grace: float, ready: Any) -> None:
    """Entry point of a worker process."""
    from vesalius.dimse.server import DimseServer
    from vesalius.services.archive import Archive

    logging.basicConfig(
        level=str(settings["log_level"]).upper(),
        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    archive = Archive.open(settings)
    dimse = DimseServer(archive)
    dimse.start(listener)
    ready.set()
    try:
        done.wait()
    finally:
        dimse.stop(grace)
        archive.close()


class WorkerPool:
    """``count`` extra processes accepting on ``listener``."""

    def __init__(self, settings: Settings, listener: socket.socket, count: int) -> None:
        self.settings = settings
        self.listener = listener
        self.count = count
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
                target=_worker_main,
                args=(self.settings, self.listener, grace, ready),
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
