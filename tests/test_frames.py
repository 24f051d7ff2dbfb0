"""dicom/frames.py: one frame's stored bytes, decoded pixels and native bytes (PS3.5 8.2, A.4)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels.utils import pack_bits
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from synth import make_instance
from vesalius.dicom import frames
from vesalius.errors import InvalidDataError, NotFoundError, UnsupportedError


def bundled(name: str) -> Path:
    """One of pydicom's bundled test files (never downloaded: tests run offline)."""
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(str(found))


def native_image(path: Path, pixels: np.ndarray, **attrs: Any) -> Path:
    """A synthetic instance holding ``pixels`` (frames, rows, columns[, samples])."""
    count, rows, columns = pixels.shape[:3]
    samples = pixels.shape[3] if pixels.ndim == 4 else 1
    bits = pixels.dtype.itemsize * 8
    defaults: dict[str, Any] = {
        "BitsAllocated": bits,
        "BitsStored": bits,
        "HighBit": bits - 1,
        "PixelRepresentation": int(pixels.dtype.kind == "i"),
        "SamplesPerPixel": samples,
        "NumberOfFrames": count,
    }
    if samples == 3:
        defaults |= {"PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}
    make_instance(path, rows=rows, columns=columns, **(defaults | attrs))
    ds = dcmread(path)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


def encapsulated_copy(source: Path, target: Path, *, extended: bool) -> list[bytes]:
    """Re-encapsulate ``source``'s frames with a Basic or an Extended Offset Table."""
    ds = dcmread(source)
    count = int(ds.get("NumberOfFrames", 1))
    stored = list(generate_frames(ds.PixelData, number_of_frames=count))
    if extended:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            stored
        )
    else:
        ds.PixelData = encapsulate(stored, has_bot=True)
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.save_as(target, enforce_file_format=True)
    return stored


@pytest.fixture
def ct_frames(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    pixels = rng.integers(-1024, 3000, size=(5, 6, 4), dtype=np.int16)
    path = native_image(tmp_path / "ct.dcm", pixels, RescaleSlope=1, RescaleIntercept=-1024)
    return path, pixels


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_native_frames_are_slices_of_the_pixel_data(tmp_path: Path, syntax: str) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 4096, size=(4, 3, 5), dtype=np.uint16)
    path = native_image(tmp_path / "mr.dcm", pixels, transfer_syntax=syntax)
    ds = dcmread(path)
    size = 3 * 5 * 2
    assert frames.frame_count(path) == 4
    for number in range(1, 5):
        assert frames.read_frame(path, number) == ds.PixelData[(number - 1) * size : number * size]
        assert np.array_equal(frames.decode_frame(path, number), ds.pixel_array[number - 1])
        assert frames.native_frame(path, number) == frames.read_frame(path, number)


def test_signed_frames_decode_to_the_stored_values(ct_frames: tuple[Path, np.ndarray]) -> None:
    path, pixels = ct_frames
    for number in (1, 3, 5):
        decoded = frames.decode_frame(path, number)
        assert decoded.dtype == np.int16
        assert np.array_equal(decoded, pixels[number - 1])


def test_rgb_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(2, 4, 3, 3), dtype=np.uint8)
    path = native_image(tmp_path / "rgb.dcm", pixels)
    assert frames.read_frame(path, 2) == pixels[1].tobytes()
    assert np.array_equal(frames.decode_frame(path, 2), pixels[1])
    info = frames.native_frame_info(path, 2)
    assert (info.photometric_interpretation, info.samples_per_pixel) == ("RGB", 3)


@pytest.mark.parametrize("number", [0, 6, 100])
def test_frame_out_of_range_is_not_found(ct_frames: tuple[Path, np.ndarray], number: int) -> None:
    path, _ = ct_frames
    with pytest.raises(NotFoundError, match="5 frames"):
        frames.read_frame(path, number)
    with pytest.raises(NotFoundError):
        frames.decode_frame(path, number)


def test_no_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "nopixels.dcm"
    make_instance(path)
    ds = dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    assert frames.frame_count(path) == 0
    with pytest.raises(InvalidDataError, match="no pixel data"):
        frames.read_frame(path, 1)
    with pytest.raises(InvalidDataError):
        frames.decode_frame(path, 1)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        frames.read_frame(tmp_path / "absent.dcm", 1)


