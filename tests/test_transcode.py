"""dicom/transcode.py: instances rewritten in another transfer syntax (PS3.5 10, A)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from conftest import dcmtk
from synth import make_instance
from vesalius.dicom.transcode import can_transcode, transcode
from vesalius.errors import NotAcceptableError

ELE, ILE = ExplicitVRLittleEndian, ImplicitVRLittleEndian


def bundled(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(str(found))


def converted(path: Path, target: str, tmp_path: Path) -> Path:
    out = tmp_path / f"out-{target}.dcm"
    with out.open("wb") as f:
        transcode(path, target, f)
    dcmtk("dcmftest", str(out))  # a Part 10 file, preamble and meta included
    dcmtk("dcmdump", "-q", str(out))  # parses to the end
    return out


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    path = tmp_path / "ct.dcm"
    rng = np.random.default_rng(9)
    make_instance(
        path,
        rows=8,
        columns=6,
        BitsStored=16,
        HighBit=15,
        PixelRepresentation=1,
        RescaleIntercept=-1024,
        RescaleSlope=1,
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        ReferencedImageSequence=[{"ReferencedSOPInstanceUID": "1.2.3.4"}],
    )
    ds = dcmread(path)
    ds.PixelData = rng.integers(-1024, 3000, (8, 6), dtype="<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_can_transcode() -> None:
    assert can_transcode(ELE, ELE)
    assert can_transcode(JPEGBaseline8Bit, JPEGBaseline8Bit)
    assert can_transcode(ELE, ILE) and can_transcode(ILE, ELE)
    assert can_transcode(ExplicitVRBigEndian, ELE)
    assert can_transcode(DeflatedExplicitVRLittleEndian, ILE)
    assert can_transcode(JPEGBaseline8Bit, ELE)
    assert can_transcode(JPEG2000Lossless, ILE)
    assert can_transcode(ELE, RLELossless)
    assert not can_transcode(ELE, JPEGBaseline8Bit)  # no lossy encoding
    assert not can_transcode(ELE, ExplicitVRBigEndian)  # retired: never written
    assert not can_transcode(MPEG2MPML, ELE)  # no decoder
    assert not can_transcode(ELE, "1.2.3.4")


def test_same_syntax_is_a_byte_copy(ct: Path) -> None:
    out = io.BytesIO()
    transcode(ct, ELE, out)
    assert out.getvalue() == ct.read_bytes()


def test_native_round_trip(ct: Path, tmp_path: Path) -> None:
    implicit = converted(ct, ILE, tmp_path)
    back = tmp_path / "back.dcm"
    with back.open("wb") as f:
        transcode(implicit, ELE, f)
    original, middle, final = dcmread(ct), dcmread(implicit), dcmread(back)
    assert middle.file_meta.TransferSyntaxUID == ILE
    assert final.file_meta.TransferSyntaxUID == ELE
    assert middle == original and final == original  # every element, pixel data included
    assert final.SOPInstanceUID == original.SOPInstanceUID


def test_deflated_both_ways(ct: Path, tmp_path: Path) -> None:
    deflated = converted(ct, DeflatedExplicitVRLittleEndian, tmp_path)
    assert dcmread(deflated) == dcmread(ct)
    inflated = converted(bundled("image_dfl.dcm"), ELE, tmp_path)
    assert dcmread(inflated).PixelData == dcmread(bundled("image_dfl.dcm")).PixelData


@pytest.mark.parametrize(
    "name",
    ["MR_small_bigendian.dcm", "rtdose_expb.dcm", "SC_rgb_small_odd_big_endian.dcm"],
)
def test_big_endian_to_little_endian(name: str, tmp_path: Path) -> None:
    source = dcmread(bundled(name))
    out = dcmread(converted(bundled(name), ELE, tmp_path))
    assert np.array_equal(out.pixel_array, source.pixel_array)
    assert out.Rows == source.Rows


@pytest.mark.parametrize(
    ("name", "photometric"),
    [
        ("MR_small_RLE.dcm", "MONOCHROME2"),
        ("rtdose_rle.dcm", "MONOCHROME2"),  # 15 frames
        ("MR_small_jp2klossless.dcm", "MONOCHROME2"),
        ("JPEG2000.dcm", "MONOCHROME2"),
        ("MR_small_jpeg_ls_lossless.dcm", "MONOCHROME2"),
        ("SC_rgb_jpeg_gdcm.dcm", "RGB"),
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "RGB"),  # stored YBR_FULL_422
        ("examples_ybr_color.dcm", "RGB"),  # 30 frames, YBR_FULL_422
        ("examples_jpeg2k.dcm", "RGB"),  # stored YBR_RCT
    ],
)
@pytest.mark.parametrize("target", [ELE, ILE])
def test_decompress(name: str, photometric: str, target: str, tmp_path: Path) -> None:
    source = dcmread(bundled(name))
    out = dcmread(converted(bundled(name), target, tmp_path))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert out.PhotometricInterpretation == photometric
    assert "ExtendedOffsetTable" not in out
    assert not out["PixelData"].is_undefined_length
    assert np.array_equal(out.pixel_array, source.pixel_array)


@pytest.mark.parametrize("target", [RLELossless, JPEG2000Lossless])
@pytest.mark.parametrize("name", ["MR_small.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_lossless_encoding(name: str, target: str, tmp_path: Path) -> None:
    if not can_transcode(ELE, target):
        pytest.skip(f"no encoder for {target} installed")
    source = dcmread(bundled(name))
    out = dcmread(converted(bundled(name), target, tmp_path))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == source.SOPInstanceUID
    assert np.array_equal(out.pixel_array, source.pixel_array)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("MR_small.dcm", JPEGBaseline8Bit),
        ("MR_small.dcm", ExplicitVRBigEndian),
        ("MR_small_RLE.dcm", JPEGLosslessSV1),
        ("liver_1frame.dcm", RLELossless),  # Bits Allocated 1 has no RLE encoding
    ],
)
def test_refusals_are_not_acceptable(source: str, target: str) -> None:
    out = io.BytesIO()
    with pytest.raises(NotAcceptableError):
        transcode(bundled(source), target, out)


def test_big_endian_other_word_values_are_swapped(tmp_path: Path) -> None:
    """OW values other than Pixel Data (here Overlay Data) are re-encoded too (PS3.5 7.3)."""
    ds = dcmread(bundled("MR_small_bigendian.dcm"))
    ds.add_new(0x60003000, "OW", np.arange(1, 9, dtype=">u2").tobytes())
    source = tmp_path / "overlay_be.dcm"
    ds.save_as(source)
    out = dcmread(converted(source, ELE, tmp_path))
    assert list(np.frombuffer(out[0x60003000].value, "<u2")) == list(range(1, 9))
