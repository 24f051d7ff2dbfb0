"""One frame of an instance's pixel data, read without loading the rest of the file.

PS3.5 8.2 (native pixel data: frames follow each other, each Rows x Columns x Samples per
Pixel x Bits Allocated bits, bit-packed when Bits Allocated is 1) and A.4 (encapsulated pixel
data: a Basic Offset Table item, then fragments; frames located by the Basic or Extended Offset
Table (7FE0,0001/0002), or one fragment per frame). PS3.18 8.7.3 serves these frames.

Only the header and the one frame asked for are read, so a 1 GB multi-frame file costs one
frame of memory. Deflated files (1.2.840.10008.1.2.1.99, PS3.5 A.5) too: the deflate stream
cannot be entered in the middle, so it is inflated from the start up to the frame asked for,
as a stream (``dicom/inflate.py``), keeping only the header and that frame.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.utils import as_pixel_options, pack_bits
from pydicom.uid import UID, ExplicitVRLittleEndian

from vesalius.dicom.inflate import FileHead, InflatedStream, read_head
from vesalius.dicom.scan import scan_pixel_header
from vesalius.dicom.source import Source, opened
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE
from vesalius.errors import InvalidDataError, NotFoundError, UnsupportedError

PIXEL_TAGS: Mapping[int, str] = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
UNDEFINED_LENGTH = 0xFFFFFFFF
# PS3.5 7.1.2: explicit VRs whose length field is 32 bits, after two reserved bytes
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
#: Values of a deflated file's header larger than this are skipped, not kept (a palette of
#: 65,536 16-bit entries is 128 KiB; what is larger is never needed to cut or decode a frame).
INFLATED_HEADER_VALUE = 1 << 20

Pixels = npt.NDArray[Any]


@dataclass(frozen=True)
class PixelLayout:
    """Where an instance's pixel data lies in its file and how it is encoded."""

    header: Dataset  # every element before the pixel data, file meta on .file_meta
    transfer_syntax: UID
    keyword: str | None  # PixelData, FloatPixelData, DoubleFloatPixelData; None: no pixels
    vr: str | None  # None when implicit VR
    value_offset: int  # offset of the value's first byte in the file (inflated: data set)
    value_length: int  # UNDEFINED_LENGTH when encapsulated
    number_of_frames: int
    encapsulated: bool = False  # PS3.5 A.4
    little_endian: bool = True
    inflated: bool = False  # deflated file: `value_offset` counts inflated data set bytes
    lean: bool = False  # `header` holds only what cutting a stored frame needs
    dataset_offset: int = 0  # file offset of the (deflated) data set


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame and what describes it after decoding."""

    pixels: Pixels
    layout: PixelLayout
    # Image Pixel values of the decoded array (pydicom's pixel_properties), e.g. a JPEG
    # stored as YBR_FULL_422 decodes to photometric_interpretation "RGB".
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def photometric_interpretation(self) -> str:
        value = self.properties.get("photometric_interpretation")
        return str(value or self.layout.header.get("PhotometricInterpretation", "MONOCHROME2"))


@dataclass(frozen=True)
class NativeFrame:
    """A frame as it is encoded in Explicit VR Little Endian (PS3.5 8.2), with the Image Pixel
    values that describe those bytes (they differ from the stored ones after decompression)."""

    data: bytes
    photometric_interpretation: str
    samples_per_pixel: int
    bits_allocated: int
    planar_configuration: int | None


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _number_of_frames(ds: Dataset) -> int:
    """(0028,0008) Number of Frames, 1 when absent or unusable (PS3.3 C.7.6.6)."""
    frames = _int(ds.get("NumberOfFrames"), 1)
    return frames if frames > 0 else 1


#: The attributes a stored frame is cut by (PS3.3 C.7.6.3, C.7.6.6, C.7.6.3.1.8), with
#: their VR for the small header of :func:`_lean_layout`.
_FRAME_ATTRIBUTES = {
    0x00280002: "US",  # Samples per Pixel
    0x00280004: "CS",  # Photometric Interpretation
    0x00280006: "US",  # Planar Configuration
    0x00280008: "IS",  # Number of Frames
    0x00280010: "US",  # Rows
    0x00280011: "US",  # Columns
    0x00280100: "US",  # Bits Allocated
}
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)


def _lean_layout(f: BinaryIO) -> PixelLayout | None:
    """The layout from our own walk of the element headers (``dicom/scan.py``), with a header
    holding only what cutting a stored frame needs; None to leave it to pydicom. Three to four
    times cheaper than pydicom's header parse, which was a seventh of a frame request."""
    found = scan_pixel_header(f)
    if found is None or found.pixel is None:
        return None
    ts = UID(found.transfer_syntax)
    header = Dataset()
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = ts
    for tag, vr in _FRAME_ATTRIBUTES.items():
        if vr == "CS":
            value: Any = found.text(tag)
        else:
            value = found.integer(tag)
        if value is not None:
            header.add_new(tag, vr, value)
    for tag in _EXTENDED_OFFSETS:
        if tag in found.values:
            header.add_new(tag, "OV", bytes(found.values[tag][1]))
    pixel = found.pixel
    return PixelLayout(
        header,
        ts,
        PIXEL_TAGS.get(pixel.tag),
        pixel.vr or None,
        pixel.offset,
        pixel.length,
        _number_of_frames(header),
        pixel.encapsulated,
        lean=True,
    )


