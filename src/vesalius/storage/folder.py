"""The default storage backend: files in a local folder.

Layout: ``ROOT/blobs/ab/cd/abcd….dcm`` for stored blobs and ``ROOT/staging/`` for files being
received. Both live under one root so a finished upload moves in with a single ``rename``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from vesalius.errors import OutOfResourcesError
from vesalius.storage.staging import StagingFiles

CHUNK = 1 << 20
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
        """Remove files left in staging by transfers that never finished; returns the count."""
        now = time.time()
        removed = 0
        for entry in self._staging.iterdir():
            try:
                if entry.is_file() and now - entry.stat().st_mtime >= older_than:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
