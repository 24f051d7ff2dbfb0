"""Writing an instance in another transfer syntax (PS3.5 10, A; PS3.18 8.7.3.5.2).

Supported: the same syntax (bytes copied unchanged); any native syntax (Implicit/Explicit VR
Little Endian, Explicit VR Big Endian, Deflated) to Implicit VR Little Endian, Explicit VR
Little Endian or Deflated Explicit VR Little Endian; any compressed syntax pydicom can decode
to those (decompressed: YBR_FULL/YBR_FULL_422 JPEG and YBR_RCT/YBR_ICT JPEG 2000 become RGB,
Planar Configuration 0); and, into RLE Lossless, JPEG 2000 Lossless or JPEG-LS Lossless when
pydicom has an encoder for it installed, from either. Anything else is NotAcceptableError.

Apart from the copy, and Deflated to Explicit VR Little Endian (the inflated bytes streamed
behind the updated File Meta, ``dicom/inflate.py``), a transcode holds one instance in memory
(pydicom reads it whole), compressed and decompressed at once; callers bound the instance size,
and the inflated size of a deflated source with ``max_inflated``.
"""

from __future__ import annotations

import io
import shutil
import struct
from contextlib import ExitStack
from typing import BinaryIO, cast

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import compress, decompress, pack_bits, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from vesalius.dicom.inflate import open_inflated, write_explicit
from vesalius.dicom.source import Source, file_meta, opened
from vesalius.dicom.structure import dataset_offset_in
from vesalius.errors import InvalidDataError, NotAcceptableError, NotFoundError

NATIVE_SYNTAXES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
# What this module writes without compression (Explicit VR Big Endian is retired: not written)
UNCOMPRESSED_TARGETS = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
# Lossless encodings written when pydicom has an encoder for them installed
LOSSLESS_TARGETS = frozenset({RLELossless, JPEG2000Lossless, JPEGLSLossless})
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _can_decode(ts: UID) -> bool:
    if ts in NATIVE_SYNTAXES:
        return True
    try:
        return bool(get_decoder(ts).is_available)
    except NotImplementedError:
        return False


def _can_encode(ts: UID) -> bool:
    if ts not in LOSSLESS_TARGETS:
        return False
    try:
        return bool(get_encoder(ts).is_available)
    except NotImplementedError:
        return False


def can_transcode(source_ts: str, target_ts: str) -> bool:
    """Whether :func:`transcode` can turn ``source_ts`` into ``target_ts``.

    True for encodings that depend on the image itself (e.g. RLE of 32-bit data) may still
    fail in :func:`transcode` with NotAcceptableError.
    """
    source, target = UID(source_ts), UID(target_ts)
    if source == target:
        return True
    if not _can_decode(source):
        return False
    return target in UNCOMPRESSED_TARGETS or _can_encode(target)


def _swap_words(ds: Dataset) -> None:
    """Byte-swap the raw values of OW/OF/OL/OD/OV elements read from a big endian file
    (pydicom keeps them as bytes and would write them unswapped)."""

    def swap(dataset: Dataset, elem: DataElement) -> None:
        width = _SWAP_WIDTH.get(str(elem.VR))
        if width and isinstance(elem.value, bytes) and elem.keyword not in _PIXEL_KEYWORDS:
            usable = len(elem.value) - len(elem.value) % width
            words = np.frombuffer(elem.value[:usable], dtype=f">u{width}")
            elem.value = words.astype(f"<u{width}").tobytes() + elem.value[usable:]

    ds.walk(swap)


def _native_little_endian(ds: Dataset) -> None:
    """Re-encode the pixel data of a big endian data set in little endian (PS3.5 7.3)."""
    _swap_words(ds)
    keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        return
    try:
        pixels = pixel_array(ds, raw=True)
    except Exception as exc:  # the native decoder raises on inconsistent attributes
        raise InvalidDataError(f"cannot read the big endian pixel data: {exc}") from exc
    bits = int(ds.get("BitsAllocated", 8))
    if bits == 1:
        data = pack_bits(pixels, pad=False)
    else:
        data = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    if len(data) % 2:
        data += b"\x00"
    elem = ds[keyword]
    elem.value = data
    if keyword == "PixelData":
        elem.VR = "OB" if bits <= 8 else "OW"
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        ds.PhotometricInterpretation = "YBR_FULL"  # the native decoder upsampled it
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = 0


def _decompress(ds: Dataset) -> None:
    try:
        decompress(ds, as_rgb=True, generate_instance_uid=False)
    except Exception as exc:  # codec plugins raise what they like
        raise NotAcceptableError(f"cannot decompress the pixel data: {exc}") from exc
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]


def _compress(ds: Dataset, target: UID) -> None:
    if "PixelData" not in ds:
        raise NotAcceptableError(f"only image pixel data can be encoded as {target.name}")
    try:
        compress(ds, target, generate_instance_uid=False)
    except Exception as exc:  # encoders refuse unsupported bit depths, colour spaces...
        raise NotAcceptableError(f"cannot encode this instance as {target.name}: {exc}") from exc


