"""Reading what the index needs from a Part 10 file, without decoding pixel data (PS3.10 7)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from vesalius.dicom import values
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


def _first_item(ds: Dataset, keyword: str) -> Dataset:
    seq = ds.get(keyword)
    if seq:
        try:
            return seq[0]  # type: ignore[no-any-return]
        except (IndexError, TypeError):
            pass
    return Dataset()


def header_from_dataset(ds: Dataset, transfer_syntax_uid: str) -> InstanceHeader:
    """Extract the indexed attributes; raise when a required UID is missing or malformed."""
    g = ds.get
    request = _first_item(ds, "RequestAttributesSequence")
    return InstanceHeader(
        patient_id=values.text(g("PatientID")),
        issuer_of_patient_id=values.text(g("IssuerOfPatientID")),
        patient_name=values.person_name(g("PatientName")),
        patient_birth_date=values.date(g("PatientBirthDate")),
        patient_sex=values.text(g("PatientSex")),
        study_uid=check_uid(g("StudyInstanceUID"), "StudyInstanceUID"),
        study_date=values.date(g("StudyDate")),
        study_time=values.time(g("StudyTime")),
        accession_number=values.text(g("AccessionNumber")),
        study_id=values.text(g("StudyID")),
        study_description=values.text(g("StudyDescription")),
        referring_physician_name=values.person_name(g("ReferringPhysicianName")),
        series_uid=check_uid(g("SeriesInstanceUID"), "SeriesInstanceUID"),
        modality=values.text(g("Modality")),
        series_number=values.integer(g("SeriesNumber")),
        series_description=values.text(g("SeriesDescription")),
        series_date=values.date(g("SeriesDate")),
        series_time=values.time(g("SeriesTime")),
        body_part_examined=values.text(g("BodyPartExamined")),
        station_name=values.text(g("StationName")),
        institution_name=values.text(g("InstitutionName")),
        performed_procedure_step_start_date=values.date(g("PerformedProcedureStepStartDate")),
        performed_procedure_step_start_time=values.time(g("PerformedProcedureStepStartTime")),
        requested_procedure_id=values.text(request.get("RequestedProcedureID")),
        scheduled_procedure_step_id=values.text(request.get("ScheduledProcedureStepID")),
        sop_class_uid=check_uid(g("SOPClassUID"), "SOPClassUID"),
        sop_instance_uid=check_uid(g("SOPInstanceUID"), "SOPInstanceUID"),
        instance_number=values.integer(g("InstanceNumber")),
        content_date=values.date(g("ContentDate")),
        content_time=values.time(g("ContentTime")),
        rows=values.integer(g("Rows")),
        columns=values.integer(g("Columns")),
        number_of_frames=values.integer(g("NumberOfFrames")),
        transfer_syntax_uid=transfer_syntax_uid,
        specific_character_set=values.text(g("SpecificCharacterSet")),
    )


def read_header(path: Path) -> InstanceHeader:
    """Parse a Part 10 file's header (pixel data is neither read nor decoded).

    Raises :class:`InvalidDataError` when the file is not DICOM, is truncated before the pixel
    data, has no transfer syntax, or lacks a required UID.
    """
    return read_instance(path)[0]


def read_instance(path: Path) -> tuple[InstanceHeader, Dataset]:
    """:func:`read_header`, also returning the parsed data set (values over 4 KiB deferred,
    read from the file on access; no pixel data)."""
    try:
        ds = dcmread(path, stop_before_pixels=True, defer_size=4096)
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
