"""One pass over a Part 10 file at ingest: structure, indexed values and DICOM JSON together.

Ingest needs three things from every instance: proof that the file is whole (PS3.5 7.1, 7.5,
A.4), the attributes the index keeps, and the WADO-RS metadata (PS3.18 F.2). Reading them with
pydicom means parsing the header, converting every element to Python objects, walking the
structure again, then converting once more to JSON: most of the per-instance cost of C-STORE.
:func:`scan_instance` walks the element headers once over a memory map of the file and builds
the JSON and the index values straight from the bytes.

It covers the encodings instances arrive in (explicit and implicit VR little endian, native or
encapsulated pixel data) and character sets without code extensions. Anything else, and
anything odd (a malformed value, an unknown VR, a truncated file, a missing UID), returns
``None``: the caller then takes the pydicom path (``dicom/header.py``, ``dicom/structure.py``,
``dicom/metadata.py``), which gives the same results and the established error messages. The
two paths are compared on every test file (tests/test_scan.py).
"""

from __future__ import annotations

import base64
import mmap
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom import charset as _charset
from pydicom.datadict import dictionary_VR, private_dictionary_VR

from vesalius.dicom import values
from vesalius.dicom.header import (
    FIELDS,
    REQUEST_ATTRIBUTES,
    REQUEST_FIELDS,
    InstanceHeader,
    normalise,
)
from vesalius.dicom.metadata import BULK_THRESHOLD, finish_instance_json, instance_path
from vesalius.dicom.source import Source, mapped, opened
from vesalius.dicom.structure import MAX_DEPTH, PIXEL_DATA_TAGS, PixelDataElement
from vesalius.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    is_valid_uid,
)

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQ_END = 0xFFFEE0DD
SPECIFIC_CHARACTER_SET = 0x00080005
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Text VRs whose bytes follow the Specific Character Set (PS3.5 6.1.2.3).
_CHARSET_VRS = frozenset({"SH", "LO", "UC", "PN"})
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
_CODEC_VRS = _CHARSET_VRS | _SINGLE_TEXT_VRS
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", "DS", "IS"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q",
                   "UV": "Q", "AT": "HH"}  # fmt: skip
_ELEMENT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHI")
_U32 = struct.Struct("<I")
_DEFAULT_CODEC = _charset.default_encoding
_SHORT_VRS = (_CODEC_VRS | _ASCII_VRS | set(_NUMBER_FORMATS)) - _LONG_VRS


class _Unsupported(Exception):
    """Leave this file to the pydicom path."""


@dataclass(frozen=True)
class Scan:
    """What ingest needs from one file."""

    header: InstanceHeader
    pixel: PixelDataElement | None
    #: The DICOM JSON of the data set, WADO-RS ready (see ``dicom/metadata.py``).
    document: dict[str, Any]


@lru_cache(maxsize=4096)
def _implicit_vr(tag: int) -> str:
    """The VR of an implicit-VR element: the dictionary's (maybe ambiguous, "US or SS"), LO
    for private creators, UN for other private or unknown elements (PS3.5 6.2.2, 7.8.1)."""
    if tag & 0xFFFF == 0:
        return "UL"
    if tag >> 16 & 1:
        return "LO" if 0x10 <= tag & 0xFFFF <= 0xFF else "UN"
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


@lru_cache(maxsize=4096)
def _private_vr(tag: int, creator: str) -> str:
    """The VR of a private element from pydicom's private dictionaries, or UN."""
    try:
        return str(private_dictionary_VR(tag, creator))
    except KeyError:
        return "UN"


@lru_cache(maxsize=64)
def _codec(charset: str) -> str:
    """The Python codec of one Specific Character Set term without code extensions."""
    term = charset.strip()
    if not term or term == "ISO_IR 6":
        return _DEFAULT_CODEC
    if term.startswith("ISO 2022") or "\\" in term:
        raise _Unsupported("character set with code extensions")
    codec = _charset.python_encoding.get(term)
    if codec is None or codec in _charset.custom_encoders:
        raise _Unsupported(f"character set {term}")
    return str(codec)


def _split(text: str) -> list[str]:
    return [v.rstrip("\0 ") for v in text.split("\\")]


def _numbers(raw: bytes, vr: str) -> list[Any]:
    fmt = _NUMBER_FORMATS[vr]
    size = struct.calcsize("<" + fmt)
    if len(raw) % size:
        raise ValueError("length is not a multiple of the value size")
    if vr == "AT":
        return [f"{g:04X}{e:04X}" for g, e in struct.iter_unpack("<HH", raw)]
    return [v[0] for v in struct.iter_unpack("<" + fmt, raw)]


def _person_names(text: str) -> list[dict[str, str]]:
    out = []
    for name in text.rstrip("\0 ").split("\\"):
        groups = name.split("=")
        while len(groups) > 1 and not groups[-1]:
            groups.pop()  # trailing empty component groups are not values (PS3.5 6.2.1)
        member = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            member["Ideographic"] = groups[1]
        if len(groups) > 2:
            member["Phonetic"] = groups[2]
        out.append(member)
    return out


def _member(vr: str, raw: bytes, codec: str) -> dict[str, Any]:
    """One non-sequence element as a DICOM JSON member (PS3.18 F.2.2-F.2.7)."""
    if not raw:
        return {"vr": vr}
    if vr in _BINARY_VRS:
        return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
    if vr in _NUMBER_FORMATS:
        return {"vr": vr, "Value": _numbers(raw, vr)}
    if vr in _ASCII_VRS:
        text = raw.decode(_DEFAULT_CODEC)
        if vr == "UR":
            stripped = text.rstrip()
            return {"vr": vr, "Value": [stripped]} if stripped else {"vr": vr}
        if vr == "AE":
            items = [v.strip() for v in text.split("\\")]
        elif vr == "DS":
            items = text.strip().rstrip("\0 ").split("\\")
        else:  # trailing padding of the whole value, as pydicom reads it
            items = text.rstrip("\0 ").split("\\")
        if items == [""]:
            return {"vr": vr}
        if vr == "DS":
            return {"vr": vr, "Value": [float(v) for v in items]}
        if vr == "IS":
            return {"vr": vr, "Value": [_integer_string(v) for v in items]}
        return {"vr": vr, "Value": items}
    text = raw.decode(codec if vr in _CODEC_VRS else _DEFAULT_CODEC)
    if vr == "PN":
        if not text.rstrip("\0 "):
            return {"vr": vr}
        return {"vr": vr, "Value": _person_names(text)}
    if vr in _SINGLE_TEXT_VRS:
        stripped = text.rstrip("\0 ")
        return {"vr": vr, "Value": [stripped]} if stripped else {"vr": vr}
    if vr in ("SH", "LO", "UC"):
        items = _split(text)
        return {"vr": vr} if items == [""] else {"vr": vr, "Value": items}
    raise _Unsupported(f"VR {vr}")


def _integer_string(text: str) -> int:
    """An IS value as pydicom reads it: integral decimal text, ``12.0`` accepted."""
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if number != int(number):
            raise
        return int(number)