def _at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_TAGS


def _inflated_layout(f: BinaryIO, head: FileHead) -> PixelLayout:
    """The layout of a deflated file, read by inflating up to its pixel data: the header keeps
    every element but values over :data:`INFLATED_HEADER_VALUE` bytes; offsets count inflated
    bytes (PS3.5 A.5: the inflated data set is Explicit VR Little Endian)."""
    try:
        stream = InflatedStream(f)
        ds = read_dataset(
            cast(BinaryIO, stream),
            is_implicit_VR=False,
            is_little_endian=True,
            stop_when=_at_pixels,
            defer_size=INFLATED_HEADER_VALUE,
        )
        raw = stream.read(8)
        if len(raw) == 8 and raw[4:6] in _LONG_VRS:
            raw += stream.read(4)
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error) as exc:
        raise InvalidDataError(f"cannot read the inflated DICOM data set: {exc}") from exc
    skipped = [t for t, e in ds._dict.items() if isinstance(e, RawDataElement) and e.value is None]
    for tag in skipped:  # too large to keep; pydicom could not read them back from a stream
        del ds._dict[tag]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(DEFLATED_EXPLICIT_VR_LE)
    ts, frames = UID(DEFLATED_EXPLICIT_VR_LE), _number_of_frames(ds)
    keyword = None
    if len(raw) >= 8:
        group, element = struct.unpack("<HH", raw[:4])
        keyword = PIXEL_TAGS.get(group << 16 | element)
    if keyword is None:
        return PixelLayout(ds, ts, None, None, -1, 0, frames, inflated=True)
    vr = raw[4:6].decode("ascii", "replace")
    if len(raw) == 12:
        (length,) = struct.unpack("<L", raw[8:12])
    else:
        (length,) = struct.unpack("<H", raw[6:8])
    if length == UNDEFINED_LENGTH:
        raise InvalidDataError("a deflated data set cannot hold encapsulated pixel data")
    return PixelLayout(
        ds,
        ts,
        keyword,
        vr,
        stream.tell(),
        length,
        frames,
        inflated=True,
        dataset_offset=head.dataset_offset,
    )


