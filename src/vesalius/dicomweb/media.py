"""HTTP content negotiation for DICOMweb (PS3.18 8.7: Accept, media types, transfer syntaxes).

An Accept header is a list of media ranges with parameters and quality values (RFC 9110
12.5.1). DICOMweb adds ``type`` (the media type of the parts of a ``multipart/related``
response) and ``transfer-syntax`` (PS3.18 8.7.3.5). Parsing tolerates the quoting variants
clients send (``type="application/dicom"`` and unquoted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vesalius.errors import NotAcceptableError

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        """Whether this range covers ``media_type`` (``*/*``, ``type/*`` or exact)."""
        if self.media_type in ("*/*", media_type):
            return True
        major = media_type.split("/", 1)[0]
        return self.media_type == f"{major}/*"

    @property
    def part_type(self) -> str | None:
        """The ``type`` parameter of a multipart range, lower-cased."""
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return out


def parse_media_type(text: str) -> MediaRange:
    """Parse one media type with parameters (a Content-Type or one Accept entry)."""
    pieces = _split(text, ";")
    media_type = pieces[0].strip().lower()
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"').strip()
        if not name:
            continue
        if name == "q":
            try:
                q = max(0.0, min(1.0, float(value)))
            except ValueError:
                q = 0.0
        else:
            params[name] = value
    return MediaRange(media_type, params, q)


def parse_accept(headers: Iterable[str]) -> list[MediaRange]:
    """Every media range of the Accept header(s), best first; ``*/*`` when absent."""
    ranges = [
        parse_media_type(entry)
        for header in headers
        for entry in _split(header, ",")
        if entry.strip()
    ]
    if not ranges:
        return [MediaRange("*/*")]
    ordered = sorted(ranges, key=lambda r: -r.q)  # stable: equal q keeps client order
    return [r for r in ordered if r.q > 0]


def not_acceptable(what: str, offered: Iterable[str]) -> NotAcceptableError:
    return NotAcceptableError(f"{what} can be returned as {', '.join(offered)} only")


#: Media type of a compressed frame by transfer syntax (PS3.18 Table 8.7.3-2 / 8.7.4-1).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
