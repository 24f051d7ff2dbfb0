"""The process model (wiring): worker processes that accept DIMSE associations on the server's
port, and HTTP requests on its HTTP port, so concurrent associations and HTTP clients use more
than one core (the GIL keeps one process's handlers on one). Only ``server.py`` uses this.

The main process binds the listening socket and hands it to each worker (multiprocessing
duplicates the descriptor); every process accepts on it and the kernel gives each connection
to one of them. Which one is the kernel's choice, and with a few associations arriving together
it often picks one process for most of them while the others idle; a :class:`LoadBoard` in
shared memory holds each process's count of associations, and a process busier than another
leaves a waiting connection a moment for the less busy one (``DimseServer._accept_loop``,
``dimse/board.py``).
Each worker opens its own :class:`~vesalius.services.archive.Archive` on the
same database and storage, so nothing is shared in memory: an instance stored by any process is
visible to all as soon as its index row is committed. SIGTERM makes a worker stop accepting,
finish its associations (``grace`` seconds) and exit.

Supervision: a worker stops when the main process dies (:func:`die_with_parent`), so nothing
keeps serving or holding the ports after a ``kill -9``; the main process replaces a worker
that dies, and logs it (:class:`WorkerPool`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any, cast

from vesalius.dimse.board import LoadBoard, LoadSlot
from vesalius.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "LoadBoard",
    "LoadSlot",
    "WorkerPool",
    "die_with_parent",
    "raise_descriptor_limit",
    "worker_count",
]

#: The open-file limit :func:`raise_descriptor_limit` asks for (at most the hard limit).
NOFILE_TARGET = 65536
#: Upper bound of the automatic worker count (``dicom.workers = 0``).
MAX_AUTO_WORKERS = 4
#: prctl(2) option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: Seconds between checks that a worker's parent is still there.
ORPHAN_CHECK = 0.5
#: Seconds between checks of the stop flag while watching the workers.
WATCH_INTERVAL = 1.0
#: Pauses before restarting a worker that died: the first restart is immediate; later ones
#: within :data:`RESTART_WINDOW` seconds wait longer and longer.
RESTART_PAUSES = (0.0, 1.0, 5.0, 15.0, 60.0)
RESTART_WINDOW = 300.0


def worker_count(settings: Settings) -> int:
    """Processes to accept associations in, the main one included."""
    configured = int(settings["dicom.workers"])
    if configured > 0:
        return configured
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


def raise_descriptor_limit(target: int = NOFILE_TARGET) -> int:
    """Raise the soft open-file limit (RLIMIT_NOFILE) to the hard one, at most ``target``.

    Worker processes inherit it. Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft == resource.RLIM_INFINITY or soft >= want:
        log.info("open-file limit is %s", soft)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
        return soft
    log.info("open-file limit raised from %d to %d (hard limit %s)", soft, want, hard)
    return want


class ReadyFlag:
    """Set by a worker once it accepts, polled by the main process. A flag in shared memory
    rather than ``multiprocessing.Event``, whose ``set`` waits for the waiter to wake and
    so hangs forever in a worker whose main process died while waiting."""

    def __init__(self, context: Any) -> None:
        self._value = context.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


