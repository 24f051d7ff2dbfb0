"""Bulk data values of a stored instance by tag path (PS3.18 10.4.1.1.5, F.2.6).

A tag path is what ``dicom/metadata.py`` writes into BulkDataURIs: ``00291010`` for a top-level
element, ``00540016/0/00181072`` for an element inside item 0 of a sequence. Pixel data is not
read here (see ``dicom/frames.py`` and :func:`vesalius.dicom.structure.find_pixel_data`).
"""

from __future__ import annotations

import re

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from vesalius.dicom.source import Source, opened
from vesalius.errors import InvalidDataError, NotFoundError

_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


def parse_tag_path(text: str) -> list[int | str]:
    """``00540016/0/00181072`` → ``[0x00540016, 0, 0x00181072]`` as tags (str) and indexes."""
    pieces = text.strip("/").split("/")
    if len(pieces) % 2 == 0 or len(pieces) > 33:
        raise NotFoundError(f"no bulk data at {text[:80]}")
    out: list[int | str] = []
    for n, piece in enumerate(pieces):
        if n % 2 == 0:
            if not _TAG.match(piece):
                raise NotFoundError(f"no bulk data at {text[:80]}: {piece[:10]} is not a tag")
            out.append(piece.upper())
        else:
            if not piece.isdigit() or len(piece) > 6:
                raise NotFoundError(f"no bulk data at {text[:80]}: bad item index")
            out.append(int(piece))
    return out


def read_bulk_value(source: Source, tag_path: str) -> bytes:
    """The raw value bytes of the element at ``tag_path`` (pixel data excluded)."""
    steps = parse_tag_path(tag_path)
    try:
        with opened(source) as fh:
            ds: Dataset = dcmread(fh, stop_before_pixels=True)
    except Exception as exc:
        raise InvalidDataError(f"stored file cannot be parsed: {type(exc).__name__}") from exc
    current: Dataset = ds
    for n in range(0, len(steps), 2):
        tag = Tag(int(str(steps[n]), 16))
        if tag not in current:
            raise NotFoundError(f"no element {steps[n]} in the instance")
        elem = current[tag]
        if n + 1 == len(steps):
            value = elem.value
            if isinstance(value, bytes | bytearray):
                return bytes(value)
            raise NotFoundError(f"element {steps[n]} is not bulk data")
        index = int(steps[n + 1])
        items = elem.value if elem.VR == "SQ" else None
        if not items or index >= len(items):
            raise NotFoundError(f"no item {index} in {steps[n]}")
        current = items[index]
    raise NotFoundError("empty tag path")
