"""Staging files created ahead of need, off the path of the request that uses them.

Creating a file is a journal transaction on the filesystem. On a disk busy with the writes of
a large ingest it stalls: on the benchmark machine creating one staging file took 0.5-0.9 ms
while images streamed in, a third of the time of a small C-STORE, against 15 µs when the disk
is quiet. A thread per process keeps a few empty files ready; the association or the HTTP
request takes one that already exists, and the creation of the next overlaps the receiving
and indexing of the current one. When none is ready the caller creates its own at once, so a
burst never waits on the thread.

Ready files are at most :data:`MAX_AGE` seconds old when taken (older ones are replaced), far
below the age at which a starting process sweeps the spool (``Spool.recover``),
so a sweep by another process never removes a file that is about to be used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

#: Empty files kept ready per process.
AHEAD = 4
#: Seconds after which a ready file is replaced instead of used.
MAX_AGE = 60.0
#: Seconds the filler waits after failing to create a file (disk full, folder gone).
RETRY_AFTER = 1.0

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME = re.compile(r"^rx-(?P<pid>[0-9]{1,10})-[0-9a-f]+\.part$")


def staging_name(pid: int | None = None) -> str:
    """A new staging file name: ``rx-<pid>-<random>.part``, so a process starting later can
    tell the files of processes that are gone (:func:`owner_pid`)."""
    return f"rx-{os.getpid() if pid is None else pid}-{secrets.token_hex(12)}.part"


def owner_pid(name: str) -> int | None:
    """The process that made a staging file, from its name; None for other names."""
    match = _NAME.match(name)
    return int(match["pid"]) if match else None


def create_staging_file(folder: Path) -> tuple[int, Path]:
    """A new empty file with a random name in ``folder``: its descriptor (open for reading
    and writing, owner only) and path."""
    while True:
        path = folder / staging_name()
        try:
            return os.open(path, _FLAGS, 0o600), path
        except FileExistsError:  # 96 random bits: only a stale name could collide
            continue


class StagingFiles:
    """Up to :data:`AHEAD` empty files in ``folder``, created by a daemon thread that starts
    with the first :meth:`take`. Thread-safe."""

    def __init__(self, folder: Path, *, ahead: int = AHEAD, max_age: float = MAX_AGE) -> None:
        self.folder = folder
        self.ahead = ahead
        self.max_age = max_age
        self._ready: deque[tuple[int, Path, float]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def take(self) -> tuple[int, Path]:
        """An empty staging file, open for reading and writing; the caller owns it (closes the
        descriptor, and moves the file into storage or removes it). Raises ``OSError`` when
        no file can be created."""
        now = time.monotonic()
        with self._wake:
            if self._thread is None and not self._closed and self.ahead > 0:
                self._thread = threading.Thread(
                    target=self._fill, name="staging-files", daemon=True
                )
                self._thread.start()
            ready = None
            while self._ready:
                fd, path, made = self._ready.popleft()
                if now - made <= self.max_age:
                    ready = fd, path
                    break
                _remove(fd, path)
            self._wake.notify()
        return ready if ready is not None else create_staging_file(self.folder)

    def ready(self) -> set[Path]:
        """The files made ahead and not yet taken."""
        with self._wake:
            return {path for _, path, _ in self._ready}

    def close(self) -> None:
        """Stop the filler and remove the files it made that were never taken."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        with self._wake:
            while self._ready:
                _remove(*self._ready.popleft()[:2])

    def _fill(self) -> None:
        while True:
            with self._wake:
                while not self._closed and len(self._ready) >= self.ahead:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                fd, path = create_staging_file(self.folder)
            except OSError as exc:
                log.warning("cannot create a staging file ahead of need: %s", exc)
                with self._wake:
                    if not self._closed:
                        self._wake.wait(RETRY_AFTER)
                continue
            with self._wake:
                if self._closed:
                    _remove(fd, path)
                    return
                self._ready.append((fd, path, time.monotonic()))


def _remove(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    path.unlink(missing_ok=True)
