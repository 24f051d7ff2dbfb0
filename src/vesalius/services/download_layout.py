"""Where each instance goes in a download: the folder names of a ZIP (from the index's patient,
study and series values, made safe by :mod:`vesalius.services.names`) and the DICOMDIR records
of DICOM media (PS3.3 F.5: PATIENT, STUDY, SERIES and IMAGE keys from the index; a Type 1 key
the data lacks is made up so the directory stays valid, docs/conformance.md section 10)."""

from __future__ import annotations

from datetime import datetime

from vesalius.dicom import dicomdir
from vesalius.dicom.dicomdir import DicomdirWriter, element
from vesalius.index.downloads import DownloadRow

# -- folder labels (ZIP) ------------------------------------------------------------------------


def iso_date(value: str) -> str:
    """``YYYY-MM-DD`` of a DA value, or "" when it is not one."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else ""


def patient_label(row: DownloadRow) -> str:
    """``Family Given (ID)``."""
    name = " ".join(part for part in row.patient_name.split("^") if part.strip())
    return f"{name} ({row.patient_id})" if row.patient_id else name


def study_label(row: DownloadRow) -> str:
    """``YYYY-MM-DD Description (Accession)``."""
    parts = [iso_date(row.study_date), row.study_description]
    if row.accession_number:
        parts.append(f"({row.accession_number})")
    return " ".join(p for p in parts if p)


def series_label(row: DownloadRow) -> str:
    """``NNN Modality Description``."""
    number = f"{row.series_number:03d}" if row.series_number is not None else ""
    return " ".join(p for p in (number, row.modality, row.series_description) if p)


# -- DICOMDIR records (PS3.3 F.5) ---------------------------------------------------------------


def _keys(*items: tuple[int, str, str]) -> tuple[list[bytes], str]:
    """Encoded keys, and the Specific Character Set they need (UTF-8 where any is not
    ASCII)."""
    encoded = [element(tag, vr, value) for tag, vr, value in items]
    ascii_only = all(value.isascii() for _, _, value in items)
    return encoded, "" if ascii_only else "ISO_IR 192"


def patient_record(writer: DicomdirWriter, row: DownloadRow) -> None:
    """F.5.1: Patient's Name (2), Patient ID (1: one is made up where the index has none)."""
    keys, charset = _keys(
        (0x00100010, "PN", dicomdir.text(row.patient_name, "PN")),
        (0x00100020, "LO", dicomdir.text(row.patient_id, "LO") or f"UNKNOWN{row.patient_pk}"),
    )
    writer.add("PATIENT", keys, character_set=charset)


def study_record(writer: DicomdirWriter, row: DownloadRow, number: int, now: datetime) -> None:
    """F.5.2: Study Date and Time (1: the directory's own where the index has none), Accession
    Number (2), Study Description (2), Study Instance UID (1C), Study ID (1)."""
    study_date = row.study_date if iso_date(row.study_date) else now.strftime("%Y%m%d")
    study_time = dicomdir.text(row.study_time, "TM")
    keys, charset = _keys(
        (0x00080020, "DA", study_date),
        (0x00080030, "TM", study_time or now.strftime("%H%M%S")),
        (0x00080050, "SH", dicomdir.text(row.accession_number, "SH")),
        (0x00081030, "LO", dicomdir.text(row.study_description, "LO")),
        (0x0020000D, "UI", row.study_uid),
        (0x00200010, "SH", dicomdir.text(row.study_id, "SH") or str(number)),
    )
    writer.add("STUDY", keys, character_set=charset)


def series_record(writer: DicomdirWriter, row: DownloadRow, number: int) -> None:
    """F.5.3: Modality (1), Series Instance UID (1), Series Number (1)."""
    series_number = row.series_number if row.series_number is not None else number
    keys, charset = _keys(
        (0x00080060, "CS", dicomdir.text(row.modality, "CS") or "OT"),
        (0x0020000E, "UI", row.series_uid),
        (0x00200011, "IS", str(series_number)),
    )
    writer.add("SERIES", keys, character_set=charset)


def image_record(writer: DicomdirWriter, row: DownloadRow, path: list[str], number: int) -> None:
    """F.5.18: Instance Number (1), and the file it references."""
    instance_number = row.instance_number if row.instance_number is not None else number
    keys, _ = _keys((0x00200013, "IS", str(instance_number)))
    writer.add(
        "IMAGE",
        keys,
        file_id=path,
        sop_class_uid=row.sop_class_uid,
        sop_instance_uid=row.sop_instance_uid,
        transfer_syntax_uid=row.transfer_syntax_uid,
    )
