"""What a careless or hostile peer can do to stored data (issue 11, items 9 and 10), against
a real ``vesalius serve`` process: overwrite an instance (not by default any more), store a
data set through a presentation context of another SOP class, or index a study under a UID
that is no UID."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid

from conftest import dcmtk
from dimse_client import store
from loglines import audit_trail
from served import Served, serve
from synth import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, make_instance
from vesalius.dicom.structure import dataset_offset
from vesalius.dicom.uids import EXPLICIT_VR_LE
from vesalius.dimse.association import Association
from vesalius.dimse.contexts import build_context
from vesalius.dimse.requestor import connect


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path / "server", {"dicom.workers": 1}) as running:
        yield running


def storescu(served: Served, path: Path) -> str:
    proc = dcmtk(
        "storescu", "-v", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port), str(path)
    )
    return proc.stdout + proc.stderr


def stored_bytes(served: Served) -> list[bytes]:
    """The data sets (after the File Meta) of the stored files."""
    blobs = sorted((served.data_dir / "storage" / "blobs").rglob("*.dcm"))
    return [data_set(p) for p in blobs]


def data_set(path: Path) -> bytes:
    return path.read_bytes()[dataset_offset(path) :]


def audit_events(served: Served) -> list[dict[str, object]]:
    events = []
    for line in audit_trail(served.data_dir).splitlines():
        events.append(json.loads(line))
    return events


def test_a_peer_cannot_overwrite_a_stored_instance(served: Served, tmp_path: Path) -> None:
    """Item 9: by default the first copy stays. The same copy again is a plain success; a
    copy with other content (another patient name) is answered with warning 0xB006 (Elements
    Discarded), is not stored, and is audited."""
    uids = {"SOPInstanceUID": generate_uid(), "StudyInstanceUID": generate_uid()}
    first, second = tmp_path / "first.dcm", tmp_path / "second.dcm"
    make_instance(first, PatientName="Original^Name", **uids)
    make_instance(second, PatientName="Changed^Name", PatientID="OTHER", **uids)
    assert "Received Store Response (Success)" in storescu(served, first)
    assert "Received Store Response (Success)" in storescu(served, first)
    answer = storescu(served, second)
    assert "Warning" in answer and "Elements" in answer and "Discarded" in answer, answer
    assert stored_bytes(served) == [data_set(first)]
    outcomes = [e["outcome"] for e in audit_events(served) if e["event"] == "instance-stored"]
    assert outcomes == ["created", "kept", "discarded"]
    assert "again with other content; the stored copy is kept" in served.log_text()


@pytest.fixture
def link(served: Served) -> Iterator[Association]:
    """An association proposing only CT Image Storage."""
    association = connect(
        "127.0.0.1",
        served.dicom_port,
        calling_ae="SLOPPY",
        called_ae=served.ae_title,
        contexts=[build_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE])],
        max_pdu=16384,
        acse_timeout=10,
        network_timeout=10,
        dimse_timeout=10,
    )
    yield association
    association.release()


@pytest.mark.parametrize(
    ("data_set_class", "command_class", "status"),
    [
        (MR_IMAGE_STORAGE, CT_IMAGE_STORAGE, 0xA900),  # an MR through the CT context
        ("1.2.826.0.1.3680043.2.1143.999", CT_IMAGE_STORAGE, 0x0122),  # an unknown class
        (MR_IMAGE_STORAGE, MR_IMAGE_STORAGE, 0xA900),  # the command says MR, the context CT
        ("1.2.826.0.1.3680043.2.1143.999", "1.2.826.0.1.3680043.2.1143.999", 0x0122),
    ],
)
def test_sop_class_must_match_the_context(
    served: Served,
    link: Association,
    tmp_path: Path,
    data_set_class: str,
    command_class: str,
    status: int,
) -> None:
    """Item 10: a data set whose SOP class is not the context's abstract syntax is refused,
    0xA900, or 0x0122 when the class is not one we support; nothing is stored, and the
    association goes on."""
    path = tmp_path / "wrong.dcm"
    make_instance(path, sop_class_uid=data_set_class, Modality="MR")
    assert store(link, path, command_class)[0] == status
    good = tmp_path / "good.dcm"
    make_instance(good)
    assert store(link, good, CT_IMAGE_STORAGE) == (0x0000, "")
    assert len(stored_bytes(served)) == 1


@pytest.mark.parametrize(
    ("element", "comment"),
    [
        (DataElement(0x0020000D, "US", 1), "StudyInstanceUID is encoded as a number"),
        (DataElement(0x0020000D, "UI", "1"), "StudyInstanceUID is not a valid UID"),
    ],
)
def test_a_study_uid_that_is_no_uid_is_refused(
    served: Served, link: Association, tmp_path: Path, element: DataElement, comment: str
) -> None:
    """Item 10: a Study Instance UID sent as the number 1 (or the string "1") is not indexed
    as study "1": 0xC000 with the reason."""
    path = tmp_path / "number.dcm"
    ds = make_instance(path)
    ds[0x0020000D] = element
    ds.save_as(path, enforce_file_format=True)
    status, text = store(link, path, CT_IMAGE_STORAGE)
    assert status == 0xC000
    assert text.startswith(comment)
    assert stored_bytes(served) == []
