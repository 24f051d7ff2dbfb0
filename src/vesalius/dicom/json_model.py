"""Query records as DICOM JSON (PS3.18 F.2): ``keyword -> value`` to ``"GGGGEEEE" -> {vr, Value}``.

Records come from the index (``services/query.py``): text, integers, lists for multi-valued
attributes, lists of dicts for sequences, ``None`` for zero-length. Person names split into their
component groups (PS3.18 F.2.2); IS/US/UL values are numbers, DS numbers too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from vesalius.errors import QueryError

_NUMBER_VRS = frozenset({"IS", "US", "UL", "SL", "SS", "SV", "UV", "FL", "FD", "DS"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


@functools.cache
def tag_and_vr(keyword: str) -> tuple[str, str]:
    """The 8-hex-digit tag and VR of a dictionary keyword; :class:`QueryError` if unknown."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise QueryError(f"unknown attribute {keyword[:64]}")
    vr = dictionary_VR(tag)
    if vr in ("US or SS", "US or OW", "OB or OW", "US or SS or OW"):
        vr = vr[:2]
    return f"{tag:08X}", vr


def _number(value: Any, vr: str) -> int | float | None:
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        return float(text) if vr in ("DS", "FL", "FD") else int(text)
    except ValueError:
        return None


def _values(value: Any, vr: str) -> list[Any]:
    items = value if isinstance(value, list | tuple) else str(value).split("\\")
    if isinstance(value, int | float):
        items = [value]
    out: list[Any] = []
    for item in items:
        if vr == "PN":
            groups = str(item).split("=")
            out.append({name: g for name, g in zip(_PN_GROUPS, groups, strict=False) if g})
        elif vr in _NUMBER_VRS:
            out.append(_number(item, vr))
        else:
            out.append(item)
    return out


def element_json(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    """One attribute as a DICOM JSON member."""
    tag, vr = tag_and_vr(keyword)
    member: dict[str, Any] = {"vr": vr}
    if vr == "SQ":
        items = value if isinstance(value, list) else ([value] if value else [])
        if items:
            member["Value"] = [record_json(item) for item in items]
    elif value is not None and value != "" and value != []:
        member["Value"] = _values(value, vr)
    return tag, member


def record_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as a DICOM JSON data set, members in tag order."""
    members = dict(element_json(k, v) for k, v in record.items())
    return dict(sorted(members.items()))