def _read_layout(f: BinaryIO) -> PixelLayout:
    try:
        head = read_head(f)
    except InvalidDataError:
        head = None  # pydicom says what is wrong below
    if head is not None and head.transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
        return _inflated_layout(f, head)
    f.seek(0)
    try:
        header = dcmread(f, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error) as exc:
        raise InvalidDataError(f"cannot read DICOM file: {exc}") from exc
    ts_value = header.file_meta.get("TransferSyntaxUID") if hasattr(header, "file_meta") else None
    if not ts_value:
        raise InvalidDataError("the file has no (0002,0010) Transfer Syntax UID")
    ts = UID(str(ts_value))
    frames = _number_of_frames(header)
    # A syntax pydicom does not know (newer than it, or private) is taken as explicit VR
    # little endian, encapsulated when the pixel data has an undefined length (PS3.5 A.4).
    known = ts.is_transfer_syntax
    if known and ts.is_deflated:  # read_head could not parse its File Meta: nor can we
        raise InvalidDataError("cannot read the File Meta of this deflated file")

    little = ts.is_little_endian if known else True
    endian = "<" if little else ">"
    raw = f.read(8)
    keyword = None
    if len(raw) == 8:
        group, element = struct.unpack(f"{endian}HH", raw[:4])
        keyword = PIXEL_TAGS.get(group << 16 | element)
    if keyword is None:
        return PixelLayout(header, ts, None, None, -1, 0, frames, little_endian=little)
    vr_bytes = raw[4:6]
    implicit = ts.is_implicit_VR if known else False
    explicit = not implicit and vr_bytes.isalpha() and vr_bytes.isupper()
    vr: str | None = None
    if not explicit:
        (length,) = struct.unpack(f"{endian}L", raw[4:8])
    elif vr_bytes in _LONG_VRS:
        vr = vr_bytes.decode("ascii")
        (length,) = struct.unpack(f"{endian}L", f.read(4))
    else:
        vr = vr_bytes.decode("ascii")
        (length,) = struct.unpack(f"{endian}H", raw[6:8])
    encapsulated = ts.is_encapsulated if known else length == UNDEFINED_LENGTH
    return PixelLayout(
        header, ts, keyword, vr, f.tell(), length, frames, encapsulated, little_endian=little
    )


def _check(layout: PixelLayout, number: int) -> None:
    if layout.keyword is None:
        raise InvalidDataError("the instance has no pixel data")
    count = layout.number_of_frames
    if not 1 <= number <= count:
        raise NotFoundError(
            f"frame {number} does not exist: the instance has {count} frame{'s' * (count > 1)}"
        )


def _frame_bits(layout: PixelLayout) -> int:
    """Bits in one native frame (PS3.5 8.2; YBR_FULL_422 stores 2 samples a pixel, 8.2.6)."""
    ds = layout.header
    rows, columns = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    samples = _int(ds.get("SamplesPerPixel"), 1)
    bits = _int(ds.get("BitsAllocated"), 0)
    if layout.keyword == "FloatPixelData":
        bits = 32
    elif layout.keyword == "DoubleFloatPixelData":
        bits = 64
    if rows <= 0 or columns <= 0 or samples <= 0 or bits <= 0:
        raise InvalidDataError("Rows, Columns, Samples per Pixel or Bits Allocated is missing")
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422" and samples == 3:
        samples = 2
    return rows * columns * samples * bits


def _slice_native(read: Callable[[int, int], bytes], layout: PixelLayout, number: int) -> bytes:
    """Frame ``number`` from native pixel data; ``read(offset, size)`` reads from the value."""
    frame_bits = _frame_bits(layout)
    start_bit = (number - 1) * frame_bits
    start, shift = divmod(start_bit, 8)
    size = (shift + frame_bits + 7) // 8
    if start + size > layout.value_length:
        raise InvalidDataError(
            f"the pixel data holds {layout.value_length} bytes, too few for frame {number}"
        )
    data = read(start, size)
    if len(data) < size:
        raise InvalidDataError("the file ends inside the pixel data")
    if shift == 0 and frame_bits % 8 == 0:
        return data
    # Bit-packed frame not on a byte boundary (PS3.5 8.1.1, Bits Allocated 1): realign it.
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    return np.packbits(bits[shift : shift + frame_bits], bitorder="little").tobytes()


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths)
    return None


def _encapsulated(buffer: Any, layout: PixelLayout, number: int) -> bytes:
    try:
        frame: bytes = get_frame(
            buffer,
            number - 1,
            extended_offsets=_extended_offsets(layout.header),
            number_of_frames=layout.number_of_frames,
        )
    except (ValueError, struct.error, EOFError, OSError) as exc:
        raise InvalidDataError(
            f"cannot find frame {number} in the encapsulated data: {exc}"
        ) from exc
    return frame


