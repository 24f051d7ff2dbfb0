"""The spool: the local folder where arriving files are written before they are stored.

C-STORE, STOW-RS and ``vesalius import`` write each data set into a spool file (made ahead of
need, ``storage/staging.py``); ingest checks and indexes it there and moves it into a blob store
with ``put_file``. The spool is local whatever the store is; for the folder store it lies on the
same filesystem (``<data_dir>/storage/staging``), so the move is a rename. It also holds the
scratch files of inflating a deflated data set. A start removes what crashed transfers left
(:meth:`Spool.recover`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vesalius.storage.staging import StagingFiles, owner_pid

#: Seconds after which a spool file nobody has written to is removed, whoever made it.
STALE_STAGING = 3600.0


class Spool:
    """Files being received, in ``folder`` (created if missing)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._ready = StagingFiles(folder)

    def staging_file(self) -> tuple[int, Path]:
        """A new empty file, open for reading and writing: its descriptor, which the caller
        closes, and its path. ``OSError`` when none can be created."""
        return self._ready.take()

    def spare_files(self) -> set[Path]:
        """The empty files made ahead of need and not yet taken."""
        return self._ready.ready()

    def free_bytes(self) -> int:
        """Bytes free on the spool's filesystem."""
        return shutil.disk_usage(self.folder).free

    def disk_usage(self) -> tuple[int, int, int]:
        """``(total, used, free)`` bytes of the spool's filesystem: the data folder's."""
        usage = shutil.disk_usage(self.folder)
        return usage.total, usage.used, usage.free

    def close(self) -> None:
        """Stop making files ahead and remove those never taken."""
        self._ready.close()

    def clean(self, older_than: float = 0.0) -> int:
        """Remove every file not modified for ``older_than`` seconds; the count."""
        return self.recover(older_than=older_than, pid_alive=lambda _pid: True).removed

    def recover(
        self,
        *,
        older_than: float = STALE_STAGING,
        pid_alive: Callable[[int], bool] | None = None,
    ) -> StagingRecovery:
        """Remove what transfers that never finished left: the files of processes that are
        gone (a crash, a ``kill -9``), at once, and any file not modified for ``older_than``
        seconds. Files of live processes (another process of this server, a ``vesalius
        import``), and younger files of unknown origin, stay."""
        alive = pid_alive or _pid_alive
        now = time.time()
        report = StagingRecovery()
        for entry in self.folder.iterdir():
            try:
                stat = entry.stat()
                if not entry.is_file():
                    continue
                pid = owner_pid(entry.name)
                orphaned = pid is not None and not alive(pid)
                if not orphaned and now - stat.st_mtime < older_than:
                    report.kept += 1
                    continue
                entry.unlink()
            except FileNotFoundError:
                continue
            if stat.st_size:
                report.partial += 1
                report.partial_bytes += stat.st_size
            else:
                report.empty += 1
            if pid is not None:
                report.owners.add(pid)
        return report


@dataclass
class StagingRecovery:
    """What :meth:`Spool.recover` found: files removed (and their size and owner processes)
    and files kept because a live process is still writing them."""

    #: Files removed that held part of a transfer, and their total size.
    partial: int = 0
    partial_bytes: int = 0
    #: Empty files removed (made ahead of need and never used).
    empty: int = 0
    kept: int = 0
    owners: set[int] = field(default_factory=set)

    @property
    def removed(self) -> int:
        return self.partial + self.empty

    def describe(self) -> str:
        """One line for the log: what was found and removed."""
        owners = ", ".join(str(pid) for pid in sorted(self.owners)) or "unknown"
        return (
            f"removed {self.partial} unfinished transfer(s) "
            f"({self.partial_bytes / (1 << 20):.1f} MiB) and {self.empty} unused empty file(s) "
            f"left by processes no longer running or untouched for an hour (pid {owners}); "
            "none of them had been acknowledged"
        )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    return True
