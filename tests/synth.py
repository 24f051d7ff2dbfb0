"""Synthetic DICOM instances for tests: small, valid Part 10 files with tiny pixel data.

``make_instance(path, **attrs)`` writes a CT image (4x4, 16 bits, Explicit VR Little Endian by
default) with fresh UIDs and plausible patient/study/series attributes; every keyword argument
sets (or, with ``None``, removes) one attribute by keyword. A list of dicts becomes a sequence.
Text is encoded in the file's Specific Character Set, so ``SpecificCharacterSet="ISO_IR 100"``
with ``PatientName="Buc^Jérôme"`` writes Latin-1 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _item(values: Mapping[str, Any]) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        _set(item, keyword, value)
    return item


def _set(ds: Dataset, keyword: str, value: Any) -> None:
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        value = Sequence([_item(v) for v in value])
    setattr(ds, keyword, value)


def make_instance(
    path: Path,
    *,
    sop_class_uid: str = CT_IMAGE_STORAGE,
    transfer_syntax: str = ExplicitVRLittleEndian,
    rows: int = 4,
    columns: int = 4,
    pixel_data: bytes | None = None,
    **attrs: Any,
) -> Dataset:
    """Write a small valid Part 10 file to ``path`` and return its data set (with file meta).

    Defaults can be overridden by keyword, e.g. ``StudyInstanceUID=study_uid,
    Modality="MR", PatientName="Doe^Jane", StudyDate="20240131"``; ``pixel_data`` replaces
    the all-zero pixels (it must match rows, columns and BitsAllocated).
    """
    ds = Dataset()
    defaults: dict[str, Any] = {
        "PatientName": "Synthetic^Patient",
        "PatientID": "SYNTH-1",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "StudyInstanceUID": generate_uid(),
        "StudyDate": "20240101",
        "StudyTime": "120000",
        "StudyID": "1",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "StudyDescription": "Synthetic study",
        "SeriesInstanceUID": generate_uid(),
        "SeriesNumber": 1,
        "Modality": "CT",
        "SOPClassUID": sop_class_uid,
        "SOPInstanceUID": generate_uid(),
        "InstanceNumber": 1,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": rows,
        "Columns": columns,
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
    }
    for keyword, value in {**defaults, **attrs}.items():
        _set(ds, keyword, value)
    ds.PixelData = bytes(2 * rows * columns) if pixel_data is None else pixel_data
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds
