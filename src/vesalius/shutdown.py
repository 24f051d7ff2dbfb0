"""Clean shutdown (wiring): one grace period, ``shutdown_grace`` seconds from SIGTERM or SIGINT,
shared by every part of a process.

When the signal comes, every part begins to stop at once (:meth:`Shutdown.begin`): the DIMSE
server refuses new associations with an A-ASSOCIATE-RJ (transient) while running ones go on,
uvicorn stops accepting HTTP connections and lets requests in flight finish
(``timeout_graceful_shutdown``), the job runner hands its job back at its next progress report,
and the main process passes SIGTERM on to its workers, which do the same. When the grace
period is over, associations still open get an A-ABORT (PS3.8 9.3.8), HTTP requests still
running are cancelled, and a job still running is put back in the queue.

Before, each part waited for the one before it (HTTP without a time limit, then the job
runner, then the workers, then the main process's associations), so a peer could wait on an
idle association for as long as one HTTP client stalled (``http.send_timeout``, 60 s) and only
saw its association end when its own network timeout did.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

#: Signals that stop the server.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """The grace period of one process: steps to run when it begins, and what is left of it."""

    def __init__(self, grace: float, *, announce: bool = True) -> None:
        self.grace = max(0.0, grace)
        self.announce = announce
        self._began: float | None = None
        self._steps: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def begun(self) -> bool:
        return self._began is not None

    def on_begin(self, step: Callable[[], None]) -> None:
        """Run ``step`` when the shutdown begins (at once if it has); steps must return at
        once (set a flag, send a signal)."""
        with self._lock:
            began = self._began is not None
            if not began:
                self._steps.append(step)
        if began:
            self._run(step)

    def begin(self) -> None:
        """Start the grace period and run the steps (once; later calls do nothing). Safe to
        call from a signal handler: the steps only set flags and send signals."""
        with self._lock:
            if self._began is not None:
                return
            self._began = time.monotonic()
            steps, self._steps = self._steps, []
        if self.announce:
            log.info(
                "shutting down: %g s (shutdown_grace) for associations, HTTP requests and jobs "
                "to finish; new associations are refused",
                self.grace,
            )
        for step in steps:
            self._run(step)

    @staticmethod
    def _run(step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # one part failing to stop must not keep the others running
            log.exception("shutdown step failed")

    def remaining(self) -> float:
        """Seconds left of the grace period (all of it before :meth:`begin`)."""
        if self._began is None:
            return self.grace
        return max(0.0, self._began + self.grace - time.monotonic())

    def catch_signals(self) -> None:
        """Make SIGTERM and SIGINT begin the shutdown (until uvicorn takes them over while it
        runs, ``HttpServer.on_exit``); call from the main thread."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda _sig, _frame: self.begin())

    def hold_signals(self) -> None:
        """While the process drains after the HTTP server returned (which restores Python's
        own handlers), a second SIGTERM or SIGINT is noted rather than killing the process
        or raising KeyboardInterrupt halfway through; call from the main thread."""

        def again(sig: int, _frame: FrameType | None) -> None:
            log.info(
                "%s: already shutting down, %.1f s of the grace period left",
                signal.Signals(sig).name,
                self.remaining(),
            )

        for sig in STOP_SIGNALS:
            signal.signal(sig, again)