@pytest.mark.parametrize(
    "name",
    [
        "rtdose_rle.dcm",  # RLE, 15 frames, no Basic Offset Table
        "SC_rgb_rle_2frame.dcm",
        "examples_ybr_color.dcm",  # JPEG Baseline YBR_FULL_422, 30 frames
        "MR_small_jp2klossless.dcm",
        "JPEG2000.dcm",
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1
        "MR_small_jpeg_ls_lossless.dcm",
        "JPGExtended.dcm",
    ],
)
def test_encapsulated_frames(name: str) -> None:
    path = bundled(name)
    ds = dcmread(path)
    count = int(ds.get("NumberOfFrames", 1))
    expected = list(generate_frames(ds.PixelData, number_of_frames=count))
    pixels = ds.pixel_array
    assert frames.frame_count(path) == count
    for number in sorted({1, 2, count} & set(range(1, count + 1))):
        assert frames.read_frame(path, number) == expected[number - 1]
        reference = pixels if count == 1 else pixels[number - 1]
        assert np.array_equal(frames.decode_frame(path, number), reference)
    with pytest.raises(NotFoundError, match=str(count)):
        frames.read_frame(path, count + 1)


@pytest.mark.parametrize("extended", [False, True], ids=["basic", "extended"])
def test_offset_tables(tmp_path: Path, extended: bool) -> None:
    target = tmp_path / "copy.dcm"
    stored = encapsulated_copy(bundled("rtdose_rle.dcm"), target, extended=extended)
    assert ("ExtendedOffsetTable" in dcmread(target)) is extended
    for number in (1, 7, 15):
        assert frames.read_frame(target, number) == stored[number - 1]
    assert np.array_equal(frames.decode_frame(target, 15), dcmread(target).pixel_array[14])


