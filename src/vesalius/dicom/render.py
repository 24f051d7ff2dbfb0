"""Rendered frames: one frame turned into a JPEG, PNG or GIF picture (PS3.18 8.3.5, 8.7.4).

The pipeline is PS3.4 N.2 for grayscale (Modality LUT, VOI LUT or window, Presentation LUT:
MONOCHROME1 inverted) and for colour (RGB kept; YBR converted to RGB; PALETTE COLOR through
its palette), to 8 bits, then the viewport (PS3.18 8.3.5.1.3: crop the source region, scale it
to fit the viewport keeping its aspect ratio), then the encoder. Only one frame is decoded.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, features
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, convert_color_space

from vesalius.dicom.frames import DecodedFrame, Pixels, decoded_frame
from vesalius.dicom.source import Source
from vesalius.errors import InvalidDataError, NotAcceptableError, QueryError

DEFAULT_MEDIA_TYPE = "image/jpeg"
DEFAULT_QUALITY = 90
THUMBNAIL_SIZE = 128
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
# PS3.3 C.11.2.1.3 VOI LUT Function values, as the window parameter spells them
_STORED_FUNCTIONS = {"LINEAR": "linear", "LINEAR_EXACT": "linear-exact", "SIGMOID": "sigmoid"}
_PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
if features.check("jpg_2000"):
    _PIL_FORMATS["image/jp2"] = "JPEG2000"
MEDIA_TYPES: tuple[str, ...] = tuple(_PIL_FORMATS)

Viewport = tuple[int, int, int | None, int | None, int | None, int | None]


@dataclass(frozen=True)
class RenderParams:
    """What a Retrieve Rendered request asks for (PS3.18 8.3.5.1)."""

    media_type: str = DEFAULT_MEDIA_TYPE
    quality: int | None = None
    window: tuple[float, float, str] | None = None  # center, width, function
    viewport: Viewport | None = None  # vw, vh, sx, sy, sw, sh


def media_type_suffix(media_type: str) -> str:
    """A file name suffix for a rendered media type: ".jpg", ".png", ".gif", ".jp2"."""
    return {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif"}.get(
        media_type, ".jp2" if media_type == "image/jp2" else ".bin"
    )


def negotiate_media_type(accept: str | None) -> str:
    """The rendered media type to send for an Accept value (PS3.18 8.7.4, RFC 9110 12.5.1).

    Highest q first, then the client's order; ``*/*`` and ``image/*`` mean JPEG (the default,
    PS3.18 Table 8.7.4-1) unless the client gave JPEG q=0. ``multipart/related; type=...``
    stands for its ``type`` (JPEG when absent): whether to wrap is the caller's choice.
    """
    if accept is None or not accept.strip():
        return DEFAULT_MEDIA_TYPE
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        name, *parameters = part.split(";")
        media_range = name.strip().lower()
        if not media_range:
            continue
        q = 1.0
        part_type = DEFAULT_MEDIA_TYPE
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            key = key.strip().lower()
            if key == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
            elif key == "type":
                part_type = value.strip().strip('"').strip().lower()
        if media_range == "multipart/related":
            media_range = part_type
        ranges.append((q, position, media_range))
    refused = {media_range for q, _, media_range in ranges if q <= 0}
    for _, _, media_range in sorted(((-q, p, m) for q, p, m in ranges if q > 0)):
        if media_range in MEDIA_TYPES:
            return media_range
        if media_range in ("*/*", "image/*"):
            for candidate in MEDIA_TYPES:
                if candidate not in refused:
                    return candidate
    raise NotAcceptableError(
        f"none of the accepted media types ({accept.strip()}) can be rendered; "
        f"available: {', '.join(MEDIA_TYPES)}"
    )


def _number(text: str, parameter: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise QueryError(f"{parameter}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise QueryError(f"{parameter}: {text!r} is not a finite number")
    return value


def _integer(text: str, parameter: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise QueryError(f"{parameter}: {text!r} is not an integer") from None


def _parse_window(text: str) -> tuple[float, float, str]:
    """window=center,width,function (PS3.18 8.3.5.1.4; PS3.3 C.11.2.1.2 for the limits)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 2:
        parts.append("linear")
    if len(parts) != 3:
        raise QueryError("window must be center,width,function")
    center = _number(parts[0], "window center")
    width = _number(parts[1], "window width")
    function = parts[2].lower()
    if function not in WINDOW_FUNCTIONS:
        raise QueryError(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}")
    if width <= 0 or (function == "linear" and width < 1):
        raise QueryError("window width must be > 0 (and >= 1 for linear)")
    return center, width, function


