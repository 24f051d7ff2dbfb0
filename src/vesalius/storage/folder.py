"""The default blob store: files in a local folder.

Layout: ``ROOT/blobs/ab/cd/abcd….dcm``. The spool (``storage/spool.py``) lies beside it, in
``ROOT/staging``, on the same filesystem, so a finished upload moves in with one ``rename``;
from a spool on another filesystem the file is copied, flushed to disk and renamed into place.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vesalius.errors import OutOfResourcesError

CHUNK = 1 << 20
_KEY_RE = re.compile(r"[0-9a-f]{32}")  # fullmatch: ``$`` would let a final newline by


class FolderStorage:
    """Blobs as files under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = root
        self.fsync = fsync
        self._blobs = root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self._blobs / key[:2] / key[2:4] / f"{key}.dcm"

    def close(self) -> None:
        pass

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        try:
            try:
                self._rename(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._copy(source, target)  # the spool is on another filesystem
        except OSError as exc:
            raise OutOfResourcesError(f"cannot write blob: {exc.strerror}") from exc

    def _rename(self, source: Path, target: Path) -> None:
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
            _fsync_dir(target.parent)

    def _copy(self, source: Path, target: Path) -> None:
        """Copy ``source`` beside ``target``, flush it to disk, rename it into place (so the
        blob is complete or absent, even after a crash), then remove ``source``."""
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(".part")
        try:
            shutil.copyfile(source, part)
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if self.fsync:
            _fsync_dir(target.parent)
        source.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
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

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
