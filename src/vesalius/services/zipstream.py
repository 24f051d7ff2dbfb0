"""A ZIP archive written as a stream (PKWARE APPNOTE 6.3): entries are *stored* (DICOM pixel
data is compressed already or not worth the CPU), each followed by a data descriptor (general
purpose flag bit 3), so an entry is sent as it is read and nothing is buffered but one chunk;
ZIP64 structures (APPNOTE 4.3.14, 4.5.3) where a size, an offset or the entry count passes
the classic limits. Names are UTF-8 (flag bit 11); the caller keeps them unique. The central
directory, one record of about 100 bytes per entry and the only state kept, is spooled (in
memory up to 1 MiB, then in a temporary file), so memory stays flat whatever the count.

Usage: ``for chunk in stream.entry(name, chunks): ...`` for each entry, then
``stream.finish()``; each yields the bytes to send.
"""

from __future__ import annotations

import struct
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: The classic fields' limits: past them, ZIP64.
MAX_32 = 0xFFFFFFFF
MAX_16 = 0xFFFF
_FLAGS = 0x0008 | 0x0800  # data descriptor follows; names are UTF-8
_STORED = 0
_VERSION_ZIP64 = 45  # 4.5 (ZIP64)
_VERSION_CLASSIC = 20  # 2.0
_MADE_BY = (3 << 8) | _VERSION_ZIP64  # Unix, 4.5
_FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r--


@dataclass(frozen=True)
class _Entry:
    name: bytes
    crc: int
    size: int
    offset: int
    zip64: bool


def dos_time(seconds: float) -> tuple[int, int]:
    """The MS-DOS date and time of ``seconds`` (local time; APPNOTE 4.4.6)."""
    t = time.localtime(seconds)
    year = max(t.tm_year, 1980)
    date = ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    clock = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    return date, clock


class ZipStream:
    """Writes one ZIP archive as chunks of bytes (see the module's text).

    ``zip64_limit``: sizes and offsets from which ZIP64 fields are written (the format's
    limit by default; a test may lower it to exercise them)."""

    def __init__(self, *, modified: float | None = None, zip64_limit: int = MAX_32) -> None:
        self.offset = 0
        self.count = 0
        self.limit = zip64_limit
        self.date, self.time = dos_time(time.time() if modified is None else modified)
        # closed by finish() or close(): it lives as long as the stream
        self._central = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115

    def entry(self, name: str, chunks: Iterable[bytes], size_hint: int = 0) -> Iterator[bytes]:
        """Yield the local header, the bytes of ``chunks`` as they come, and the data
        descriptor of one stored entry. ``size_hint`` (the expected size) decides whether
        the entry is ZIP64 from its start; the sizes written are the ones counted."""
        encoded = name.encode("utf-8")
        if not encoded or len(encoded) > MAX_16 or encoded.startswith(b"/"):
            raise ValueError(f"bad entry name {name!r}")
        zip64 = size_hint >= self.limit
        start = self.offset
        extra = struct.pack("<HHQQ", 0x0001, 16, 0, 0) if zip64 else b""
        header = struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            _VERSION_ZIP64 if zip64 else _VERSION_CLASSIC,
            _FLAGS,
            _STORED,
            self.time,
            self.date,
            0,  # CRC-32, sizes: in the data descriptor
            0,
            0,
            len(encoded),
            len(extra),
        )
        yield self._sent(header + encoded + extra)
        crc = 0
        size = 0
        for chunk in chunks:
            if chunk:
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
                yield self._sent(chunk)
        if size >= self.limit and not zip64:
            raise ValueError(f"{name}: {size} bytes, over the size announced ({size_hint})")
        if zip64:
            descriptor = struct.pack("<IIQQ", 0x08074B50, crc, size, size)
        else:
            descriptor = struct.pack("<IIII", 0x08074B50, crc, size, size)
        yield self._sent(descriptor)
        self._central.write(self._central_record(_Entry(encoded, crc, size, start, zip64)))
        self.count += 1

    def finish(self) -> Iterator[bytes]:
        """Yield the central directory and its end records (ZIP64 ones where needed)."""
        start = self.offset
        self._central.seek(0)
        with self._central:
            while chunk := self._central.read(1 << 20):
                yield self._sent(chunk)
        size = self.offset - start
        count = self.count
        if count >= MAX_16 or start >= self.limit or size >= self.limit:
            end64 = self.offset
            yield self._sent(
                struct.pack(
                    "<IQHHIIQQQQ",
                    0x06064B50,
                    44,  # the record's size after this field
                    _MADE_BY,
                    _VERSION_ZIP64,
                    0,
                    0,
                    count,
                    count,
                    size,
                    start,
                )
            )
            yield self._sent(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
            count16, size32, start32 = MAX_16, MAX_32, MAX_32
        else:
            count16, size32, start32 = count, size, start
        yield self._sent(
            struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count16, count16, size32, start32, 0)
        )

    def close(self) -> None:
        """Drop the spooled central directory (a stream abandoned before :meth:`finish`)."""
        self._central.close()

    def _central_record(self, entry: _Entry) -> bytes:
        big_size = entry.zip64 or entry.size >= self.limit
        big_offset = entry.offset >= self.limit
        fields = b""
        if big_size:
            fields += struct.pack("<QQ", entry.size, entry.size)
        if big_offset:
            fields += struct.pack("<Q", entry.offset)
        extra = struct.pack("<HH", 0x0001, len(fields)) + fields if fields else b""
        return (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                _MADE_BY,
                _VERSION_ZIP64 if fields else _VERSION_CLASSIC,
                _FLAGS,
                _STORED,
                self.time,
                self.date,
                entry.crc,
                MAX_32 if big_size else entry.size,
                MAX_32 if big_size else entry.size,
                len(entry.name),
                len(extra),
                0,  # comment
                0,  # disk
                0,  # internal attributes
                _FILE_MODE,
                MAX_32 if big_offset else entry.offset,
            )
            + entry.name
            + extra
        )

    def _sent(self, data: bytes) -> bytes:
        self.offset += len(data)
        return data
