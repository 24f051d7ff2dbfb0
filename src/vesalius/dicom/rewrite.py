"""Rewriting a few patient and study attributes of a Part 10 file, every other byte kept.

A correction (``services/corrections.py``) changes Patient's Name, Patient ID, Patient's Birth
Date, Patient's Sex, Accession Number or Study Description. These are top-level elements of
groups 0008 and 0010, so :func:`rewrite_attributes` walks the data set's top-level element
headers only up to (0010,0040): each element to change is written anew (inserted in tag order
where absent), the others are copied as they are, and from the first element past the last one
to change, the rest of the file (the pixel data included) is copied byte for byte, never parsed.

Values are encoded in the file's Specific Character Set (PS3.5 6.1); a value the default
repertoire cannot hold turns a file without one into ISO_IR 192 (UTF-8, which the default
repertoire is a subset of); one another character set cannot hold is refused. Group length
elements of groups 0008 and 0010 (retired, PS3.5 7.2) are dropped, since lengths change.
Deflated and big endian files (rare) go through pydicom: their pixel data is re-encoded, its
value unchanged.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import charset as pydicom_charset
from pydicom import dcmread

from vesalius.dicom.inflate import read_head
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE
from vesalius.errors import InvalidDataError

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQ_END = 0xFFFEE0DD
SPECIFIC_CHARACTER_SET = 0x00080005
UTF8 = "ISO_IR 192"
#: The attributes a correction may change: keyword -> (tag, VR).
ATTRIBUTES: dict[str, tuple[int, str]] = {
    "AccessionNumber": (0x00080050, "SH"),
    "StudyDescription": (0x00081030, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
}
_LAST = max(tag for tag, _ in ATTRIBUTES.values())
_TEXT_VRS = frozenset({"SH", "LO", "PN"})
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Rewritten:
    """What the rewrite wrote: the file's Specific Character Set after it."""

    specific_character_set: str


def _charset_terms(raw: bytes) -> list[str]:
    return [t.strip(" \0") for t in raw.decode("ascii", "replace").split("\\")]


def _is_default(terms: list[str]) -> bool:
    return all(t in ("", "ISO_IR 6") for t in terms)


def _encode(value: str, vr: str, terms: list[str]) -> bytes:
    """``value`` in the character set ``terms`` (PS3.5 6.1.2.5); InvalidDataError if it
    cannot be written there."""
    if vr not in _TEXT_VRS or value.isascii():
        if not value.isascii():
            raise InvalidDataError(f"a {vr} value must be ASCII: {value!r}")
        return value.encode("ascii")
    encodings = pydicom_charset.convert_encodings(terms or [""])
    try:
        if len(encodings) == 1:
            return value.encode(encodings[0], "strict")
        encoded = pydicom_charset.encode_string(value, encodings)
        if pydicom_charset.decode_bytes(encoded, encodings, set()) != value:
            raise UnicodeError
        return encoded
    except (UnicodeError, LookupError, ValueError):
        named = "\\".join(terms) or "the default repertoire"
        raise InvalidDataError(
            f"{value!r} cannot be written in this file's character set ({named})"
        ) from None


def check_encodable(keyword: str, value: str, charset: str) -> None:
    """Refuse (InvalidDataError) a ``value`` of ``keyword`` that :func:`rewrite_attributes`
    could not write in a file whose Specific Character Set is ``charset``."""
    vr = ATTRIBUTES[keyword][1]
    terms = [t.strip() for t in charset.split("\\")]
    if vr in _TEXT_VRS and not value.isascii() and _is_default(terms):
        return  # the file becomes ISO_IR 192
    _encode(value, vr, terms)


def _element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    if len(value) % 2:
        value += b" "
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    if len(value) > 0xFFFF:
        raise InvalidDataError("value too long")
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _header(fh: BinaryIO, implicit: bool) -> tuple[int, int, int] | None:
    """(tag, value length, header length) of the element at ``fh``, None at the end."""
    raw = fh.read(8)
    if len(raw) < 8:
        if raw:
            raise InvalidDataError("the data set ends in the middle of an element header")
        return None
    group, element = struct.unpack("<HH", raw[:4])
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, struct.unpack("<I", raw[4:])[0], 8
    if raw[4:6] in _LONG_VRS:
        extra = fh.read(4)
        if len(extra) < 4:
            raise InvalidDataError("the data set ends in the middle of an element header")
        return tag, struct.unpack("<I", extra)[0], 12
    return tag, struct.unpack("<H", raw[6:8])[0], 8


def _skip_items(fh: BinaryIO, implicit: bool, depth: int = 0) -> None:
    """Move past the items of an undefined-length value, its Sequence Delimiter included."""
    if depth > 64:
        raise InvalidDataError("sequences nested too deep")
    while True:
        found = _header(fh, True)
        if found is None:
            raise InvalidDataError("a sequence has no delimiter")
        tag, length, _ = found
        if tag == SEQ_END:
            return
        if tag != ITEM:
            raise InvalidDataError("expected a sequence item")
        if length != UNDEFINED:
            fh.seek(length, 1)
            continue
        while True:  # the item's elements, up to its delimiter
            inner = _header(fh, implicit)
            if inner is None:
                raise InvalidDataError("an item has no delimiter")
            if inner[0] == ITEM_END:
                break
            if inner[1] == UNDEFINED:
                _skip_items(fh, implicit, depth + 1)
            else:
                fh.seek(inner[1], 1)


