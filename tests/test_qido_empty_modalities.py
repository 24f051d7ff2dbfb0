"""QIDO-RS sends Modalities in Study empty when no series of the study has a Modality.

PS3.18 Table 10.6.3-3 lists it as a return attribute of a study search and F.2.5 encodes an
empty value as ``{"vr": "CS"}`` with no ``Value``. OHIF 3.13 chokes on that form; the viewer
serves OHIF a fix (viewer/ohif_fixes.py, tests/test_viewer_edge_cases.py), so the answer stays
conformant for every other client.
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


def test_an_empty_modalities_in_study_is_sent_empty(web: WebServer, tmp_path: Path) -> None:
    with_ct, without = _store_two_studies(web, tmp_path)
    for url in (f"{web.dicomweb}/studies", f"{web.dicomweb}/series", f"{web.dicomweb}/instances"):
        answer = httpx.get(url, params={"PatientID": "EMPTY-MOD"})
        assert answer.status_code == 200, answer.text
        by_study = {r["0020000D"]["Value"][0]: r for r in answer.json()}
        assert set(by_study) == {with_ct, without}, url
        assert by_study[with_ct][MODALITIES_IN_STUDY] == {"vr": "CS", "Value": ["CT"]}, url
        assert by_study[without][MODALITIES_IN_STUDY] == {"vr": "CS"}, url
    # Asked for by name it is there for both, and matching on it still works.
    named = httpx.get(
        f"{web.dicomweb}/studies",
        params={"PatientID": "EMPTY-MOD", "includefield": "ModalitiesInStudy"},
    ).json()
    assert [MODALITIES_IN_STUDY in r for r in named].count(True) == 2
    ct_only = httpx.get(f"{web.dicomweb}/studies", params={"ModalitiesInStudy": "CT"}).json()
    assert [r["0020000D"]["Value"][0] for r in ct_only] == [with_ct]


def test_the_xml_answer_sends_it_empty_too(web: WebServer, tmp_path: Path) -> None:
    _with_ct, without = _store_two_studies(web, tmp_path)
    answer = httpx.get(
        f"{web.dicomweb}/studies",
        params={"StudyInstanceUID": without},
        headers={"Accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert answer.status_code == 200
    assert b'tag="00080061"' in answer.content
    assert b'tag="0020000D"' in answer.content