class _Walker:
    """Walks elements over the mapped file; builds JSON for the data set before pixel data."""

    def __init__(self, buf: mmap.mmap, implicit: bool, *, values_only: bool = False) -> None:
        self.buf = buf
        self.size = len(buf)
        self.implicit = implicit
        #: Only record the top-level values before the pixel data (no JSON; sequences are
        #: walked for their structure and skipped).
        self.values_only = values_only
        #: Bulk data members and their tag paths; their URIs are filled in once the
        #: instance's UIDs are known (``_scan``).
        self.bulk: list[tuple[dict[str, Any], str]] = []
        self.codec = _DEFAULT_CODEC
        self.pixel: PixelDataElement | None = None
        self.top: dict[int, tuple[str, bytes]] = {}

    def _header(self, pos: int) -> tuple[int, str, int, int]:
        """(tag, VR, length, value offset) of the element at ``pos``."""
        buf = self.buf
        if pos + 8 > self.size:
            raise _Unsupported("element header past the end")
        group, element, vr_bytes, short = _ELEMENT.unpack_from(buf, pos)
        tag = group << 16 | element
        if group == 0xFFFE:
            return tag, "", _U32.unpack_from(buf, pos + 4)[0], pos + 8
        if self.implicit:
            if tag in PIXEL_DATA_TAGS:
                return tag, "", _U32.unpack_from(buf, pos + 4)[0], pos + 8
            return tag, _implicit_vr(tag), _U32.unpack_from(buf, pos + 4)[0], pos + 8
        try:
            vr = vr_bytes.decode("ascii")
        except UnicodeDecodeError:
            raise _Unsupported("VR is not text") from None
        if vr in _LONG_VRS:
            if pos + 12 > self.size:
                raise _Unsupported("element header past the end")
            return tag, vr, _U32.unpack_from(buf, pos + 8)[0], pos + 12
        if vr not in _SHORT_VRS:
            raise _Unsupported(f"unknown VR {vr!r}")
        return tag, vr, short, pos + 8

    def _resolve(self, tag: int, vr: str, depth: int) -> str:
        """US or SS by the data set's Pixel Representation (PS3.5 Annex A: implicit VR)."""
        found = self.top.get(0x00280103)
        if vr != "US or SS" or depth or tag == 0x00283002 or found is None:
            raise _Unsupported(f"ambiguous VR {vr}")
        return "SS" if found[1][:2] == b"\x01\x00" else "US"

    def data_set(
        self, pos: int, end: int | None, depth: int, out: dict[str, Any] | None, prefix: str
    ) -> int:
        """Walk a data set from ``pos`` to ``end`` (None: an undefined-length item, or the
        file's end at depth 0); returns the offset after it. ``out`` collects the JSON."""
        if depth > MAX_DEPTH:
            raise _Unsupported("sequences nested too deeply")
        limit = self.size if end is None else end
        creators: dict[int, str] = {}  # private blocks of this data set (PS3.5 7.8.1)
        while pos < limit:
            tag, vr, length, value = self._header(pos)
            if tag >> 16 & 1 and vr in ("UN", "LO") and tag >> 16 != 0xFFFF:
                element = tag & 0xFFFF
                if 0x10 <= element <= 0xFF and vr == "LO" and length != UNDEFINED:
                    raw_creator = self.buf[value : value + length]
                    creators[tag & 0xFFFF0000 | element] = raw_creator.decode(
                        _DEFAULT_CODEC
                    ).rstrip("\0 ")
                elif element >= 0x1000 and vr == "UN" and (self.implicit or length != UNDEFINED):
                    creator = creators.get(tag & 0xFFFF0000 | element >> 8)
                    if creator:  # pydicom reads known private elements by its dictionary
                        vr = _private_vr(tag, creator)
                        if vr == "SQ" and not self.implicit:
                            raise _Unsupported("UN sequence")
            if " or " in vr:
                vr = self._resolve(tag, vr, depth)
            if tag >> 16 == 0xFFFE:
                if tag != ITEM_END or depth == 0 or end is not None or length:
                    raise _Unsupported("delimiter out of place")
                return value
            if tag in PIXEL_DATA_TAGS:
                if depth:
                    if self.implicit:
                        raise _Unsupported("nested pixel data in implicit VR")
                elif self.pixel is None:
                    self.pixel = PixelDataElement(tag, vr, length, value)
                    out = None  # the metadata ends where pixel data starts (as pydicom reads)
                if length == UNDEFINED:
                    pos = self._fragments(value)
                    if depth and out is not None:
                        member: dict[str, Any] = {"vr": vr}
                        self.bulk.append((member, f"{prefix}{tag:08X}"))
                        out[f"{tag:08X}"] = member
                    continue
            elif vr == "UN" and not self.implicit:
                if length == UNDEFINED:
                    raise _Unsupported("UN sequence")  # implicit VR inside (PS3.5 6.2.2)
                if not tag >> 16 & 1 and length < 0xFFFF:
                    vr = _implicit_vr(tag)  # pydicom reads known UN elements by the dictionary
                    if vr == "SQ" or " or " in vr:
                        raise _Unsupported("UN sequence")
            if vr == "SQ" or length == UNDEFINED:
                if vr not in ("SQ", "UN"):
                    raise _Unsupported("undefined length outside a sequence")
                key = f"{tag:08X}"
                items: list[dict[str, Any]] | None = [] if out is not None else None
                pos = self._sequence(value, length, depth, items, f"{prefix}{key}/")
                if items is not None and out is not None and tag & 0xFFFF and tag >> 16 != 2:
                    out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                continue
            pos = value + length
            if pos > limit:
                raise _Unsupported("value past the end")
            if self.values_only:
                if depth == 0 and self.pixel is None:
                    self.top[tag] = (vr, self.buf[value:pos])
                continue
            if out is None or not tag & 0xFFFF or tag >> 16 == 0x0002:
                continue
            key = f"{tag:08X}"
            if vr in _BINARY_VRS and length > BULK_THRESHOLD:
                member = {"vr": vr}
                self.bulk.append((member, f"{prefix}{key}"))
                out[key] = member
                continue
            raw = self.buf[value:pos]
            if tag == SPECIFIC_CHARACTER_SET:
                codec = _codec(raw.decode(_DEFAULT_CODEC).strip("\0 "))
                if depth and codec != self.codec:
                    raise _Unsupported("character set changes inside an item")
                self.codec = codec
            if depth == 0:
                self.top[tag] = (vr, raw)
            try:
                out[key] = _member(vr, raw, self.codec)
            except (ValueError, UnicodeDecodeError, struct.error):
                raise _Unsupported(f"value of {key}") from None
        if pos != limit or (end is None and depth):
            raise _Unsupported("data set overruns its length")
        return pos

    def _sequence(
        self, pos: int, length: int, depth: int, items: list[dict[str, Any]] | None, prefix: str
    ) -> int:
        end = None if length == UNDEFINED else pos + length
        if end is not None and end > self.size:
            raise _Unsupported("sequence past the end")
        n = 0
        while end is None or pos < end:
            tag, _, item_length, value = self._header(pos)
            if tag == SEQ_END and end is None:
                return value
            if tag != ITEM:
                raise _Unsupported("expected a sequence item")
            item: dict[str, Any] | None = {} if items is not None else None
            item_end = None if item_length == UNDEFINED else value + item_length
            pos = self.data_set(value, item_end, depth + 1, item, f"{prefix}{n}/")
            if items is not None and item is not None:
                items.append(dict(sorted(item.items())))
            n += 1
        if pos != end:
            raise _Unsupported("sequence overruns its length")
        return pos

    def _fragments(self, pos: int) -> int:
        """Skip encapsulated pixel data: items up to the sequence delimiter (PS3.5 A.4)."""
        while True:
            tag, _, length, value = self._header(pos)
            if tag == SEQ_END:
                return value
            if tag != ITEM or length == UNDEFINED:
                raise _Unsupported("malformed pixel data fragments")
            pos = value + length
            if pos > self.size:
                raise _Unsupported("fragment past the end")


