"""The DICOM JSON computed at ingest for WADO-RS metadata (PS3.18 F.2), on real-world files.

Every Part 10 file bundled with pydicom is turned into metadata the way ingest does it; the JSON
must read back with pydicom's own DICOM JSON reader to the same values as the file (bulk data
excepted: those become BulkDataURIs that name their tag path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vesalius.dicom.metadata import BULK_THRESHOLD, decode, with_root
from vesalius.errors import VesaliusError
from vesalius.services.metadata import metadata_from_file

ROOT = "http://pacs.example/dicom-web"


def _part10_files() -> list[Path]:
    found = []
    bundled = Path(pydicom.data.__file__).parent / "test_files"  # no download attempts
    for path in sorted(bundled.rglob("*.dcm")):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "TransferSyntaxUID" in meta and "SOPInstanceUID" in ds:
            found.append(path)
    return found


FILES = _part10_files()


def _values_equal(original: Dataset, restored: Dataset, path: str = "") -> list[str]:
    problems = []
    for elem in original:
        if elem.tag.group == 0x0002 or elem.tag.element == 0 or elem.tag.group == 0xFFFE:
            continue
        where = f"{path}{elem.tag}"
        if elem.tag not in restored:
            problems.append(f"{where} missing")
            continue
        other = restored[elem.tag]
        if elem.VR == "SQ":
            if len(elem.value) != len(other.value):
                problems.append(f"{where} item count")
                continue
            for n, (a, b) in enumerate(zip(elem.value, other.value, strict=True)):
                problems += _values_equal(a, b, f"{where}/{n}/")
        elif isinstance(elem.value, bytes):
            if len(elem.value) <= BULK_THRESHOLD and other.value != elem.value:
                problems.append(f"{where} inline binary differs")
        elif not _same(elem.value, other.value) and not (elem.is_empty and other.is_empty):
            problems.append(f"{where} {elem.value!r} != {other.value!r}")
    return problems


def _same(a: Any, b: Any) -> bool:
    """Equal as text, or as numbers (``1.000000`` and ``1.0``), value by value."""
    many = (list, tuple, MultiValue)
    if isinstance(a, many) or isinstance(b, many):
        a_list = list(a) if isinstance(a, many) else [a]
        b_list = list(b) if isinstance(b, many) else [b]
        return len(a_list) == len(b_list) and all(map(_same, a_list, b_list))
    if str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_metadata_reads_back_to_the_same_values(path: Path) -> None:
    try:
        stored = metadata_from_file(path)
    except VesaliusError as exc:
        pytest.skip(f"ingest refuses this file: {exc}")
    document: dict[str, Any] = json.loads(with_root(decode(stored), ROOT))
    uris: list[str] = []

    def bulk(uri: str) -> bytes:
        uris.append(uri)
        return b""

    restored = Dataset.from_json(document, bulk_data_uri_handler=bulk)
    original = dcmread(path, stop_before_pixels=True)
    problems = [p for p in _values_equal(original, restored) if "7fe0" not in p.lower()]
    assert problems == []
    for uri in uris:
        assert uri.startswith(f"{ROOT}/studies/{original.StudyInstanceUID}/series/")
        assert "/bulkdata/" in uri
    if "PixelData" in dcmread(path, specific_tags=["PixelData"]):
        assert document["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
