"""What the readers of ``dicom/`` read: a local path, or a seekable binary reader (what a blob
store's ``open`` returns, ``storage/base.py``), so a stored file is read the same way whether a
folder or an object store holds it.

A reader is read from its start whatever its position, and left open for its owner; a path is
opened and closed here. Where a reader has a real file descriptor (``fileno()``), the scan maps
it (``dicom/scan.py``); readers without one take pydicom's path, which only seeks and reads.
"""

from __future__ import annotations

import io
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydicom.dataset import FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble

#: A Part 10 file: its path, or a seekable binary reader over it.
Source = Path | BinaryIO


@contextmanager
def opened(source: Source) -> Iterator[BinaryIO]:
    """``source`` as a binary reader at its first byte: a path opened (and closed after), a
    reader rewound (and left open). ``FileNotFoundError`` for a missing path."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            yield fh
        return
    source.seek(0)
    yield _named(source)


def mapped(fh: BinaryIO) -> mmap.mmap | None:
    """The whole file behind ``fh``, mapped read-only; None when it has no file descriptor
    (not a local file) or is empty."""
    try:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # io.UnsupportedOperation is both; empty: ValueError
        return None


def file_meta(fh: BinaryIO) -> FileMetaDataset:
    """The File Meta of the Part 10 file ``fh`` (PS3.10 7.1), read by pydicom from the start
    (``read_file_meta_info`` for a reader: that function takes paths only)."""
    fh.seek(0)
    read_preamble(fh, False)
    meta: FileMetaDataset = _read_file_meta_info(fh)
    return meta


class _Unnamed(io.BufferedIOBase):
    """A buffered reader whose raw stream has no ``name``, as pydicom can read it: pydicom's
    ``FileDataset`` asks an ``io.BufferedReader`` for its name, which such a reader lacks."""

    def __init__(self, inner: io.BufferedReader) -> None:
        super().__init__()
        self._inner = inner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._inner.read(size)

    def read1(self, size: int = -1) -> bytes:
        return self._inner.read1(size)

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def fileno(self) -> int:
        return self._inner.fileno()

    def close(self) -> None:  # the owner closes the reader itself
        super().close()


def _named(fh: BinaryIO) -> BinaryIO:
    if isinstance(fh, io.BufferedReader):
        try:
            fh.name  # noqa: B018
        except AttributeError:
            return cast(BinaryIO, _Unnamed(fh))
    return fh