def _copy(fh: BinaryIO, out: BinaryIO, start: int, end: int) -> None:
    fh.seek(start)
    left = end - start
    while left > 0:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            raise InvalidDataError("the file ends early")
        out.write(chunk)
        left -= len(chunk)


def rewrite_attributes(fh: BinaryIO, out: BinaryIO, values: Mapping[str, str]) -> Rewritten:
    """Copy the Part 10 file ``fh`` (seekable, at its start) to ``out`` with the attributes
    ``values`` names (keywords of :data:`ATTRIBUTES`) set; see the module's text."""
    unknown = set(values) - set(ATTRIBUTES)
    if unknown:
        raise InvalidDataError(f"not an attribute a correction changes: {sorted(unknown)}")
    head = read_head(fh)
    if head.transfer_syntax in (DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE):
        fh.seek(0)
        return _rewrite_with_pydicom(fh, out, values)
    implicit = head.transfer_syntax == IMPLICIT_VR_LE
    out.write(head.preamble + b"DICM" + b"".join(raw for _, raw in head.meta))
    pending = sorted((ATTRIBUTES[k][0], ATTRIBUTES[k][1], v) for k, v in values.items())
    needs_utf8 = any(not v.isascii() for _, vr, v in pending if vr in _TEXT_VRS)
    terms: list[str] | None = None  # known once (0008,0005) is seen or passed

    def settle_charset(found: bytes | None) -> list[str] | None:
        """The character set to encode in; writes (0008,0005) when it becomes UTF-8 (None:
        it stays as it is, the caller copies it if present)."""
        current = _charset_terms(found) if found is not None else [""]
        if needs_utf8 and _is_default(current):
            out.write(_element(SPECIFIC_CHARACTER_SET, "CS", UTF8.encode(), implicit))
            return [UTF8]
        return None

    def write_pending(before: int) -> None:
        assert terms is not None
        while pending and pending[0][0] < before:
            tag, vr, value = pending.pop(0)
            if value:  # an absent attribute set to empty stays absent
                out.write(_element(tag, vr, _encode(value, vr, terms), implicit))

    position = fh.tell()
    while True:
        found = _header(fh, implicit)
        if found is None:
            break
        tag, length, size = found
        if terms is None and tag > SPECIFIC_CHARACTER_SET:
            terms = settle_charset(None) or [""]
        if terms is not None:
            write_pending(tag)
        if tag > _LAST:
            fh.seek(position)
            break
        if length == UNDEFINED:
            _skip_items(fh, implicit)
            end = fh.tell()
        else:
            end = position + size + length
        if tag == SPECIFIC_CHARACTER_SET:
            fh.seek(position + size)
            raw = fh.read(length)
            terms = settle_charset(raw)
            if terms is None:
                terms = _charset_terms(raw)
                _copy(fh, out, position, end)
        elif pending and tag == pending[0][0]:
            assert terms is not None
            _, vr, value = pending.pop(0)
            out.write(_element(tag, vr, _encode(value, vr, terms), implicit))
        elif tag in (0x00080000, 0x00100000):
            pass  # group lengths of the groups changed: dropped (see the module's text)
        else:
            _copy(fh, out, position, end)
        fh.seek(end)
        position = end
    if terms is None:
        terms = settle_charset(None) or [""]
    write_pending(1 << 32)
    shutil.copyfileobj(fh, out, CHUNK)
    return Rewritten("\\".join(terms).strip("\\"))


def _rewrite_with_pydicom(fh: BinaryIO, out: BinaryIO, values: Mapping[str, str]) -> Rewritten:
    """:func:`rewrite_attributes` of a deflated or big endian file, through pydicom."""
    try:
        ds = dcmread(fh)
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise InvalidDataError(f"a stored instance cannot be read: {exc}") from exc
    terms = [str(t) for t in (ds.get("SpecificCharacterSet") or [""])]
    if isinstance(ds.get("SpecificCharacterSet"), str):
        terms = [str(ds.SpecificCharacterSet)]
    text = [v for k, v in values.items() if ATTRIBUTES[k][1] in _TEXT_VRS]
    if any(not v.isascii() for v in text) and _is_default(terms):
        ds.SpecificCharacterSet = UTF8
        terms = [UTF8]
    for keyword, value in values.items():
        _encode(value, ATTRIBUTES[keyword][1], terms)  # refuses what cannot be written
        if value or keyword in ds:
            setattr(ds, keyword, value)
    ds.save_as(out, enforce_file_format=True)
    return Rewritten("\\".join(terms).strip("\\"))