def _parse_viewport(text: str) -> Viewport:
    """viewport=vw,vh[,sx,sy,sw,sh] (PS3.18 8.3.5.1.3); empty source values take defaults."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise QueryError("viewport must be vw,vh or vw,vh,sx,sy,sw,sh")
    vw, vh = (_integer(p, "viewport") for p in parts[:2])
    if vw <= 0 or vh <= 0:
        raise QueryError("viewport width and height must be positive integers")
    region = [_integer(p, "viewport") if p else None for p in parts[2:]] + [None] * (6 - len(parts))
    sx, sy, sw, sh = region
    if (sx is not None and sx < 0) or (sy is not None and sy < 0):
        raise QueryError("viewport sx and sy must not be negative")
    if sw == 0 or sh == 0:
        raise QueryError("viewport sw and sh must not be zero")
    return vw, vh, sx, sy, sw, sh


def parse_render_params(
    params: Mapping[str, str], accept: str | None = None, *, thumbnail: bool = False
) -> RenderParams:
    """Rendering parameters from query parameters and the Accept header (PS3.18 8.3.5.1).

    The ``accept`` query parameter, when present, overrides the header (PS3.18 8.3.3.1).
    ``annotation``, ``charset`` and ``iccprofile`` are accepted and ignored; unknown
    parameters are ignored. ``thumbnail`` (PS3.18 10.7) fits the picture in 128x128.
    """
    media_type = negotiate_media_type(params.get("accept") or accept)
    quality = None
    if (text := params.get("quality")) is not None:
        quality = _integer(text, "quality")
        if not 1 <= quality <= 100:
            raise QueryError("quality must be an integer from 1 to 100")
    window = _parse_window(params["window"]) if params.get("window") else None
    viewport = _parse_viewport(params["viewport"]) if params.get("viewport") else None
    if viewport is None and thumbnail:
        viewport = (THUMBNAIL_SIZE, THUMBNAIL_SIZE, None, None, None, None)
    return RenderParams(media_type, quality, window, viewport)


def _functional_value(ds: Dataset, number: int, macro: str, keyword: str) -> Any:
    """A value from the frame's Per-frame or the Shared Functional Groups (PS3.3 C.7.6.16)."""
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", number - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        seq = ds.get(groups)
        if seq and index < len(seq):
            items = seq[index].get(macro)
            if items and keyword in items[0]:
                return items[0][keyword].value
    return None


