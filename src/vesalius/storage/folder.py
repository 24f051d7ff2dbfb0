"""The default storage backend: files in a local folder.

Layout: ``ROOT/blobs/ab/cd/abcd….dcm`` for stored blobs and ``ROOT/staging/`` for files being
received. Both live under one root so a finished upload moves in with a single ``rename``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vesalius.errors import OutOfResourcesError
from vesalius.storage.staging import StagingFiles, owner_pid

CHUNK = 1 << 20
#: Seconds after which a staging file nobody has written to is removed, whoever made it.
STALE_STAGING = 3600.0
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")


class FolderStorage:
    """Blobs as files under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = root
        self.fsync = fsync
        self._blobs = root / "blobs"
        self._staging = root / "staging"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        self._ready = StagingFiles(self._staging)

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self._blobs / key[:2] / key[2:4] / f"{key}.dcm"

    def staging_dir(self) -> Path:
        return self._staging

    def staging_file(self) -> tuple[int, Path]:
        return self._ready.take()

    def spare_staging_files(self) -> set[Path]:
        """The empty staging files made ahead of need and not yet taken."""
        return self._ready.ready()

    def close(self) -> None:
        self._ready.close()

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        try:
            if self.fsync:
                with open(source, "rb+") as fh:
                    os.fsync(fh.fileno())
            try:
                os.replace(source, target)
            except FileNotFoundError:
                if not source.exists():
                    raise
                # First blob under this prefix: create the folders (cheaper than a mkdir call
                # on every put once the 65,536 prefix folders exist).
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
            if self.fsync:
                dir_fd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            if exc.errno == 18:  # EXDEV: staging on another filesystem, copy then rename
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".part")
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
                source.unlink(missing_ok=True)
                return
            raise OutOfResourcesError(f"cannot write blob: {exc.strerror}") from exc

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def open_range(self, key: str, start: int, end: int | None = None) -> Iterator[bytes]:
        with self.open(key) as fh:
            fh.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        yield self._path(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def clean_staging(self, older_than: float = 0.0) -> int:
        """Remove every file in staging not modified for ``older_than`` seconds; the count."""
        return self.recover_staging(older_than=older_than, pid_alive=lambda _pid: True).removed

    def recover_staging(
        self,
        *,
        older_than: float = STALE_STAGING,
        pid_alive: Callable[[int], bool] | None = None,
    ) -> StagingRecovery:
        """Remove what transfers that never finished left in staging: the files of processes
        that are gone (a crash, a ``kill -9``), at once, and any file not modified for
        ``older_than`` seconds. Files of live processes (another process of this server, a
        ``vesalius import``), and younger files of unknown origin, stay."""
        alive = pid_alive or _pid_alive
        now = time.time()
        report = StagingRecovery()
        for entry in self._staging.iterdir():
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
    """What :meth:`FolderStorage.recover_staging` found: files removed (and their size and
    owner processes) and files kept because a live process is still writing them."""

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
