"""Deflated Explicit VR Little Endian data sets, inflated as a stream (PS3.5 A.5, PS3.10 7.1).

In a deflated Part 10 file the preamble and File Meta are plain and the data set after them is
one raw DEFLATE stream (RFC 1951) of its Explicit VR Little Endian encoding. A few megabytes can
inflate to gigabytes, so nothing here inflates a whole data set into memory: output comes in
pieces of at most :data:`CHUNK` bytes, and past ``limit`` inflated bytes the file is refused with
:class:`TooLargeError` (0xA700, HTTP 413). A corrupt or truncated stream is
:class:`InvalidDataError`.

The Explicit VR Little Endian *twin* of a deflated file is the same preamble and File Meta with
Transfer Syntax UID 1.2.840.10008.1.2.1 (and the group length recomputed), followed by the
inflated bytes: lossless, and what ingest scans, WADO-RS serves by default and C-GET/C-MOVE send
to a peer that did not accept the deflated syntax.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from vesalius.dicom.source import Source, opened
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE
from vesalius.errors import InvalidDataError, TooLargeError

#: Most inflated bytes produced per step.
CHUNK = 1 << 20
#: Deflated bytes read from the file per step (zlib copies what a step leaves unconsumed).
INPUT = 1 << 18
#: Bytes already read that :class:`InflatedStream` can seek back over (pydicom steps back a
#: few bytes after peeking at an element header).
REWIND = 1 << 16
#: A File Meta larger than this is not a File Meta (PS3.10 7.1 lists a few short elements).
MAX_META = 1 << 20
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_GROUP_LENGTH = 0x00020000
_TRANSFER_SYNTAX = 0x00020010


@dataclass(frozen=True)
class FileHead:
    """What precedes the data set of a Part 10 file: the 128-byte preamble, the File Meta
    elements as encoded (tag, bytes), the Transfer Syntax UID and the data set's offset."""

    preamble: bytes
    meta: tuple[tuple[int, bytes], ...]
    transfer_syntax: str
    dataset_offset: int

    def _text(self, tag: int) -> str:
        for found, raw in self.meta:
            if found == tag:
                header = 12 if raw[4:6] in _LONG_VRS else 8
                return raw[header:].decode("ascii", "replace").strip("\0 ")
        return ""

    @property
    def sop_class_uid(self) -> str:
        """(0002,0002) Media Storage SOP Class UID, '' when absent."""
        return self._text(0x00020002)

    @property
    def sop_instance_uid(self) -> str:
        """(0002,0003) Media Storage SOP Instance UID, '' when absent."""
        return self._text(0x00020003)


def read_head(fh: BinaryIO) -> FileHead:
    """Parse the preamble and File Meta (explicit VR little endian, PS3.10 7.1) from ``fh``'s
    start; ``fh`` is left at the data set."""
    head = fh.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise InvalidDataError("not a DICOM Part 10 file (no DICM prefix)")
    meta: list[tuple[int, bytes]] = []
    pos, total, syntax = 132, 0, ""
    while True:
        raw = fh.read(8)
        group, element = struct.unpack("<HH", raw[:4]) if len(raw) >= 4 else (0, 0)
        if len(raw) < 8 or group != 0x0002:
            fh.seek(pos)
            break
        vr = raw[4:6]
        if vr in _LONG_VRS:
            extra = fh.read(4)
            if len(extra) < 4:
                raise InvalidDataError("the File Meta ends in the middle of an element")
            raw += extra
            (length,) = struct.unpack("<I", extra)
        else:
            (length,) = struct.unpack("<H", raw[6:8])
        total += len(raw) + length
        if length == 0xFFFFFFFF or total > MAX_META:
            raise InvalidDataError("the File Meta is malformed")
        value = fh.read(length)
        if len(value) < length:
            raise InvalidDataError("the File Meta ends in the middle of an element")
        tag = group << 16 | element
        if tag == _TRANSFER_SYNTAX:
            syntax = value.decode("ascii", "replace").strip("\0 ")
        meta.append((tag, raw + value))
        pos += len(raw) + length
    if not syntax:
        raise InvalidDataError("the file has no (0002,0010) Transfer Syntax UID")
    return FileHead(head[:128], tuple(meta), syntax, pos)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def explicit_head(head: FileHead) -> bytes:
    """Preamble, ``DICM`` and File Meta of the Explicit VR Little Endian twin: the same
    elements with Transfer Syntax UID 1.2.840.10008.1.2.1 and a recomputed group length."""
    syntax = EXPLICIT_VR_LE.encode("ascii")
    body = b"".join(
        _element(tag, b"UI", syntax + b"\0" * (len(syntax) % 2)) if tag == _TRANSFER_SYNTAX else raw
        for tag, raw in head.meta
        if tag != _GROUP_LENGTH
    )
    group = _element(_GROUP_LENGTH, b"UL", struct.pack("<I", len(body)))
    return head.preamble + b"DICM" + group + body