def streamed(source_ts: str, target_ts: str) -> bool:
    """Whether :func:`transcode` streams this conversion (memory stays flat, whatever the
    size): a copy, or Deflated to Explicit VR Little Endian."""
    return source_ts == target_ts or (
        source_ts == DeflatedExplicitVRLittleEndian and target_ts == ExplicitVRLittleEndian
    )


def _read(fh: BinaryIO, source: UID, max_inflated: int | None) -> Dataset:
    """The whole data set; a deflated one inflated as a stream into pydicom's reader, so the
    compressed and the inflated bytes are never both held (past ``max_inflated`` bytes:
    TooLargeError)."""
    if source != DeflatedExplicitVRLittleEndian:
        fh.seek(0)
        return dcmread(fh)
    with open_inflated(fh, limit=max_inflated) as (_, stream):
        ds = read_dataset(cast(BinaryIO, stream), is_implicit_VR=False, is_little_endian=True)
    ds.file_meta = FileMetaDataset(file_meta(fh))
    return ds


def transcode(
    source: Source, target_ts: str, out: BinaryIO, *, max_inflated: int | None = None
) -> None:
    """Write ``source`` to ``out`` as a Part 10 file (PS3.10 7) in ``target_ts``.

    The SOP Instance UID is kept; File Meta Transfer Syntax UID is updated. Raises
    NotAcceptableError when the conversion is not supported (PS3.18 8.7.3.5.2), and
    TooLargeError when a deflated source inflates past ``max_inflated`` bytes (None: no
    limit) on a conversion that is not streamed.
    """
    with ExitStack() as stack:
        try:
            fh = stack.enter_context(opened(source))
        except FileNotFoundError as exc:
            raise NotFoundError(f"no file for this instance: {exc}") from exc
        _transcode(fh, UID(target_ts), out, max_inflated)


def _transcode(fh: BinaryIO, target: UID, out: BinaryIO, max_inflated: int | None) -> None:
    try:
        meta = file_meta(fh)
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error) as exc:
        raise InvalidDataError(f"cannot read DICOM file meta: {exc}") from exc
    if "TransferSyntaxUID" not in meta:
        raise InvalidDataError("the file has no (0002,0010) Transfer Syntax UID")
    source = UID(str(meta.TransferSyntaxUID))
    if source == target:
        fh.seek(0)
        shutil.copyfileobj(fh, out)
        return
    if streamed(source, target):
        write_explicit(fh, out)
        return
    if not can_transcode(source, target):
        raise NotAcceptableError(f"cannot convert {source.name} ({source}) to {target}")
    try:
        ds = _read(fh, source, max_inflated)
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error) as exc:
        raise InvalidDataError(f"cannot read DICOM file: {exc}") from exc
    has_pixels = any(k in ds for k in _PIXEL_KEYWORDS)
    if source.is_compressed and has_pixels:
        _decompress(ds)
    elif not source.is_little_endian:
        _native_little_endian(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if target in LOSSLESS_TARGETS:
        _compress(ds, target)
    ds.file_meta.TransferSyntaxUID = target
    for _ in ds.iterall():
        pass  # parse every raw element, so each has a VR (some files lie about being explicit)
    try:
        dcmwrite(out, ds, enforce_file_format=True)
    except AttributeError as exc:  # required File Meta / SOP attributes missing
        raise InvalidDataError(f"cannot write this instance as a Part 10 file: {exc}") from exc
    except (ValueError, TypeError, struct.error, OverflowError) as exc:
        raise NotAcceptableError(f"cannot write this instance as {target.name}: {exc}") from exc


def decoded_size(source: Source) -> int | None:
    """The size of the native pixel data of ``source`` (Rows x Columns x Samples per Pixel x
    Bits Allocated x Number of Frames, PS3.5 8.2), from its header; None when it has no
    image."""
    try:
        with opened(source) as fh:
            ds = dcmread(fh, stop_before_pixels=True, defer_size=1024)
            rows, columns = int(ds.Rows), int(ds.Columns)
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            bits = int(ds.get("BitsAllocated", 8) or 8)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError, InvalidDicomError, OSError, EOFError):
        return None
    return rows * columns * samples * frames * bits // 8


def transcoded_data_set(
    source: Source, target_ts: str, *, max_decoded: int, max_inflated: int | None = None
) -> bytes:
    """The data set of ``source`` in ``target_ts``, without preamble or File Meta (a C-STORE's
    data set, PS3.7 9.3.1), by :func:`transcode`; NotAcceptableError when the image would
    decode to more than ``max_decoded`` bytes (it is held in memory)."""
    size = decoded_size(source)
    if size is not None and size > max_decoded:
        raise NotAcceptableError(
            f"the image decodes to {size >> 20} MiB, over the {max_decoded >> 20} MiB that "
            "may be converted in memory"
        )
    out = io.BytesIO()
    transcode(source, target_ts, out, max_inflated=max_inflated)
    out.seek(0)
    offset = dataset_offset_in(out)
    return out.getbuffer()[offset:].tobytes()