def _decoder(ts: UID) -> Decoder:
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise UnsupportedError(f"no decoder for the transfer syntax {ts.name} ({ts})") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise UnsupportedError(f"cannot decode {ts.name} ({ts}): {missing}")
    return decoder


def _little_endian(pixels: Pixels, bits_allocated: int) -> bytes:
    if bits_allocated == 1:
        return bytes(pack_bits(pixels, pad=False))
    dtype = pixels.dtype
    if dtype.kind in "ui" and bits_allocated in (8, 16, 32, 64):
        dtype = np.dtype(f"{dtype.kind}{bits_allocated // 8}")
    return np.ascontiguousarray(pixels, dtype=dtype.newbyteorder("<")).tobytes()


class FrameReader:
    """An open instance whose frames are read one at a time; the header is parsed once."""

    def __init__(self, f: BinaryIO, layout: PixelLayout) -> None:
        self._f = f
        self.layout = layout
        self._stream: InflatedStream | None = None  # a deflated file's data set, inflating

    def _read_inflated(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` in the pixel value of a deflated file: inflated from
        where the last read ended, or again from the start for an earlier frame."""
        target = self.layout.value_offset + offset
        if self._stream is None or target < self._stream.tell():
            self._f.seek(self.layout.dataset_offset)
            self._stream = InflatedStream(self._f)
        self._stream.seek(target)
        return self._stream.read(size)

    def _full(self) -> PixelLayout:
        """The layout with pydicom's whole header (decoding needs every Image Pixel and
        Modality LUT attribute), parsed now if the reader was opened lean."""
        if self.layout.lean:
            self._f.seek(0)
            self.layout = _read_layout(self._f)
        return self.layout

    @property
    def count(self) -> int:
        """Number of Frames or 1; 0 when there is no pixel data."""
        return self.layout.number_of_frames if self.layout.keyword else 0

    def read(self, number: int) -> bytes:
        """The stored bytes of frame ``number`` (1-based), as PS3.18 8.7.3.5 serves them.

        Native data: the frame's slice of the value (bit-packed frames realigned to start on a
        byte). Encapsulated data: the frame's fragments concatenated (PS3.5 A.4).
        """
        layout, f = self.layout, self._f
        _check(layout, number)
        if layout.inflated:
            return _slice_native(self._read_inflated, layout, number)
        if layout.encapsulated:
            if layout.value_length != UNDEFINED_LENGTH:
                raise InvalidDataError("encapsulated pixel data must have an undefined length")
            f.seek(layout.value_offset)
            return _encapsulated(f, layout, number)

        def read(offset: int, size: int) -> bytes:
            f.seek(layout.value_offset + offset)
            return f.read(size)

        return _slice_native(read, layout, number)

    def decode(self, number: int, *, raw: bool = False) -> DecodedFrame:
        """Decode frame ``number`` with pydicom's decoders, reading only that frame.

        With ``raw=False`` YBR_FULL and YBR_FULL_422 become RGB (``properties`` says so);
        multi-sample frames always come with Planar Configuration 0.
        """
        layout = self._full()
        _check(layout, number)
        ts = layout.transfer_syntax
        src: Any = self._f
        index, frames = number - 1, layout.number_of_frames
        if layout.inflated:  # one inflated frame, decoded as the native data it is
            ts, src, index, frames = UID(ExplicitVRLittleEndian), self.read(number), 0, 1
        decoder = _decoder(ts)
        try:
            if not layout.inflated:
                self._f.seek(layout.value_offset)
            opts = as_pixel_options(layout.header)
            opts.update(transfer_syntax_uid=ts, pixel_keyword=layout.keyword)
            opts["number_of_frames"] = frames
            if layout.vr:
                opts["pixel_vr"] = layout.vr
            pixels, properties = decoder.as_array(src, index=index, raw=raw, **opts)
        except (RuntimeError, NotImplementedError) as exc:
            raise UnsupportedError(f"cannot decode frame {number} ({ts.name}): {exc}") from exc
        except Exception as exc:  # codec plugins raise what they like
            raise InvalidDataError(f"cannot decode frame {number} ({ts.name}): {exc}") from exc
        return DecodedFrame(pixels, layout, properties)

    def native(self, number: int) -> NativeFrame:
        """Frame ``number`` as native Explicit VR Little Endian bytes, with what describes them.

        Native little endian data (also deflated): the stored bytes, unchanged (planar
        configuration as stored). Big endian: swapped to little endian. Compressed: decoded by
        pydicom with colour conversion, so YBR_FULL/YBR_FULL_422 (JPEG) and YBR_RCT/YBR_ICT
        (JPEG 2000) come out as RGB, Planar Configuration 0; ``photometric_interpretation`` is
        what the decoder reports.
        """
        layout = self._full()
        ds = layout.header
        if layout.keyword is not None and not layout.encapsulated and layout.little_endian:
            return NativeFrame(
                self.read(number),
                str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
                _int(ds.get("SamplesPerPixel"), 1),
                _int(ds.get("BitsAllocated"), 0),
                _int(ds.get("PlanarConfiguration"), 0) if "PlanarConfiguration" in ds else None,
            )
        decoded = self.decode(number, raw=not layout.encapsulated)
        props = decoded.properties
        bits = _int(props.get("bits_allocated"), _int(ds.get("BitsAllocated"), 0))
        samples = _int(props.get("samples_per_pixel"), _int(ds.get("SamplesPerPixel"), 1))
        return NativeFrame(
            _little_endian(decoded.pixels, bits),
            decoded.photometric_interpretation,
            samples,
            bits,
            _int(props.get("planar_configuration"), 0) if samples > 1 else None,
        )


@contextmanager
def open_frames(source: Source, *, lean: bool = False) -> Iterator[FrameReader]:
    """Open ``source`` to read several frames with one header parse (PS3.18 8.7.3 frame
    lists); a reader given is read from, not closed.

    ``lean``: the caller mostly reads stored frames (:meth:`FrameReader.read`), so the header
    is our own walk of the element headers where it can be; decoding parses it fully then."""
    with ExitStack() as stack:
        try:
            f = stack.enter_context(opened(source))
        except FileNotFoundError as exc:
            raise NotFoundError(f"no file for this instance: {exc}") from exc
        layout = _lean_layout(f) if lean else None
        if layout is None:
            f.seek(0)
            layout = _read_layout(f)
        yield FrameReader(f, layout)


def pixel_layout(source: Source) -> PixelLayout:
    """The header of ``source`` and where its pixel data lies, without reading the pixels."""
    with open_frames(source) as reader:
        return reader.layout


def frame_count(source: Source) -> int:
    """Number of frames in ``source``: Number of Frames or 1; 0 when there is no pixel data."""
    with open_frames(source, lean=True) as reader:
        return reader.count


def read_frame(source: Source, number: int) -> bytes:
    """The stored bytes of frame ``number`` (1-based); see :meth:`FrameReader.read`."""
    with open_frames(source, lean=True) as reader:
        return reader.read(number)


def decoded_frame(source: Source, number: int, *, raw: bool = False) -> DecodedFrame:
    """Frame ``number`` (1-based) decoded, with its header; see :meth:`FrameReader.decode`."""
    with open_frames(source) as reader:
        return reader.decode(number, raw=raw)


def decode_frame(source: Source, number: int) -> Pixels:
    """Decoded pixels of frame ``number`` (1-based): (rows, columns[, samples]), colour as RGB."""
    return decoded_frame(source, number).pixels


def native_frame_info(source: Source, number: int) -> NativeFrame:
    """Frame ``number`` as Explicit VR Little Endian bytes; see :meth:`FrameReader.native`."""
    with open_frames(source) as reader:
        return reader.native(number)


def native_frame(source: Source, number: int) -> bytes:
    """Frame ``number`` as it would be encoded in Explicit VR Little Endian (PS3.18 8.7.3.5,
    application/octet-stream); see :meth:`FrameReader.native` for the colour space."""
    return native_frame_info(source, number).data