def _value(ds: Dataset, number: int, macro: str, keyword: str) -> Any:
    value = ds.get(keyword)
    return value if value not in (None, "") else _functional_value(ds, number, macro, keyword)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _modality(pixels: Pixels, ds: Dataset, number: int) -> Pixels:
    """Modality LUT or Rescale Slope/Intercept (PS3.3 C.11.1), per frame when enhanced."""
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(pixels, ds).astype(np.float32)
    slope = _first(_value(ds, number, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = _first(_value(ds, number, "PixelValueTransformationSequence", "RescaleIntercept"))
    values = pixels.astype(np.float32)  # float32: a frame's working copies stay small
    if slope is not None and slope != 0:
        values *= slope
    if intercept is not None:
        values += intercept
    return values


def _window(values: Pixels, center: float, width: float, function: str) -> Pixels:
    """Window to [0, 1] (PS3.3 C.11.2.1.2 linear, C.11.2.1.3.1 linear-exact, .2 sigmoid)."""
    if function == "sigmoid":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "linear-exact":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _lut_data(item: Dataset, little_endian: bool) -> Pixels:
    data = item.LUTData
    if isinstance(data, bytes | bytearray):
        return np.frombuffer(data, dtype="<u2" if little_endian else ">u2").astype(np.float32)
    return np.atleast_1d(np.asarray(data, dtype=np.float32))


def _voi(values: Pixels, frame: DecodedFrame, params: RenderParams, number: int) -> Pixels:
    """VOI: the window parameter, else the stored window, else the VOI LUT, else min/max."""
    ds = frame.layout.header
    if params.window is not None:
        return _window(values, *params.window)
    center = _first(_value(ds, number, "FrameVOILUTSequence", "WindowCenter"))
    width = _first(_value(ds, number, "FrameVOILUTSequence", "WindowWidth"))
    if center is not None and width is not None and width > 0:
        stored = _value(ds, number, "FrameVOILUTSequence", "VOILUTFunction") or "LINEAR"
        return _window(values, center, width, _STORED_FUNCTIONS.get(str(stored), "linear"))
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        lut = _lut_data(item, frame.layout.little_endian)
        first_mapped = float(item.LUTDescriptor[1]) if "LUTDescriptor" in item else 0.0
        if lut.size:
            index = np.clip(np.rint(values - first_mapped), 0, lut.size - 1).astype(np.int64)
            low, high = float(lut.min()), float(lut.max())
            return (lut[index] - low) / (high - low) if high > low else np.zeros_like(values)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros_like(values)
    return _window(values, (low + high) / 2, high - low, "linear-exact")


def _to_8bit(unit: Pixels) -> Pixels:
    return np.rint(np.nan_to_num(unit, nan=0.0) * 255.0).astype(np.uint8)


def _grayscale(frame: DecodedFrame, params: RenderParams, number: int) -> Pixels:
    ds = frame.layout.header
    unit = _voi(_modality(frame.pixels, ds, number), frame, params, number)
    inverse = frame.photometric_interpretation == "MONOCHROME1" or (
        ds.get("PresentationLUTShape") == "INVERSE"
    )
    return _to_8bit(1.0 - unit if inverse else unit)


def _colour(frame: DecodedFrame) -> Pixels:
    """8-bit RGB from RGB, YBR_* (PS3.3 C.7.6.3.1.2) or PALETTE COLOR (C.7.6.3.1.5) pixels."""
    ds = frame.layout.header
    pixels = frame.pixels
    pi = frame.photometric_interpretation
    bits = int(frame.properties.get("bits_stored") or ds.get("BitsStored") or 8)
    if pi == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(pixels, ds)
        except (ValueError, AttributeError, KeyError, IndexError) as exc:
            raise InvalidDataError(f"cannot apply the palette: {exc}") from exc
        bits = 16 if rgb.dtype.itemsize > 1 else 8
        pixels = rgb
    elif pi.startswith("YBR_FULL"):
        pixels = convert_color_space(pixels, "YBR_FULL", "RGB")
    top = float(2**bits - 1) if bits > 0 else 255.0
    if bits == 8 and pixels.dtype == np.uint8:
        return pixels
    return _to_8bit(np.clip(pixels.astype(np.float32) / top, 0.0, 1.0))


def _apply_viewport(image: Image.Image, viewport: Viewport) -> Image.Image:
    """Crop the source region (sx, sy, sw, sh; negative sw/sh flip) then fit vw x vh."""
    vw, vh, sx, sy, sw, sh = viewport
    columns, rows = image.size
    left, top = sx or 0, sy or 0
    width = abs(sw) if sw is not None else columns - left
    height = abs(sh) if sh is not None else rows - top
    right, bottom = min(left + width, columns), min(top + height, rows)
    if left >= columns or top >= rows or right <= left or bottom <= top:
        raise QueryError(f"viewport region lies outside the {columns}x{rows} image")
    if (left, top, right, bottom) != (0, 0, columns, rows):
        image = image.crop((left, top, right, bottom))
    if sw is not None and sw < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh is not None and sh < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    width, height = image.size
    scale = min(vw / width, vh / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == image.size:
        return image
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return image.resize(size, resample)


def render_frame(source: Source, number: int, params: RenderParams) -> bytes:
    """Frame ``number`` (1-based) of ``source`` rendered as ``params.media_type`` bytes."""
    pil_format = _PIL_FORMATS.get(params.media_type)
    if pil_format is None:
        raise NotAcceptableError(f"cannot render {params.media_type}")
    frame = decoded_frame(source, number)
    samples = frame.pixels.shape[-1] if frame.pixels.ndim == 3 else 1
    if samples == 3 or frame.photometric_interpretation == "PALETTE COLOR":
        image = Image.fromarray(_colour(frame))
    elif samples == 1:
        image = Image.fromarray(_grayscale(frame, params, number))
    else:
        raise InvalidDataError(f"cannot render {samples} samples per pixel")
    if params.viewport is not None:
        image = _apply_viewport(image, params.viewport)
    out = io.BytesIO()
    options: dict[str, Any] = {}
    if pil_format == "JPEG":
        options["quality"] = params.quality or DEFAULT_QUALITY
    image.save(out, pil_format, **options)
    return out.getvalue()
