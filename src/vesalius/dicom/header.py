"""Reading what the index needs from a Part 10 file, without decoding pixel data (PS3.10 7)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from vesalius.dicom import values
from vesalius.dicom.source import Source, opened
from vesalius.dicom.uids import check_uid
from vesalius.errors import DataSetMismatchError, InvalidDataError, VesaliusError


@dataclass(frozen=True)
class InstanceHeader:
    """The indexed attributes of one instance, as Unicode text and normalised values."""

    # Patient (PS3.4 C.6.1.1.2)
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    # Study (PS3.4 C.6.1.1.3)
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    # Series (PS3.4 C.6.1.1.4)
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    series_date: str
    series_time: str
    body_part_examined: str
    station_name: str
    institution_name: str
    performed_procedure_step_start_date: str
    performed_procedure_step_start_time: str
    requested_procedure_id: str
    scheduled_procedure_step_id: str
    # Instance (PS3.4 C.6.1.1.5)
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int | None
    content_date: str
    content_time: str
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    transfer_syntax_uid: str
    specific_character_set: str

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: How each field of :class:`InstanceHeader` is read: (field, tag, kind). Kinds: ``text``,
#: ``name`` (PN, trailing ``=`` dropped), ``date``, ``time``, ``int`` and ``uid`` (required).
#: Both readers use it: pydicom's (:func:`header_from_dataset`) and ``dicom/scan.py``.
FIELDS: tuple[tuple[str, int, str], ...] = (
    ("patient_id", 0x00100020, "text"),
    ("issuer_of_patient_id", 0x00100021, "text"),
    ("patient_name", 0x00100010, "name"),
    ("patient_birth_date", 0x00100030, "date"),
    ("patient_sex", 0x00100040, "text"),
    ("study_uid", 0x0020000D, "uid"),
    ("study_date", 0x00080020, "date"),
    ("study_time", 0x00080030, "time"),
    ("accession_number", 0x00080050, "text"),
    ("study_id", 0x00200010, "text"),
    ("study_description", 0x00081030, "text"),
    ("referring_physician_name", 0x00080090, "name"),
    ("series_uid", 0x0020000E, "uid"),
    ("modality", 0x00080060, "text"),
    ("series_number", 0x00200011, "int"),
    ("series_description", 0x0008103E, "text"),
    ("series_date", 0x00080021, "date"),
    ("series_time", 0x00080031, "time"),
    ("body_part_examined", 0x00180015, "text"),
    ("station_name", 0x00081010, "text"),
    ("institution_name", 0x00080080, "text"),
    ("performed_procedure_step_start_date", 0x00400244, "date"),
    ("performed_procedure_step_start_time", 0x00400245, "time"),
    ("sop_class_uid", 0x00080016, "uid"),
    ("sop_instance_uid", 0x00080018, "uid"),
    ("instance_number", 0x00200013, "int"),
    ("content_date", 0x00080023, "date"),
    ("content_time", 0x00080033, "time"),
    ("rows", 0x00280010, "int"),
    ("columns", 0x00280011, "int"),
    ("number_of_frames", 0x00280008, "int"),
    ("specific_character_set", 0x00080005, "text"),
)
#: Request Attributes Sequence (0040,0275): its first item's fields.
REQUEST_ATTRIBUTES = 0x00400275
REQUEST_FIELDS = (
    ("requested_procedure_id", 0x00401001),
    ("scheduled_procedure_step_id", 0x00400009),
)


def normalise(kind: str, value: Any, field: str) -> Any:
    """A field's value as the index keeps it (``dicom/values.py``); raises for a bad UID."""
    if kind == "text":
        return values.text(value)
    if kind == "name":
        return values.person_name(value)
    if kind == "date":
        return values.date(value)
    if kind == "time":
        return values.time(value)
    if kind == "int":
        return values.integer(value)
    return check_uid(value, _KEYWORDS.get(field, field))


_KEYWORDS = {
    "study_uid": "StudyInstanceUID",
    "series_uid": "SeriesInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "sop_instance_uid": "SOPInstanceUID",
}


def _first_item(ds: Dataset, tag: int) -> Dataset:
    seq = ds.get(tag)
    if seq is not None and seq.value:
        try:
            return seq.value[0]  # type: ignore[no-any-return]
        except (IndexError, TypeError):
            pass
    return Dataset()


def _value(ds: Dataset, tag: int) -> Any:
    element = ds.get(tag)
    return None if element is None else element.value


def header_from_dataset(ds: Dataset, transfer_syntax_uid: str) -> InstanceHeader:
    """Extract the indexed attributes; raise when a required UID is missing or malformed."""
    found = {field: normalise(kind, _value(ds, tag), field) for field, tag, kind in FIELDS}
    request = _first_item(ds, REQUEST_ATTRIBUTES)
    for field, tag in REQUEST_FIELDS:
        found[field] = values.text(_value(request, tag))
    return InstanceHeader(transfer_syntax_uid=transfer_syntax_uid, **found)


def read_header(source: Source) -> InstanceHeader:
    """Parse a Part 10 file's header (pixel data is neither read nor decoded).

    Raises :class:`InvalidDataError` when the file is not DICOM, is truncated before the pixel
    data, has no transfer syntax, or lacks a required UID.
    """
    return read_instance(source)[0]


def read_instance(source: Source) -> tuple[InstanceHeader, Dataset]:
    """:func:`read_header`, also returning the parsed data set (values over 4 KiB deferred,
    read from the file on access, so a reader given must stay open while it is used; no
    pixel data)."""
    try:
        with opened(source) as fh:
            ds = dcmread(fh, stop_before_pixels=True, defer_size=4096)
        meta = getattr(ds, "file_meta", None)
        transfer_syntax = values.text(meta.get("TransferSyntaxUID") if meta else None)
        check_uid(transfer_syntax, "TransferSyntaxUID")
        header = header_from_dataset(ds, transfer_syntax)
        meta_sop = values.text(meta.get("MediaStorageSOPInstanceUID")) if meta else ""
    except VesaliusError:
        raise
    except InvalidDicomError as exc:
        raise InvalidDataError(f"not a DICOM file: {exc}") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise InvalidDataError(f"cannot parse data set: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise InvalidDataError(f"cannot parse data set: {type(exc).__name__}") from exc
    if meta_sop and meta_sop != header.sop_instance_uid:
        raise DataSetMismatchError("file meta SOP Instance UID differs from the data set's")
    return header, ds