def _file_meta(buf: mmap.mmap) -> tuple[dict[int, str], int]:
    """The File Meta Information's text values by tag, and where the data set starts."""
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise _Unsupported("no DICM prefix")
    pos = 132
    meta: dict[int, str] = {}
    while pos + 8 <= len(buf):
        group, element, vr_bytes, short = _ELEMENT.unpack_from(buf, pos)
        if group != 0x0002:
            break
        if vr_bytes.decode("latin-1") in _LONG_VRS:
            length = _U32.unpack_from(buf, pos + 8)[0]
            value = pos + 12
        else:
            length, value = short, pos + 8
        if length == UNDEFINED or value + length > len(buf):
            raise _Unsupported("malformed File Meta")
        if vr_bytes in (b"UI", b"AE", b"SH", b"CS"):
            meta[element] = buf[value : value + length].decode(_DEFAULT_CODEC).strip("\0 ")
        pos = value + length
    return meta, pos


def _uid(top: dict[int, tuple[str, bytes]], tag: int) -> str:
    found = top.get(tag)
    if found is None or found[0] != "UI":  # pydicom's path says what is wrong with it
        raise _Unsupported("required UID missing or not of VR UI")
    text = found[1].decode(_DEFAULT_CODEC).strip("\0 ")
    if not text or not is_valid_uid(text):
        raise _Unsupported("required UID missing or invalid")
    return text


def _header(
    top: dict[int, tuple[str, bytes]],
    document: dict[str, Any],
    transfer_syntax: str,
    codec: str,
) -> InstanceHeader:
    """The indexed attributes, normalised as ``dicom/header.header_from_dataset`` does."""

    def text(tag: int) -> str:
        found = top.get(tag)
        if found is None:
            return ""
        vr, raw = found
        decoded = raw.decode(codec if vr in _CODEC_VRS else _DEFAULT_CODEC)
        if vr in _SINGLE_TEXT_VRS or vr == "UR":
            return decoded.strip("\0 ")
        return "\\".join(v.strip("\0 ") for v in decoded.split("\\"))

    def integer(tag: int) -> int | None:
        found = top.get(tag)
        if found is None:
            return None
        vr, raw = found
        if vr in _NUMBER_FORMATS:
            numbers = _numbers(raw, vr)
            return int(numbers[0]) if len(numbers) == 1 else None
        return values.integer(text(tag))

    def read(field: str, tag: int, kind: str) -> Any:
        if kind == "int":
            return integer(tag)
        if kind == "uid":
            return _uid(top, tag)
        return normalise(kind, text(tag), field)

    found = {field: read(field, tag, kind) for field, tag, kind in FIELDS}
    request = document.get(f"{REQUEST_ATTRIBUTES:08X}", {}).get("Value") or [{}]
    for field, tag in REQUEST_FIELDS:
        member = request[0].get(f"{tag:08X}", {}).get("Value")
        found[field] = "\\".join(str(v).strip("\0 ") for v in member) if member else ""
    return InstanceHeader(transfer_syntax_uid=transfer_syntax, **found)


def scan_instance(source: Source) -> Scan | None:
    """Scan a Part 10 file in one pass, or ``None`` to leave it to the pydicom path (also for
    an empty file, and a reader that is not a local file: the scan maps the file)."""
    try:
        with opened(source) as fh:
            buf = mapped(fh)
        if buf is None:
            return None
        with buf:
            return _scan(buf)
    except _Unsupported:
        return None


@dataclass(frozen=True)
class PixelHeader:
    """Where the pixel data lies and the top-level values before it, raw: what serving a
    stored frame needs (``dicom/frames.py``), without building any JSON."""

    transfer_syntax: str
    #: (VR, value bytes) of each top-level element before the pixel data, by tag.
    values: dict[int, tuple[str, bytes]]
    pixel: PixelDataElement | None

    def integer(self, tag: int) -> int | None:
        """A US, UL or IS value as an integer, None when absent or unreadable."""
        found = self.values.get(tag)
        if found is None:
            return None
        vr, raw = found
        try:
            if vr in ("US", "UL"):
                return _numbers(raw, vr)[0] if raw else None
            return int(raw.decode(_DEFAULT_CODEC).strip("\0 "))
        except (ValueError, IndexError, UnicodeDecodeError, struct.error):
            return None

    def text(self, tag: int) -> str | None:
        found = self.values.get(tag)
        return found[1].decode(_DEFAULT_CODEC, "replace").strip("\0 ") if found else None


def scan_pixel_header(source: Source) -> PixelHeader | None:
    """Walk a Part 10 file's element headers up to its pixel data, or ``None`` to leave it to
    pydicom (the encodings and oddities :func:`scan_instance` declines, readers that are not
    local files)."""
    try:
        with opened(source) as fh:
            buf = mapped(fh)
        if buf is None:
            return None
        with buf:
            meta, start = _file_meta(buf)
            transfer_syntax = meta.get(0x0010, "")
            if not is_valid_uid(transfer_syntax) or transfer_syntax in (
                EXPLICIT_VR_BE,
                DEFLATED_EXPLICIT_VR_LE,
            ):
                return None
            walker = _Walker(buf, transfer_syntax == IMPLICIT_VR_LE, values_only=True)
            walker.data_set(start, None, 0, None, "")
            return PixelHeader(transfer_syntax, walker.top, walker.pixel)
    except (_Unsupported, OSError):
        return None


def _scan(buf: mmap.mmap) -> Scan:
    meta, start = _file_meta(buf)
    transfer_syntax = meta.get(0x0010, "")
    if not is_valid_uid(transfer_syntax):
        raise _Unsupported("no valid transfer syntax")
    if transfer_syntax in (EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE):
        raise _Unsupported("big endian or deflated")
    implicit = transfer_syntax == IMPLICIT_VR_LE
    walker = _Walker(buf, implicit)
    document: dict[str, Any] = {}
    walker.data_set(start, None, 0, document, "")
    header = _header(walker.top, document, transfer_syntax, walker.codec)
    bulk_base = "{root}/" + instance_path(
        header.study_uid, header.series_uid, header.sop_instance_uid
    )
    for member, tag_path in walker.bulk:
        member["BulkDataURI"] = f"{bulk_base}/bulkdata/{tag_path}"
    meta_sop = meta.get(0x0003, "")
    if meta_sop and meta_sop != header.sop_instance_uid:
        raise _Unsupported("file meta SOP Instance UID differs")
    pixel = walker.pixel
    if pixel is not None:
        pixel_ref: tuple[int, str] | None = (pixel.tag, pixel.vr)
    elif header.rows is not None:
        pixel_ref = (0x7FE00010, "OW")
    else:
        pixel_ref = None
    finished = finish_instance_json(document, bulk_base, transfer_syntax, pixel_ref)
    return Scan(header, pixel, finished)
