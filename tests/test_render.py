"""dicom/render.py: rendered frames (PS3.18 8.3.5) checked by decoding them with Pillow."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from synth import make_instance
from vesalius.dicom.render import (
    MEDIA_TYPES,
    RenderParams,
    negotiate_media_type,
    parse_render_params,
    render_frame,
)
from vesalius.errors import NotAcceptableError, NotFoundError, QueryError


def bundled(name: str) -> Path:
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


def picture(data: bytes, fmt: str = "PNG") -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == fmt
    image.load()
    return image


def png(path: Path, number: int = 1, **params: Any) -> np.ndarray:
    data = render_frame(path, number, RenderParams(media_type="image/png", **params))
    return np.asarray(picture(data))


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    """A 16-bit signed CT, 40 x 60, values -1000..1000 HU after Rescale Intercept -1024."""
    stored = np.linspace(24, 2024, 40 * 60).reshape(1, 40, 60).astype(np.int16)
    return native_image(
        tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU"
    )


def test_jpeg_of_the_right_size(ct: Path) -> None:
    image = picture(render_frame(ct, 1, RenderParams()), "JPEG")
    assert (image.size, image.mode) == ((60, 40), "L")


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_every_media_type_decodes(ct: Path, media_type: str) -> None:
    fmt = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/jp2": "JPEG2000"}
    image = picture(render_frame(ct, 1, RenderParams(media_type=media_type)), fmt[media_type])
    assert image.size == (60, 40)


def test_window_is_applied_after_the_rescale(ct: Path) -> None:
    """window=0,1000,linear-exact maps -500 HU to 0 and +500 HU to 255 (PS3.3 C.11.2.1.3.1)."""
    windowed = png(ct, window=(0.0, 1000.0, "linear-exact")).astype(float)
    hu = np.linspace(-1000, 1000, 40 * 60).reshape(40, 60)
    expected = np.clip((np.rint(hu) - 0) / 1000 + 0.5, 0, 1) * 255
    assert np.abs(windowed - expected).max() <= 1
    assert not np.array_equal(windowed, png(ct, window=(800.0, 400.0, "linear")))
    assert not np.array_equal(windowed, png(ct, window=(0.0, 1000.0, "sigmoid")))


def test_stored_window_then_min_max(tmp_path: Path) -> None:
    stored = np.arange(100, dtype=np.uint16).reshape(1, 10, 10)
    plain = png(native_image(tmp_path / "a.dcm", stored))
    assert (plain.min(), plain.max()) == (0, 255)  # min/max of the frame
    windowed = png(native_image(tmp_path / "b.dcm", stored, WindowCenter=20, WindowWidth=20))
    assert windowed[0, 0] == 0 and windowed[3, 0] == 255  # values from 30 up are white


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.arange(64, dtype=np.uint16).reshape(1, 8, 8)
    mono2 = png(native_image(tmp_path / "m2.dcm", stored))
    mono1 = png(native_image(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1"))
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))


def test_each_frame_renders_its_own_pixels(tmp_path: Path) -> None:
    stored = np.stack([np.full((4, 4), 100 * k, np.uint16) for k in (1, 2, 3)])
    path = native_image(tmp_path / "mf.dcm", stored)
    window = (200.0, 400.0, "linear-exact")
    assert [int(png(path, n, window=window)[0, 0]) for n in (1, 2, 3)] == [64, 128, 191]
    with pytest.raises(NotFoundError):
        render_frame(path, 4, RenderParams())


def test_rgb_kept_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(1, 5, 7, 3), dtype=np.uint8)
    assert np.array_equal(png(native_image(tmp_path / "rgb.dcm", rgb)), rgb[0])


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("examples_ybr_color.dcm", (320, 240)),  # JPEG YBR_FULL_422, multi-frame
        ("SC_ybr_full_422_uncompressed.dcm", (100, 100)),
        ("examples_palette.dcm", (800, 350)),
        ("examples_jpeg2k.dcm", (640, 480)),  # YBR_RCT
        ("SC_rgb_rle_16bit.dcm", (100, 100)),
    ],
)
def test_colour_stays_colour(name: str, size: tuple[int, int]) -> None:
    image = picture(render_frame(bundled(name), 1, RenderParams(media_type="image/png")))
    assert (image.mode, image.size) == ("RGB", size)
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 32  # not gray


def test_ybr_renders_like_its_rgb_original() -> None:
    """SC_rgb_dcmtk_+eb+cy+np is the RGB bars of SC_rgb_rle, JPEG YBR_FULL_422 (lossy)."""
    ybr = png(bundled("SC_rgb_dcmtk_+eb+cy+np.dcm")).astype(int)
    rgb = png(bundled("SC_rgb_rle.dcm")).astype(int)
    assert np.abs(ybr - rgb).mean() < 8


def test_viewport_scales_keeping_aspect(ct: Path) -> None:
    assert picture(
        render_frame(ct, 1, RenderParams(viewport=(30, 30, None, None, None, None))), "JPEG"
    ).size == (30, 20)
    image = png(ct, viewport=(120, 500, None, None, None, None))
    assert image.shape == (80, 120)


def test_viewport_source_region_and_flip(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, size=(1, 10, 12, 3), dtype=np.uint8)
    path = native_image(tmp_path / "rgb.dcm", rgb)
    crop = png(path, viewport=(5, 4, 2, 3, 5, 4))
    assert np.array_equal(crop, rgb[0, 3:7, 2:7])
    flipped = png(path, viewport=(5, 4, 2, 3, -5, 4))
    assert np.array_equal(flipped, rgb[0, 3:7, 2:7][:, ::-1])
    rest = png(path, viewport=(10, 7, 2, 3, None, None))
    assert np.array_equal(rest, rgb[0, 3:, 2:])
    with pytest.raises(QueryError, match="viewport"):
        png(path, viewport=(5, 5, 20, 0, 5, 5))


def test_thumbnail_fits_128() -> None:
    params = parse_render_params({}, None, thumbnail=True)
    assert params.viewport == (128, 128, None, None, None, None)
    image = picture(render_frame(bundled("JPEG2000.dcm"), 1, params), "JPEG")  # 256 x 1024
    assert image.size == (32, 128)


def test_quality_changes_the_jpeg() -> None:
    path = bundled("CT_small.dcm")
    low = render_frame(path, 1, RenderParams(quality=10))
    high = render_frame(path, 1, RenderParams(quality=95))
    assert len(low) < len(high)
    picture(low, "JPEG")


def test_parse_render_params() -> None:
    params = parse_render_params(
        {
            "window": "40,400,linear",
            "viewport": "256,128,,,64,-32",
            "quality": "75",
            "annotation": "patient,technique",
            "unknown": "ignored",
        },
        "image/png",
    )
    assert params == RenderParams(
        "image/png", 75, (40.0, 400.0, "linear"), (256, 128, None, None, 64, -32)
    )
    assert parse_render_params({}).media_type == "image/jpeg"
    assert parse_render_params({"accept": "image/gif"}, "image/png").media_type == "image/gif"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"window": "40"}, "window"),
        ({"window": "40,abc,linear"}, "window"),
        ({"window": "40,0,linear"}, "window"),
        ({"window": "40,0.5,linear"}, "window"),
        ({"window": "40,400,cubic"}, "window"),
        ({"window": "nan,400,linear"}, "window"),
        ({"viewport": "256"}, "viewport"),
        ({"viewport": "0,256"}, "viewport"),
        ({"viewport": "a,256"}, "viewport"),
        ({"viewport": "256,256,1,2,3"}, "viewport"),
        ({"viewport": "256,256,-1,0,10,10"}, "viewport"),
        ({"viewport": "256,256,0,0,0,10"}, "viewport"),
        ({"quality": "0"}, "quality"),
        ({"quality": "101"}, "quality"),
        ({"quality": "high"}, "quality"),
    ],
)
def test_bad_parameters_are_query_errors(params: dict[str, str], named: str) -> None:
    with pytest.raises(QueryError, match=named):
        parse_render_params(params)


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "image/jpeg"),
        ("", "image/jpeg"),
        ("*/*", "image/jpeg"),
        ("image/*", "image/jpeg"),
        ("image/png", "image/png"),
        ("image/webp, image/png;q=0.5, image/gif;q=0.8", "image/gif"),
        ("image/jpeg;q=0, */*", "image/png"),
        ("text/html, image/*;q=0.1", "image/jpeg"),
        ("IMAGE/PNG", "image/png"),
        ('multipart/related; type="image/png"', "image/png"),
        ("multipart/related", "image/jpeg"),
    ],
)
def test_accept_negotiation(accept: str | None, chosen: str) -> None:
    assert negotiate_media_type(accept) == chosen


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "image/webp",
        "image/png;q=0",
        "multipart/related; type=application/dicom",
    ],
)
def test_unacceptable_media_types(accept: str) -> None:
    with pytest.raises(NotAcceptableError):
        parse_render_params({}, accept)


def test_render_refuses_unknown_media_type(ct: Path) -> None:
    with pytest.raises(NotAcceptableError):
        render_frame(ct, 1, RenderParams(media_type="image/webp"))