class InflatedStream(io.RawIOBase):
    """The inflated data set of a deflated file, as a read-only file object.

    Positions count inflated bytes from the data set's start. Reading and seeking forward
    inflate as they go, never more than :data:`CHUNK` bytes at a time; seeking back is possible
    within the last :data:`REWIND` bytes read. Past ``limit`` inflated bytes (None: no limit)
    every read raises :class:`TooLargeError`.
    """

    def __init__(self, raw: BinaryIO, *, limit: int | None = None) -> None:
        super().__init__()
        self._raw = raw  # at the first byte of the deflate stream
        self._raw_done = False
        self._input = b""
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._limit = limit
        self._produced = 0  # inflated bytes so far
        self._buffer = bytearray()  # inflated bytes from self._base to self._produced
        self._base = 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    @property
    def inflated(self) -> int:
        """Inflated bytes produced so far."""
        return self._produced

    def _inflate(self) -> bytes:
        """The next piece of output; b'' at the end of the stream."""
        inflater = self._inflater
        while not inflater.eof:
            data = self._input
            if not data and not self._raw_done:
                data = self._raw.read(INPUT)
                self._raw_done = not data
            try:
                out = inflater.decompress(data, CHUNK)
            except zlib.error as exc:
                raise InvalidDataError(f"the deflated data set is corrupt: {exc}") from exc
            self._input = inflater.unconsumed_tail
            if out:
                self._produced += len(out)
                if self._limit is not None and self._produced > self._limit:
                    raise TooLargeError(
                        f"the deflated data set inflates to more than {_size(self._limit)}"
                    )
                return out
            if self._raw_done and not self._input and not inflater.eof:
                raise InvalidDataError("the deflated data set is truncated")
        return b""

    def _fill(self, end: int) -> None:
        """Inflate until the buffer reaches ``end`` (or the stream ends)."""
        while self._produced < end:
            out = self._inflate()
            if not out:
                return
            self._buffer += out

    def _trim(self) -> None:
        """Drop buffered bytes more than :data:`REWIND` before the position."""
        drop = self._pos - REWIND - self._base
        if drop > CHUNK:
            del self._buffer[:drop]
            self._base += drop

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise io.UnsupportedOperation("an inflated data set is read in pieces, never whole")
        self._fill(self._pos + size)
        start = self._pos - self._base
        data = bytes(self._buffer[start : start + size])
        self._pos += len(data)
        self._trim()
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        raise io.UnsupportedOperation("an inflated data set is read in pieces, never whole")

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("an inflated data set has no known end to seek from")
        if offset < self._base:
            raise io.UnsupportedOperation("cannot seek that far back in an inflated data set")
        while self._produced < offset:  # skip forward, keeping only what REWIND allows
            out = self._inflate()
            if not out:
                offset = self._produced
                break
            self._buffer += out
            drop = min(offset - REWIND - self._base, len(self._buffer))
            if drop > 0:
                del self._buffer[:drop]
                self._base += drop
        self._pos = offset
        self._trim()
        return offset

    def chunks(self) -> Iterator[bytes]:
        """The rest of the data set from the position, in pieces of at most :data:`CHUNK`."""
        start = self._pos - self._base
        if start < len(self._buffer):
            yield bytes(self._buffer[start:])
            self._pos = self._produced
        self._buffer.clear()
        self._base = self._produced
        while out := self._inflate():
            self._pos = self._base = self._produced
            yield out


@contextmanager
def open_inflated(
    source: Source, *, limit: int | None = None
) -> Iterator[tuple[FileHead, InflatedStream]]:
    """``source``'s File Meta and its data set inflating as read (see :class:`InflatedStream`);
    :class:`InvalidDataError` unless ``source`` is a deflated Part 10 file."""
    with opened(source) as fh:
        head = read_head(fh)
        if head.transfer_syntax != DEFLATED_EXPLICIT_VR_LE:
            raise InvalidDataError(f"not a deflated file ({head.transfer_syntax})")
        with InflatedStream(fh, limit=limit) as stream:
            yield head, stream


def explicit_chunks(source: Source, *, limit: int | None = None) -> Iterator[bytes]:
    """The Explicit VR Little Endian twin of the deflated file ``source``, in pieces."""
    with open_inflated(source, limit=limit) as (head, stream):
        yield explicit_head(head)
        yield from stream.chunks()


def write_explicit(source: Source, out: BinaryIO, *, limit: int | None = None) -> int:
    """Write the Explicit VR Little Endian twin of the deflated file ``source`` to ``out``;
    returns the inflated data set's size."""
    with open_inflated(source, limit=limit) as (head, stream):
        out.write(explicit_head(head))
        for piece in stream.chunks():
            out.write(piece)
        return stream.inflated


def inflated_size(source: Source, *, limit: int | None = None) -> int:
    """The size of the deflated file ``source``'s data set once inflated (inflates it once,
    keeping nothing)."""
    with open_inflated(source, limit=limit) as (_, stream):
        for _ in stream.chunks():
            pass
        return stream.inflated
