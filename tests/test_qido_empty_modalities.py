"""QIDO-RS leaves out Modalities in Study when no series of the study has a Modality.

PS3.18 F.2.5 would send it empty (``{"vr": "CS"}``); OHIF 3.13 reads ``.Value.length`` of it and
its study list goes blank (tests/test_viewer_edge_cases.py shows that in a browser). Absent, it
says the same thing: no modality known. A study that has a modality still gets it; DIMSE C-FIND
is unchanged (a zero-length Required Key, PS3.4 C.2.2.1.2).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydicom.uid import generate_uid

from conftest import WebServer, dcmtk
from synth import SECONDARY_CAPTURE_STORAGE, make_instance

MODALITIES_IN_STUDY = "00080061"


def _store_two_studies(web: WebServer, folder: Path) -> tuple[str, str]:
    """A CT study and a study whose only instance has no Modality; their UIDs."""
    with_ct, without = generate_uid(), generate_uid()
    make_instance(folder / "ct.dcm", StudyInstanceUID=with_ct, PatientID="EMPTY-MOD")
    make_instance(
        folder / "none.dcm",
        sop_class_uid=SECONDARY_CAPTURE_STORAGE,
        StudyInstanceUID=without,
        PatientID="EMPTY-MOD",
        Modality=None,
    )
    dcmtk("storescu", *web.dimse.address, str(folder / "ct.dcm"), str(folder / "none.dcm"))
    return with_ct, without


def test_an_empty_modalities_in_study_is_left_out(web: WebServer, tmp_path: Path) -> None:
    with_ct, without = _store_two_studies(web, tmp_path)
    for url in (f"{web.dicomweb}/studies", f"{web.dicomweb}/series", f"{web.dicomweb}/instances"):
        answer = httpx.get(url, params={"PatientID": "EMPTY-MOD"})
        assert answer.status_code == 200, answer.text
        by_study = {r["0020000D"]["Value"][0]: r for r in answer.json()}
        assert set(by_study) == {with_ct, without}, url
        assert by_study[with_ct][MODALITIES_IN_STUDY] == {"vr": "CS", "Value": ["CT"]}, url
        assert MODALITIES_IN_STUDY not in by_study[without], url
    # Asked for by name it is still left out when empty, and matching on it still works.
    named = httpx.get(
        f"{web.dicomweb}/studies",
        params={"PatientID": "EMPTY-MOD", "includefield": "ModalitiesInStudy"},
    ).json()
    assert [MODALITIES_IN_STUDY in r for r in named].count(True) == 1
    ct_only = httpx.get(f"{web.dicomweb}/studies", params={"ModalitiesInStudy": "CT"}).json()
    assert [r["0020000D"]["Value"][0] for r in ct_only] == [with_ct]


def test_the_xml_answer_leaves_it_out_too(web: WebServer, tmp_path: Path) -> None:
    _with_ct, without = _store_two_studies(web, tmp_path)
    answer = httpx.get(
        f"{web.dicomweb}/studies",
        params={"StudyInstanceUID": without},
        headers={"Accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert answer.status_code == 200
    assert b'tag="00080061"' not in answer.content
    assert b'tag="0020000D"' in answer.content
