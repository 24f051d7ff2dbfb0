"""The fast C-FIND response encoder writes exactly what pydicom writes for the same response."""

from __future__ import annotations

from typing import Any

import pytest

from vesalius.dicom.identifier import build_response, encode_response
from vesalius.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from vesalius.dimse.association import encode_data_set

RECORDS: list[tuple[dict[str, Any], list[str]]] = [
    ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3", "PatientName": "DOE^JOHN"}, []),
    (
        {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": "1.2.840.10008.1",
            "PatientID": "P1",
            "PatientName": "Buc^Jérôme",
            "StudyDate": "20240101",
            "StudyTime": None,
            "ModalitiesInStudy": ["CT", "MR"],
            "NumberOfStudyRelatedInstances": 12,
            "NumberOfStudyRelatedSeries": "2",
            "RetrieveAETitle": "VESALIUS",
            "StudyDescription": "",
        },
        ["ISO_IR 100"],
    ),
    ({"QueryRetrieveLevel": "PATIENT", "PatientName": "Wang^XiaoDong=王^小東"}, ["ISO_IR 192"]),
    ({"QueryRetrieveLevel": "PATIENT", "PatientName": "Wang^XiaoDong=王^小東"}, []),  # -> UTF-8
    ({"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": "1.2.3.4", "Rows": 512, "Columns": 512}, []),
]


@pytest.mark.parametrize("syntax", [IMPLICIT_VR_LE, EXPLICIT_VR_LE])
@pytest.mark.parametrize(("values", "requested"), RECORDS)
def test_same_bytes_as_pydicom(values: dict[str, Any], requested: list[str], syntax: str) -> None:
    fast = encode_response(values, requested, syntax)
    assert fast is not None
    assert fast == encode_data_set(build_response(values, requested), syntax)


def test_falls_back_for_what_it_does_not_write() -> None:
    iso2022 = ["", "ISO 2022 IR 87"]
    assert (
        encode_response({"PatientName": "Yamada^Tarou=山田^太郎"}, iso2022, EXPLICIT_VR_LE) is None
    )
    seq = {"ReferencedStudySequence": [{"ReferencedSOPInstanceUID": "1.2"}]}
    assert encode_response(seq, [], EXPLICIT_VR_LE) is None
    assert encode_response({"PatientID": "X"}, [], "1.2.840.10008.1.2.1.99") is None
