"""Identifiers for C-FIND, C-MOVE and C-GET built from findscu-style keys
(``Keyword=value``, ``gggg,eeee=value``, ``Seq[0].Keyword=``; PS3.4 C.2.2.1, C.4)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag

from vesalius.dicom.model import LEVELS
from vesalius.errors import QueryError

_KEY_PART = re.compile(
    r"^\(?(?:(?P<group>[0-9A-Fa-f]{4}),(?P<element>[0-9A-Fa-f]{4})|(?P<keyword>[A-Za-z]\w*))\)?"
    r"(?:\[(?P<index>\d+)\])?$"
)
_INT_VRS = {"US", "SS", "UL", "SL", "UV", "SV"}
_FLOAT_VRS = {"FL", "FD"}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _key_part(part: str, spec: str) -> tuple[BaseTag, int | None]:
    match = _KEY_PART.match(part.strip())
    if not match:
        raise QueryError(f"key {spec!r}: cannot read {part!r} (keyword or gggg,eeee)")
    if match["keyword"]:
        number = tag_for_keyword(match["keyword"])
        if number is None:
            raise QueryError(f"key {spec!r}: unknown keyword {match['keyword']!r}")
        tag = Tag(number)
    else:
        tag = Tag(int(match["group"], 16), int(match["element"], 16))
    return tag, None if match["index"] is None else int(match["index"])


def _vr(tag: BaseTag, spec: str) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        raise QueryError(f"key {spec!r}: {tag} is not in the data dictionary") from None
    return vr.split(" or ")[0]


def _typed(vr: str, value: str, spec: str) -> Any:
    if value == "":
        return None
    try:
        if vr in _INT_VRS:
            numbers = [int(v) for v in value.split("\\")]
            return numbers[0] if len(numbers) == 1 else numbers
        if vr in _FLOAT_VRS:
            floats = [float(v) for v in value.split("\\")]
            return floats[0] if len(floats) == 1 else floats
    except ValueError:
        raise QueryError(f"key {spec!r}: {vr} needs numbers") from None
    if vr in _BINARY_VRS or vr == "SQ" or vr == "AT":
        raise QueryError(f"key {spec!r}: a {vr} key can only be given empty")
    return value


def add_key(identifier: Dataset, spec: str) -> None:
    """Add one findscu-style key: ``Keyword=value``, ``gggg,eeee=value``, ``Seq[0].Keyword=``;
    an empty value (or no ``=``) asks for the attribute to be returned (PS3.4 C.2.2.1)."""
    path, _, value = spec.partition("=")
    parts = path.split(".")
    current = identifier
    for part in parts[:-1]:
        tag, index = _key_part(part, spec)
        if _vr(tag, spec) != "SQ":
            raise QueryError(f"key {spec!r}: {part} is not a sequence")
        if tag not in current or current[tag].value is None:
            current[tag] = DataElement(tag, "SQ", DicomSequence())
        items = current[tag].value
        while len(items) <= (index or 0):
            items.append(Dataset())
        current = items[index or 0]
    tag, index = _key_part(parts[-1], spec)
    if index is not None:
        raise QueryError(f"key {spec!r}: an item index needs a nested attribute after it")
    vr = _vr(tag, spec)
    if vr == "SQ":
        if value:
            raise QueryError(f"key {spec!r}: give a sequence's attributes as Seq[0].Keyword=")
        current[tag] = DataElement(tag, "SQ", DicomSequence())
        return
    current[tag] = DataElement(tag, vr, _typed(vr, value, spec))
    if not value.isascii() and "SpecificCharacterSet" not in identifier:
        identifier.SpecificCharacterSet = "ISO_IR 192"


def build_identifier(level: str, keys: Sequence[str]) -> Dataset:
    """A C-FIND/C-MOVE/C-GET identifier: Query/Retrieve Level plus the keys (PS3.4 C.4)."""
    if level.upper() not in LEVELS:
        raise QueryError(f"level must be one of {', '.join(LEVELS)}")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.upper()
    for spec in keys:
        add_key(identifier, spec)
    return identifier


def key_tag(spec: str) -> BaseTag:
    """The top-level attribute a key names (``Seq[0].Keyword=x`` names ``Seq``)."""
    path = spec.partition("=")[0]
    return _key_part(path.split(".")[0], spec)[0]


def key_keyword(tag: BaseTag) -> str:
    """The keyword of a tag, or its ``gggg,eeee`` form when it has none."""
    return str(keyword_for_tag(tag) or f"{tag.group:04X},{tag.element:04X}")
