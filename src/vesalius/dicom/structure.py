"""Walking a data set's element structure to prove it is complete (PS3.5 7.1, 7.5, A.4).

Header parsing stops before the pixel data, and pydicom seeks past deferred values without
noticing a short file, so a truncated upload could pass for a good one. :func:`check_structure`
walks every element header (not the values) and fails when any value, item or delimiter runs past
the end of the file. It costs one seek per element and reads no pixel data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from vesalius.dicom.inflate import InflatedStream
from vesalius.dicom.source import Source, opened
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE
from vesalius.errors import InvalidDataError

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQ_END = 0xFFFEE0DD
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
MAX_DEPTH = 64
#: Float Pixel Data, Double Float Pixel Data, Pixel Data (PS3.6).
PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)


@dataclass(frozen=True)
class PixelDataElement:
    """The top-level pixel data element seen by the walk: tag, VR ('' when implicit), length
    (``UNDEFINED`` for encapsulated pixel data, PS3.5 A.4) and the file offset of its value."""

    tag: int
    vr: str
    length: int
    offset: int

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED


class _Walker:
    def __init__(self, fh: BinaryIO, size: int, implicit: bool, little: bool) -> None:
        self.pixel_data: PixelDataElement | None = None
        self.fh = fh
        self.size = size
        self.implicit = implicit
        self.end = "<" if little else ">"

    def _read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise InvalidDataError("data set ends in the middle of an element")
        return data

    def _tag(self) -> int:
        group, elem = struct.unpack(self.end + "HH", self._read(4))
        return int((group << 16) | elem)

    def _skip(self, length: int) -> None:
        pos = self.fh.tell()
        if pos + length > self.size:
            raise InvalidDataError("a value runs past the end of the data set")
        self.fh.seek(length, 1)

    def elements(self, stop: int | None, depth: int) -> None:
        """Walk elements until ``stop`` (a byte offset), an item delimiter, or end of file."""
        if depth > MAX_DEPTH:
            raise InvalidDataError("sequences nested too deeply")
        while True:
            pos = self.fh.tell()
            if stop is not None and pos >= stop:
                if pos > stop:
                    raise InvalidDataError("an item's elements overrun its length")
                return
            if stop is None and pos == self.size:
                if depth:
                    raise InvalidDataError("data set ends inside an undefined-length item")
                return
            tag = self._tag()
            if tag == ITEM_END:
                self._read(4)
                if depth == 0:
                    raise InvalidDataError("item delimiter outside a sequence")
                return
            group = tag >> 16
            if self.implicit or group == 0xFFFE:
                vr = b""
                (length,) = struct.unpack(self.end + "I", self._read(4))
            else:
                vr = self._read(2)
                if vr in _LONG_VRS:
                    self._read(2)
                    (length,) = struct.unpack(self.end + "I", self._read(4))
                else:
                    (length,) = struct.unpack(self.end + "H", self._read(2))
            if depth == 0 and tag in PIXEL_DATA_TAGS:
                self.pixel_data = PixelDataElement(
                    tag, vr.decode("ascii", "replace"), length, self.fh.tell()
                )
            if length == UNDEFINED:
                self.items(depth + 1)
            else:
                self._skip(length)

    def items(self, depth: int) -> None:
        """Walk items of an undefined-length sequence or encapsulated pixel data."""
        while True:
            tag = self._tag()
            (length,) = struct.unpack(self.end + "I", self._read(4))
            if tag == SEQ_END:
                return
            if tag != ITEM:
                raise InvalidDataError("expected a sequence item")
            if length == UNDEFINED:
                self.elements(None, depth)
            else:
                self._skip(length)


def dataset_offset(source: Source) -> int:
    """Byte offset where the data set starts, after the preamble and File Meta (PS3.10 7.1)."""
    with opened(source) as fh:
        return dataset_offset_in(fh)


def dataset_offset_in(fh: BinaryIO) -> int:
    """:func:`dataset_offset` of a Part 10 file open at its start (left after the File Meta)."""
    head = fh.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise InvalidDataError("not a DICOM Part 10 file (no DICM prefix)")
    while True:
        pos = fh.tell()
        raw = fh.read(8)
        if len(raw) < 8:
            return pos
        group = struct.unpack("<H", raw[:2])[0]
        if group != 0x0002:
            fh.seek(pos)
            return pos
        vr = raw[4:6]
        if vr in _LONG_VRS:
            length = struct.unpack("<I", fh.read(4))[0]
        else:
            length = struct.unpack("<H", raw[6:8])[0]
        if length == UNDEFINED:
            raise InvalidDataError("File Meta element with undefined length")
        fh.seek(length, 1)


def find_pixel_data(source: Source, transfer_syntax: str) -> PixelDataElement | None:
    """The top-level pixel data element of a Part 10 file (walks the structure once)."""
    with opened(source) as fh:
        return check_structure(fh, transfer_syntax, dataset_offset_in(fh))


def check_structure(
    source: Source, transfer_syntax: str, dataset_offset: int, *, max_inflated: int | None = None
) -> PixelDataElement | None:
    """Raise :class:`InvalidDataError` unless the data set from ``dataset_offset`` is whole.

    Returns the top-level pixel data element, if any (``None`` also for deflated data sets,
    whose deflate stream is only checked to be complete, inflated as a stream, and at most
    ``max_inflated`` bytes, else :class:`TooLargeError`; ingest walks a deflated data set's
    inflated twin instead, see ``services/metadata.py``).
    """
    with opened(source) as fh:
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
            fh.seek(dataset_offset)
            for _ in InflatedStream(fh, limit=max_inflated).chunks():
                pass  # a piece at a time: a deflate bomb stays small
            return None
        size = fh.seek(0, 2)
        fh.seek(dataset_offset)
        walker = _Walker(
            fh,
            size,
            implicit=transfer_syntax == IMPLICIT_VR_LE,
            little=transfer_syntax != EXPLICIT_VR_BE,
        )
        walker.elements(None, 0)
        return walker.pixel_data