def test_bit_packed_frames_off_byte_boundaries(tmp_path: Path) -> None:
    """Bits Allocated 1 with 9 pixels a frame: frames 2.. start mid-byte (PS3.5 8.1.1)."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, size=(4, 3, 3), dtype=np.uint8)
    path = tmp_path / "seg.dcm"
    make_instance(
        path,
        rows=3,
        columns=3,
        BitsAllocated=1,
        BitsStored=1,
        HighBit=0,
        NumberOfFrames=4,
    )
    ds = dcmread(path)
    ds.PixelData = pack_bits(bits)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    for number in range(1, 5):
        data = frames.read_frame(path, number)
        assert len(data) == 2
        unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        assert np.array_equal(unpacked[:9].reshape(3, 3), bits[number - 1])
        assert not unpacked[9:].any()  # the frame starts at bit 0, padded with zeros
        assert np.array_equal(frames.decode_frame(path, number), bits[number - 1])


def test_single_bit_packed_frame() -> None:
    path = bundled("liver_1frame.dcm")
    assert frames.read_frame(path, 1) == dcmread(path).PixelData[: 512 * 512 // 8]


def test_big_endian_stored_bytes_and_native_bytes() -> None:
    path = bundled("MR_small_bigendian.dcm")
    ds = dcmread(path)
    assert frames.read_frame(path, 1) == ds.PixelData  # as stored: big endian
    assert frames.native_frame(path, 1) == ds.pixel_array.astype("<i2").tobytes()
    assert np.array_equal(frames.decode_frame(path, 1), ds.pixel_array)


def test_deflated_instance() -> None:
    path = bundled("image_dfl.dcm")
    ds = dcmread(path)
    assert frames.read_frame(path, 1) == ds.PixelData[: 512 * 512]
    assert np.array_equal(frames.decode_frame(path, 1), ds.pixel_array)


def test_native_frame_of_ybr_jpeg_is_rgb() -> None:
    """Decompressed YBR_FULL_422 JPEG is returned as RGB (what pydicom's decoders give)."""
    path = bundled("SC_rgb_dcmtk_+eb+cy+np.dcm")
    ds = dcmread(path)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    info = frames.native_frame_info(path, 1)
    assert info.photometric_interpretation == "RGB"
    assert info.planar_configuration == 0
    assert info.data == ds.pixel_array.tobytes()
    assert len(info.data) == 100 * 100 * 3


def test_native_frame_of_compressed_multiframe() -> None:
    path = bundled("rtdose_rle.dcm")
    ds = dcmread(path)
    assert frames.native_frame(path, 9) == ds.pixel_array[8].astype("<u4").tobytes()


def test_float_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "float.dcm"
    make_instance(path, rows=2, columns=3, BitsAllocated=32, NumberOfFrames=2)
    ds = dcmread(path)
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    values = np.arange(12, dtype="<f4").reshape(2, 2, 3) / 7
    ds.FloatPixelData = values.tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert frames.frame_count(path) == 2
    assert frames.read_frame(path, 2) == values[1].tobytes()
    assert np.array_equal(frames.decode_frame(path, 2), values[1])


def _peak(function: Any, *args: Any) -> int:
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_at_one_frame(tmp_path: Path) -> None:
    """Reading a frame of a 16 MiB multi-frame file allocates about one frame (256 KiB)."""
    frame_size = 256 * 512 * 2
    pixels = np.zeros((64, 256, 512), dtype=np.uint16)
    native = native_image(tmp_path / "big.dcm", pixels)
    assert native.stat().st_size > 64 * frame_size
    assert _peak(frames.read_frame, native, 40) < 4 * frame_size
    assert _peak(frames.decode_frame, native, 40) < 4 * frame_size

    ds = dcmread(native)
    fragments = [bytes([n]) * frame_size for n in range(64)]
    ds.PixelData = encapsulate(fragments, has_bot=False)
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
    encapsulated = tmp_path / "big_rle.dcm"
    ds.save_as(encapsulated, enforce_file_format=True)
    del ds
    assert frames.read_frame(encapsulated, 40) == fragments[39]
    assert _peak(frames.read_frame, encapsulated, 40) < 4 * frame_size


def test_unknown_transfer_syntax_serves_stored_frames(tmp_path: Path) -> None:
    """A syntax newer than pydicom: frames are still located (PS3.5 A.4), not decoded."""
    ds = dcmread(bundled("rtdose_rle.dcm"))
    stored = list(generate_frames(ds.PixelData, number_of_frames=15))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.110"  # JPEG XL, unknown to pydicom 3.0
    path = tmp_path / "future.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert frames.frame_count(path) == 15
    assert frames.read_frame(path, 4) == stored[3]
    with pytest.raises(UnsupportedError, match=r"1\.2\.840\.10008\.1\.2\.4\.110"):
        frames.decode_frame(path, 4)


def test_open_frames_reads_several_with_one_parse(ct_frames: tuple[Path, np.ndarray]) -> None:
    path, pixels = ct_frames
    with frames.open_frames(path) as reader:
        assert reader.count == 5
        assert [reader.read(n) for n in (5, 1, 3)] == [pixels[n - 1].tobytes() for n in (5, 1, 3)]
        assert np.array_equal(reader.decode(2).pixels, pixels[1])
        assert reader.native(4).data == pixels[3].tobytes()


def _pixel_test_files() -> list[Path]:
    from pydicom.data import get_testdata_files

    found = []
    for name in get_testdata_files("*.dcm"):
        path = Path(name)
        try:
            with path.open("rb") as fh:
                if fh.read(132)[128:] != b"DICM":
                    continue
            if "PixelData" in dcmread(path, stop_before_pixels=False, defer_size=64):
                found.append(path)
        except Exception:
            continue
    return found


def test_lean_layout_cuts_the_same_frames_as_pydicom() -> None:
    """Serving stored frames walks the element headers itself (``lean``); on every pydicom test
    file with pixel data it gives the layout and the frame bytes of pydicom's header parse,
    or it declines and pydicom's path runs."""
    files = _pixel_test_files()
    assert len(files) > 40
    lean_used = 0
    for path in files:
        try:
            frames.pixel_layout(path)
        except InvalidDataError:
            with pytest.raises(InvalidDataError), frames.open_frames(path, lean=True):
                pass
            continue
        with frames.open_frames(path) as full, frames.open_frames(path, lean=True) as lean:
            lean_used += lean.layout.lean
            assert lean.count == full.count, path.name
            for attribute in ("value_offset", "value_length", "encapsulated", "keyword"):
                assert getattr(lean.layout, attribute) == getattr(full.layout, attribute), (
                    path.name,
                    attribute,
                )
            for number in sorted({1, full.count}):
                try:
                    expected: bytes | type[Exception] = full.read(number)
                except (InvalidDataError, UnsupportedError) as exc:
                    expected = type(exc)
                if isinstance(expected, bytes):
                    assert lean.read(number) == expected, (path.name, number)
                else:
                    with pytest.raises(expected):
                        lean.read(number)
    assert lean_used > len(files) // 2  # the fast path is the common one
