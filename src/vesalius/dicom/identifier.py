"""C-FIND identifiers: reading request keys as Unicode text, building responses (PS3.4 C.4.1.1.3).

A request key becomes ``keyword -> raw value``: the value as the SCU wrote it, decoded with its
Specific Character Set, multiple values joined by backslashes (so ``CT\\MR``, a UID list or a
range such as ``20240101-20240131`` reach the matching rules untouched). A sequence key becomes
the key dict of its single item (PS3.4 C.2.2.2.6). Elements without a keyword (private or
unknown) are named by their tag, ``GGGGEEEE``, as in DICOMweb.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from vesalius.dicom import charset as _charset

FilterValue = str | dict[str, str]


def key_of(element: DataElement) -> str:
    """The name of a key: its keyword, or ``GGGGEEEE`` for private and unknown tags."""
    return str(element.keyword) or f"{int(element.tag):08X}"


def raw_text(value: Any) -> str:
    """A decoded element value as one string; multiple values are joined by backslashes."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\0 ")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(raw_text(v) for v in value)
    return str(value).strip("\0 ")


def read_keys(identifier: Dataset) -> dict[str, FilterValue]:
    """Every key of ``identifier`` except Specific Character Set, as raw Unicode values."""
    keys: dict[str, FilterValue] = {}
    for element in identifier:
        if element.tag == 0x00080005 or element.tag.element == 0x0000:
            continue
        if element.VR == "SQ":
            items = element.value or []
            first = items[0] if len(items) else Dataset()
            keys[key_of(element)] = {
                key_of(sub): raw_text(sub.value) for sub in first if sub.VR != "SQ"
            }
        else:
            keys[key_of(element)] = raw_text(element.value)
    return keys


def requested_charset(identifier: Dataset) -> list[str]:
    """The request's Specific Character Set terms (``[]`` for the default repertoire)."""
    element = identifier.get("SpecificCharacterSet")
    return _charset.terms(element) if element is not None else []


def _texts(values: Mapping[str, Any]) -> Iterator[str]:
    for value in values.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, str):
                    yield item
                elif isinstance(item, Mapping):
                    yield from _texts(item)


def _fill(ds: Dataset, values: Mapping[str, Any]) -> None:
    for keyword, value in values.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue  # private or unknown: nothing to say about it
        vr = dictionary_VR(tag).split(" or ")[0]  # e.g. "US or SS": either fits no value
        if vr == "SQ":
            items = []
            for entry in value or []:
                item = Dataset()
                _fill(item, entry)
                items.append(item)
            ds.add_new(tag, vr, items)
        elif value is None or value == "":
            ds.add_new(tag, vr, None)
        elif isinstance(value, list | tuple):
            ds.add_new(tag, vr, [str(v) if vr not in ("US", "UL") else v for v in value])
        elif vr in ("US", "UL", "SS", "SL"):
            ds.add_new(tag, vr, int(value))
        else:
            ds.add_new(tag, vr, str(value))


def build_response(values: Mapping[str, Any], requested: Sequence[str]) -> Dataset:
    """A response identifier holding ``values`` (keyword -> value; None or '' gives a
    zero-length element, a list of dicts a sequence), in the request's character set when it
    can hold every value, else in UTF-8 (see :mod:`vesalius.dicom.charset`)."""
    ds = Dataset()
    chosen = _charset.response_charset(requested, _texts(values))
    if chosen:
        ds.SpecificCharacterSet = chosen[0] if len(chosen) == 1 else chosen
    _fill(ds, values)
    return ds


# -- fast response encoding ----------------------------------------------------------------------

#: Python codecs for the single-byte and UTF-8 character sets the fast encoder handles; any
#: other response character set (ISO 2022 code extensions…) goes through pydicom.
_FAST_CODECS = {
    (): "ascii",
    ("ISO_IR 6",): "ascii",
    ("ISO_IR 100",): "latin_1",
    ("ISO_IR 192",): "utf-8",
}
#: VRs whose text is in the Specific Character Set (PS3.5 6.1.2.3); the others are ASCII.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_BINARY = {"US": "<H", "UL": "<L", "SS": "<h", "SL": "<l"}
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)
_LONG_HEADER_VRS = frozenset({"UC", "UR", "UT"})
_IMPLICIT, _EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


#: The plan's name for the response's own Specific Character Set element.
_CHARSET = "SpecificCharacterSet"


@lru_cache(maxsize=256)
def _plan(keywords: tuple[str, ...]) -> tuple[tuple[str, int, str], ...] | None:
    """(keyword, tag, VR) of a response's attributes in tag order, or None when one is a
    sequence; the same for every match of a query, so worked out once."""
    found = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            return None
        found.append((keyword, tag, vr))
    return tuple(sorted(found, key=lambda e: e[1]))


@lru_cache(maxsize=1024)
def _head(tag: int, vr: str, implicit: bool) -> tuple[bytes, bool]:
    """An element header without its length, and whether the length takes 32 bits."""
    tag_bytes = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return tag_bytes, True
    if vr in _LONG_HEADER_VRS:
        return tag_bytes + vr.encode() + b"\0\0", True
    return tag_bytes + vr.encode(), False


def _element_bytes(tag: int, vr: str, value: Any, codec: str, implicit: bool) -> bytes | None:
    if value is None or value == "":
        data = b""
    elif vr in _BINARY:
        items = value if isinstance(value, list | tuple) else [value]
        data = b"".join(struct.pack(_BINARY[vr], int(v)) for v in items)
    elif vr in _TEXT_VRS:
        text = "\\".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        data = text.encode(codec if vr in _CHARSET_VRS else "ascii")
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
    else:
        return None
    head, long_length = _head(tag, vr, implicit)
    if long_length:
        return head + struct.pack("<L", len(data)) + data
    if len(data) > 0xFFFF:
        return None
    return head + struct.pack("<H", len(data)) + data


def encode_response(
    values: Mapping[str, Any], requested: Sequence[str], transfer_syntax: str
) -> bytes | None:
    """:func:`build_response` already encoded in Implicit or Explicit VR Little Endian, written
    directly from the values (no pydicom data set): the per-match cost of C-FIND. None when the
    response needs what only pydicom does here: sequences, ISO 2022 character sets, other VRs
    or transfer syntaxes; the caller then encodes :func:`build_response`."""
    if transfer_syntax not in (_IMPLICIT, _EXPLICIT):
        return None
    chosen = _charset.response_charset(requested, _texts(values))
    codec = _FAST_CODECS.get(tuple(chosen))
    if codec is None:
        return None
    plan = _plan((*values, _CHARSET) if chosen else tuple(values))
    if plan is None:
        return None
    charset = chosen[0] if len(chosen) == 1 else list(chosen)
    implicit = transfer_syntax == _IMPLICIT
    out = bytearray()
    try:
        for keyword, tag, vr in plan:
            value = charset if keyword == _CHARSET else values[keyword]
            data = _element_bytes(tag, vr, value, codec, implicit)
            if data is None:
                return None
            out += data
    except (UnicodeEncodeError, ValueError, TypeError):
        return None
    return bytes(out)
