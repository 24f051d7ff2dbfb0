"""The DICOM JSON model of an instance's header, for WADO-RS metadata (PS3.18 F.2, 10.4.1.2).

Computed once at ingest from the header parse (pixel data never read) and kept in the index, so
``/metadata`` never opens a file. Values larger than :data:`BULK_THRESHOLD` bytes in a binary VR,
and the pixel data, become ``BulkDataURI`` references (PS3.18 F.2.6) of the form
``{root}/studies/{s}/series/{r}/instances/{i}/bulkdata/{path}``, where ``path`` is the element's
tag path (``7FE00010``; ``00540016/0/00181072`` inside sequences). The stored text holds the
literal ``{root}/`` prefix as :data:`ROOT_MARK`; :func:`with_root` puts the server's DICOMweb root
there when serving, so the stored JSON does not depend on the host name clients use.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

log = logging.getLogger(__name__)

#: Binary values above this many bytes are served as bulk data, not inline (PS3.18 F.2.7).
BULK_THRESHOLD = 1024
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
#: Placeholder for the DICOMweb root in stored JSON; see :func:`with_root`.
ROOT_MARK = '"BulkDataURI":"'
AVAILABLE_TRANSFER_SYNTAX_UID = "00083002"


def _length(ds: Dataset, tag: int) -> int:
    """A value's length in bytes without loading a deferred value."""
    raw = ds._dict.get(Tag(tag))  # RawDataElement (not yet converted) or DataElement
    if isinstance(raw, RawDataElement):
        return int(raw.length)
    if isinstance(raw, DataElement) and isinstance(raw.value, bytes | bytearray):
        return len(raw.value)
    return 0


def _element_json(elem: DataElement) -> dict[str, Any]:
    try:
        return elem.to_json_dict(None, 0)
    except Exception as exc:  # malformed values (bad DS/IS text, undecodable bytes)
        log.debug("metadata: %s kept empty: %s", elem.tag, exc)
        return {"vr": elem.VR}


def _dataset_json(ds: Dataset, bulk_base: str, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in sorted(ds._dict):
        tag_int = int(tag)
        if tag_int >> 16 == 0x0002 or tag_int & 0xFFFF == 0 or tag_int >> 16 in (0xFFFE,):
            continue  # file meta, group lengths, item delimiters
        key = f"{tag_int:08X}"
        try:
            elem = ds[Tag(tag_int)]
        except Exception as exc:  # a value pydicom cannot convert
            log.debug("metadata: %s skipped: %s", key, exc)
            continue
        vr = str(elem.VR)
        if vr == "SQ":
            items = elem.value or []
            out[key] = {
                "vr": "SQ",
                "Value": [
                    _dataset_json(item, bulk_base, f"{prefix}{key}/{n}/")
                    for n, item in enumerate(items)
                ],
            }
            if not items:
                del out[key]["Value"]
        elif vr in BULK_VRS and _length(ds, tag_int) > BULK_THRESHOLD:
            shown = "OW" if vr in ("OB or OW", "US or OW") else vr
            out[key] = {"vr": shown, "BulkDataURI": f"{bulk_base}/bulkdata/{prefix}{key}"}
        else:
            out[key] = _element_json(elem)
    return out


def instance_path(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """The instance's resource path below the DICOMweb root (PS3.18 10.4.1)."""
    return f"studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}"


def instance_json(
    ds: Dataset,
    resource: str,
    *,
    transfer_syntax_uid: str,
    pixel_data: tuple[int, str] | None,
) -> dict[str, Any]:
    """The DICOM JSON object of ``ds`` (read without pixel data) for WADO-RS metadata.

    ``resource`` is :func:`instance_path`; ``pixel_data`` the (tag, VR) of the file's pixel
    data element, referenced as bulk data. Available Transfer Syntax UID (0008,3002) tells
    clients the stored syntax, as PS3.18 10.4.1.2 allows.
    """
    bulk_base = "{root}/" + resource
    return finish_instance_json(
        _dataset_json(ds, bulk_base, ""), bulk_base, transfer_syntax_uid, pixel_data
    )


def finish_instance_json(
    out: dict[str, Any],
    bulk_base: str,
    transfer_syntax_uid: str,
    pixel_data: tuple[int, str] | None,
) -> dict[str, Any]:
    """Add Available Transfer Syntax UID and the pixel data reference to a data set's JSON
    (read up to its pixel data) and put its members in tag order."""
    out[AVAILABLE_TRANSFER_SYNTAX_UID] = {"vr": "UI", "Value": [transfer_syntax_uid]}
    if pixel_data is not None:
        tag, vr = pixel_data
        key = f"{tag:08X}"
        if vr not in ("OB", "OW", "OF", "OD"):
            vr = "OB" if "OB" in vr else "OW"
        out[key] = {"vr": vr, "BulkDataURI": f"{bulk_base}/bulkdata/{key}"}
    return dict(sorted(out.items()))


def encode(document: dict[str, Any]) -> bytes:
    """Compact JSON, zlib-compressed, for the index."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return zlib.compress(text.encode("utf-8"), 6)


def decode(stored: bytes) -> str:
    """The JSON text of :func:`encode`'s output (still holding the root placeholder)."""
    return zlib.decompress(stored).decode("utf-8")


def with_root(text: str, root: str) -> str:
    """Put the DICOMweb ``root`` URL (no trailing slash) into stored JSON text."""
    return text.replace(ROOT_MARK + "{root}/", ROOT_MARK + root + "/")


def iter_array(items: Iterator[str]) -> Iterator[str]:
    """A JSON array streamed from already-encoded objects."""
    yield "["
    first = True
    for item in items:
        if not first:
            yield ","
        first = False
        yield item
    yield "]"