def die_with_parent(parent_pid: int, on_orphaned: Callable[[], None]) -> None:
    """Make this worker stop when the process that started it dies, even by ``kill -9``:
    ``PR_SET_PDEATHSIG`` on Linux sends SIGTERM at once, and a watcher thread that notices the
    parent changed (everywhere) calls ``on_orphaned``, which should do the same. A worker left
    behind would keep serving, and hold the ports a restarted server needs."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watcher below suffices
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(ORPHAN_CHECK)
        on_orphaned()

    if os.getppid() != parent_pid:  # it died before we got here
        on_orphaned()
        return
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class WorkerPool:
    """``count`` extra processes accepting on ``listener``, on slots 1 to ``count`` of
    ``board`` (slot 0 is the main process's). Each runs ``entry`` (a module-level function,
    ``vesalius.server.worker_main``) with ``(settings, listener, grace, ready, slot,
    http_socket, parent_pid, *extra_args)`` (the wiring's ``extra_args``: how it logs,
    ``vesalius.logs``, and where its settings come from); it sets ``ready`` once it accepts and
    returns after SIGTERM (its own grace period of ``grace`` seconds starts then).

    A worker that dies while the pool runs is logged and replaced; one that keeps dying is
    restarted after a growing pause (:data:`RESTART_PAUSES`), so a crash loop does not spin.
    """

    def __init__(
        self,
        entry: Callable[..., None],
        settings: Settings,
        listener: socket.socket | None,
        count: int,
        board: LoadBoard,
        http_socket: socket.socket | None = None,
        extra_args: tuple[Any, ...] = (),
    ) -> None:
        self.entry = entry
        self.extra_args = extra_args
        self.settings = settings
        self.listener = listener
        self.count = count
        self.board = board
        self.http_socket = http_socket
        self.processes: list[BaseProcess] = []
        self.grace = 10.0
        self._context = multiprocessing.get_context("spawn")  # no inherited threads
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._restarts: list[list[float]] = []
        #: Called with the pid of each worker that died (e.g. to forget its live metrics).
        self.on_death: Callable[[int], None] | None = None

    def _spawn(self, number: int) -> tuple[BaseProcess, ReadyFlag]:
        ready = ReadyFlag(self._context)
        slot = self.board.slot(number + 1)
        slot.reset()
        process = self._context.Process(
            target=self.entry,
            args=(
                self.settings,
                self.listener,
                self.grace,
                ready,
                slot,
                self.http_socket,
                os.getpid(),
                *self.extra_args,
            ),
            name=f"vesalius-worker-{number + 1}",
            daemon=True,
        )
        process.start()
        return process, ready

    def start(self, grace: float = 10.0, timeout: float = 120.0) -> None:
        """Start the workers and return once each accepts associations (so a server that says
        it is ready spreads associations from the first one on); a worker that fails to start
        is logged and the others carry on. Then watch them."""
        self.grace = grace
        started = []
        for number in range(self.count):
            process, ready = self._spawn(number)
            self.processes.append(process)
            self._restarts.append([])
            started.append((process, ready))
        deadline = time.monotonic() + timeout
        for process, ready in started:
            while not ready.is_set():
                if not process.is_alive() or time.monotonic() > deadline:
                    log.error("worker %s did not start", process.name)
                    break
                time.sleep(0.02)
        if self.count:
            log.info("%d worker processes accepting", self.count)
            self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """Replace workers that die, until :meth:`stop`."""
        while not self._stopping.is_set():
            sentinels = {process.sentinel: n for n, process in enumerate(self.processes)}
            for sentinel in mp_connection.wait(list(sentinels), timeout=WATCH_INTERVAL):
                if self._stopping.is_set():
                    return
                number = sentinels[cast(int, sentinel)]
                dead = self.processes[number]
                dead.join(1)
                if self.on_death is not None and dead.pid is not None:
                    self.on_death(dead.pid)
                log.error(
                    "worker %s (pid %s) %s; starting a new one",
                    dead.name,
                    dead.pid,
                    _describe_exit(dead.exitcode),
                )
                pause = self._pause(number)
                if pause and self._stopping.wait(pause):
                    return
                process, _ = self._spawn(number)
                self.processes[number] = process
                log.info("worker %s restarted (pid %s)", process.name, process.pid)

    def _pause(self, number: int) -> float:
        """Seconds to wait before restarting worker ``number``: none at first, then more for
        each restart within the last :data:`RESTART_WINDOW` seconds."""
        now = time.monotonic()
        recent = [t for t in self._restarts[number] if now - t < RESTART_WINDOW]
        recent.append(now)
        self._restarts[number] = recent
        return RESTART_PAUSES[min(len(recent) - 1, len(RESTART_PAUSES) - 1)]

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every worker alive (SIGHUP: reload; SIGTERM: begin the drain)."""
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    def begin_stop(self) -> None:
        """Stop replacing workers and send them SIGTERM, without waiting: each drains for its
        grace period, which so starts when the main process's does (returns at once)."""
        if not self._stopping.is_set():
            self._stopping.set()
            self.signal_all(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the workers (SIGTERM unless :meth:`begin_stop` sent it) and wait at most
        ``timeout`` seconds for all of them; kill those still there."""
        deadline = time.monotonic() + timeout
        self.begin_stop()
        if self._watcher is not None:
            self._watcher.join(WATCH_INTERVAL + 2)
        self.signal_all(signal.SIGTERM)  # one the watcher restarted meanwhile
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %s did not stop; killing it", process.name)
                process.kill()
                process.join(2)
