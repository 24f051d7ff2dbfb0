"""The one-pass ingest scan (``dicom/scan.py``) against the pydicom path it replaces.

For every Part 10 file bundled with pydicom, each of them re-encoded in Implicit VR Little
Endian, and synthetic files in the character sets the scan decodes itself, the scan must give
exactly what ``read_instance`` + ``check_structure`` + ``metadata_json`` give (index values,
pixel data element, DICOM JSON), or decline (``None``) so that ingest takes the pydicom path.
Truncated and malformed files are always declined: their errors come from the pydicom path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from synth import make_instance
from vesalius.dicom.header import read_instance
from vesalius.dicom.metadata import decode, encode
from vesalius.dicom.scan import scan_instance
from vesalius.dicom.structure import find_pixel_data
from vesalius.services.metadata import metadata_json

BUNDLED = Path(pydicom.data.__file__).parent / "test_files"  # no download attempts


def _pydicom_path(path: Path) -> tuple[object, object, dict[str, object]] | None:
    try:
        header, dataset = read_instance(path)
        pixel = find_pixel_data(path, header.transfer_syntax_uid)
    except Exception:
        return None
    document = json.loads(decode(metadata_json(header, dataset, pixel)))
    return header, pixel, document


def _assert_same(path: Path) -> bool:
    """True when the scan took the file (and agreed), False when it declined."""
    scan = scan_instance(path)
    reference = _pydicom_path(path)
    if reference is None:
        assert scan is None, f"{path.name}: scanned a file pydicom's path rejects"
        return False
    if scan is None:
        return False
    header, pixel, document = reference
    assert scan.header == header, path.name
    assert scan.pixel == pixel, path.name
    # Through the stored form: what ingest keeps in the index.
    assert json.loads(decode(encode(scan.document))) == document, path.name
    assert list(scan.document) == list(document), f"{path.name}: members out of tag order"
    return True


def _bundled() -> list[Path]:
    return sorted(p for p in BUNDLED.rglob("*") if p.is_file())


def test_bundled_files_scan_as_pydicom_reads_them() -> None:
    taken = [path.name for path in _bundled() if _assert_same(path)]
    # Explicit VR little endian, native and encapsulated, with sequences and private tags:
    # most of pydicom's files. Big endian, deflated and ISO 2022 ones are declined.
    assert len(taken) >= 100
    assert {"CT_small.dcm", "JPEG2000.dcm", "test-SR.dcm", "waveform_ecg.dcm"} <= set(taken)


def test_implicit_vr_files_scan_as_pydicom_reads_them(tmp_path: Path) -> None:
    taken = 0
    for source in _bundled():
        try:
            ds = dcmread(source)
            if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
                continue
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            target = tmp_path / source.name
            ds.save_as(target, implicit_vr=True, little_endian=True, enforce_file_format=True)
        except Exception:
            continue
        taken += _assert_same(target)
    # Private elements get their VR from pydicom's private dictionaries, US or SS from the
    # Pixel Representation, as pydicom does.
    assert taken >= 10


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        (None, "Doe^John"),
        ("ISO_IR 100", "Buc^Jérôme"),
        ("ISO_IR 192", "Wang^XiaoDong=王^小東="),
        ("ISO_IR 144", "Иванов^Пётр"),
        ("GB18030", "Wang^XiaoDong=王^小东="),
    ],
)
def test_character_sets(tmp_path: Path, charset: str | None, name: str) -> None:
    path = tmp_path / "x.dcm"
    make_instance(
        path,
        SpecificCharacterSet=charset,
        PatientName=name,
        StudyDescription=" padded text \\ second ",
        InstitutionName="Hôpital" if charset else "Hospital",
        ReferencedStudySequence=[{"ReferencedSOPInstanceUID": "1.2.3", "StudyDescription": "x"}],
        RequestAttributesSequence=[
            {"RequestedProcedureID": "RP 1", "ScheduledProcedureStepID": "S"}
        ],
    )
    assert _assert_same(path)
    scan = scan_instance(path)
    assert scan is not None
    assert scan.header.patient_name == name.rstrip("=")
    assert scan.header.requested_procedure_id == "RP 1"


def test_code_extensions_are_left_to_pydicom(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    make_instance(
        path,
        SpecificCharacterSet=["ISO 2022 IR 6", "ISO 2022 IR 87"],
        PatientName="Yamada^Tarou=山田^太郎",
    )
    assert scan_instance(path) is None
    assert _pydicom_path(path) is not None


def test_values_pydicom_converts(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    make_instance(
        path,
        ImagePositionPatient=["-125.5", "0", "1e2"],
        WindowCenter="40",
        SeriesNumber="0012",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        RetrieveAETitle=" PACS ",
        PixelSpacing=[0.5, 0.5],
        FrameIncrementPointer=0x00181063,
        ReferringPhysicianName="",
        StudyDate="2024.01.31",
        StudyTime="10:30",
        LargestImagePixelValue=4095,
    )
    assert _assert_same(path)
    scan = scan_instance(path)
    assert scan is not None
    assert scan.document["00200032"]["Value"] == [-125.5, 0.0, 100.0]
    assert scan.document["00280009"]["Value"] == ["00181063"]
    assert scan.header.series_number == 12
    assert scan.header.study_date == "20240131"
    assert scan.header.study_time == "103000"


def test_truncated_and_malformed_files_are_declined(tmp_path: Path) -> None:
    good = tmp_path / "good.dcm"
    make_instance(good, rows=64, columns=64)
    data = good.read_bytes()
    for n, cut in enumerate((len(data) - 1, len(data) - 4000, 400, 140, 100, 0)):
        path = tmp_path / f"cut{n}.dcm"
        path.write_bytes(data[:cut])
        assert scan_instance(path) is None, cut
    missing_uid = tmp_path / "nouid.dcm"
    make_instance(missing_uid, SeriesInstanceUID=None)
    assert scan_instance(missing_uid) is None
    bad_uid = tmp_path / "baduid.dcm"
    make_instance(bad_uid, StudyInstanceUID="1.2.abc")
    assert scan_instance(bad_uid) is None
    garbage = tmp_path / "garbage.dcm"
    shutil.copyfile(good, garbage)
    with open(garbage, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff" * 64)
    assert scan_instance(garbage) is None or _assert_same(garbage)
