"""C-FIND SCP (PS3.4 C.4.1) against DCMTK's findscu and a pynetdicom SCU, on both backends.

The corpus of ``find_support`` is stored once per backend with storescu, then queried at every
level of the Patient Root and Study Root models; identifiers come back through findscu's
``--extract`` files and statuses from its debug log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import RunningServer, make_server, scratch_database
from find_support import (
    ALL_STUDIES,
    CT,
    EXPLICIT_VR_LE,
    FindOutcome,
    findscu,
    series_uid,
    sop_uid,
    store,
    study_uid,
    write_corpus,
)
from synth import MR_IMAGE_STORAGE, make_instance

PENDING, PENDING_WARNING, CANCEL, SUCCESS = 0xFF00, 0xFF01, 0xFE00, 0x0000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server holding the query corpus, stored with storescu; one per backend."""
    folder = tmp_path_factory.mktemp(f"find-{request.param}")
    with scratch_database(request.param, folder) as url:
        running = make_server(folder / "data", url)
        try:
            store(running, write_corpus(folder / "corpus"))
            yield running
        finally:
            running.dimse.stop(grace=2)
            running.archive.close()


def find(server: RunningServer, tmp_path: Path, *keys: str, model: str = "-S") -> FindOutcome:
    return findscu(server, tmp_path, *keys, model=model)


def assert_success(outcome: FindOutcome, count: int, status: int = PENDING) -> None:
    assert outcome.final == SUCCESS, outcome.output[-2000:]
    assert outcome.statuses[:-1] == [status] * count
    assert len(outcome.responses) == count


# --- levels and models ------------------------------------------------------------------------


def test_patient_level(archive_server: RunningServer, tmp_path: Path) -> None:
    outcome = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=PATIENT",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        "PatientBirthDate",
        model="-P",
    )
    assert_success(outcome, 7)
    doe = next(r for r in outcome.responses if r.PatientID == "DOE-1")
    assert str(doe.PatientName) == "Doe^John"
    assert doe.PatientBirthDate == "19700101"
    counts = (
        doe.NumberOfPatientRelatedStudies,
        doe.NumberOfPatientRelatedSeries,
        doe.NumberOfPatientRelatedInstances,
    )
    assert counts == (2, 3, 5)
    assert doe.QueryRetrieveLevel == "PATIENT"
    assert doe.RetrieveAETitle == archive_server.ae_title
    assert doe.InstanceAvailability == "ONLINE"


def test_patient_root_study_series_image(archive_server: RunningServer, tmp_path: Path) -> None:
    studies = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientID=DOE-1",
        "StudyInstanceUID",
        "StudyDate",
        model="-P",
    )
    assert_success(studies, 2)
    assert studies.uids("StudyInstanceUID") == {study_uid(1), study_uid(2)}
    series = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        "PatientID=DOE-1",
        f"StudyInstanceUID={study_uid(1)}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
        model="-P",
    )
    assert_success(series, 2)
    assert [(r.Modality, r.NumberOfSeriesRelatedInstances) for r in series.responses] == [
        ("CT", 3),
        ("MR", 1),
    ]
    assert {r.PatientID for r in series.responses} == {"DOE-1"}
    images = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=IMAGE",
        "PatientID=DOE-1",
        f"StudyInstanceUID={study_uid(1)}",
        f"SeriesInstanceUID={series_uid(1)}",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "(0008,3002)",
        model="-P",
    )
    assert_success(images, 3)
    assert [r.SOPInstanceUID for r in images.responses] == [sop_uid(1, n) for n in (1, 2, 3)]
    first = images.responses[0]
    assert first.AvailableTransferSyntaxUID == EXPLICIT_VR_LE
    assert first.SOPClassUID == CT
    assert first.InstanceNumber == 1
    assert (first.PatientID, first.StudyInstanceUID, first.SeriesInstanceUID) == (
        "DOE-1",
        study_uid(1),
        series_uid(1),
    )


def test_study_root_levels(archive_server: RunningServer, tmp_path: Path) -> None:
    studies = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "ModalitiesInStudy=MR",
        "PatientName",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "SOPClassesInStudy",
    )
    assert_success(studies, 2)
    by_uid = {r.StudyInstanceUID: r for r in studies.responses}
    assert set(by_uid) == {study_uid(1), study_uid(3)}
    first = by_uid[study_uid(1)]
    assert list(first.ModalitiesInStudy) == ["CT", "MR"]
    assert sorted(first.SOPClassesInStudy) == sorted([CT, MR_IMAGE_STORAGE])
    assert (first.NumberOfStudyRelatedSeries, first.NumberOfStudyRelatedInstances) == (2, 4)
    assert str(first.PatientName) == "Doe^John"
    assert "PatientID" not in first  # not a unique key in the Study Root model
    series = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study_uid(3)}",
        "Modality",
        "SeriesNumber",
    )
    assert_success(series, 1)
    assert series.responses[0].SeriesInstanceUID == series_uid(4)
    assert series.responses[0].SeriesNumber is None  # stored without one: zero-length
    images = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study_uid(3)}",
        f"SeriesInstanceUID={series_uid(4)}",
        "SOPClassUID",
    )
    assert_success(images, 2)
    assert {r.SOPClassUID for r in images.responses} == {MR_IMAGE_STORAGE}


# --- matching through DIMSE -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("PatientName=doe*", {1, 2}),
        ("StudyDate=20240105-20240110", {1, 2, 4}),
        ("StudyDate=-20231231", {3}),
        ("StudyTime=0800-0900", {2, 4}),
        (f"StudyInstanceUID={study_uid(1)}\\{study_uid(8)}", {1, 8}),
        ("StudyDescription=*50%_done", {2}),
        ("ModalitiesInStudy=CT\\MR", {1, 3, 4, 5, 6, 7, 8}),
        ("AccessionNumber=ACC?", {1, 2, 3}),
        ("ReferringPhysicianName=WELBY^MARCUS", {1, 2}),
        ("StudyDate", {1, 2, 3, 4, 5, 6, 7, 8}),
    ],
)
def test_matching_rules(
    archive_server: RunningServer, tmp_path: Path, key: str, expected: set[int]
) -> None:
    outcome = find(archive_server, tmp_path, "QueryRetrieveLevel=STUDY", key)
    assert_success(outcome, len(expected))
    assert outcome.uids("StudyInstanceUID") == {study_uid(n) for n in expected}


def test_sequence_matching(archive_server: RunningServer, tmp_path: Path) -> None:
    outcome = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study_uid(1)}",
        "RequestAttributesSequence[0].RequestedProcedureID=RP1*",
        "RequestAttributesSequence[0].ScheduledProcedureStepID",
    )
    assert_success(outcome, 1)
    (item,) = outcome.responses[0].RequestAttributesSequence
    assert (item.RequestedProcedureID, item.ScheduledProcedureStepID) == ("RP100", "SPS100")


def test_unsupported_keys_give_pending_warning(
    archive_server: RunningServer, tmp_path: Path
) -> None:
    outcome = find(
        archive_server,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={study_uid(1)}",
        "PatientAge",
        "Modality",
        "StudyDescription",
    )
    assert_success(outcome, 1, status=PENDING_WARNING)
    response = outcome.responses[0]
    assert response.StudyDescription == "CT chest"
    assert "PatientAge" in response and response.PatientAge in (None, "")
    assert "Modality" in response and response.Modality in (None, "")


# --- refused identifiers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "keys", "status", "comment"),
    [
        ("-S", ["StudyInstanceUID"], 0xA900, "QueryRetrieveLevel is missing"),
        ("-S", ["QueryRetrieveLevel=FOO"], 0xA900, "not in STUDY Root"),
        ("-S", ["QueryRetrieveLevel=PATIENT"], 0xA900, "not in STUDY Root"),
        ("-S", ["QueryRetrieveLevel=SERIES", "Modality=CT"], 0xA900, "StudyInstanceUID"),
        (
            "-S",
            ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study_uid(1)}"],
            0xA900,
            "SeriesInstanceUID",
        ),
        ("-P", ["QueryRetrieveLevel=STUDY", "StudyDate"], 0xA900, "PatientID"),
        ("-P", ["QueryRetrieveLevel=STUDY", "PatientID=DOE*"], 0xA900, "PatientID"),
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=2024"], 0xC000, "invalid date"),
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyTime=25"], 0xC000, "invalid time"),
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.*"], 0xC000, "wild cards"),
        (
            "-S",
            ["QueryRetrieveLevel=STUDY", "NumberOfStudyRelatedInstances=x"],
            0xC000,
            "not an integer",
        ),
    ],
)
def test_refused_identifiers(
    archive_server: RunningServer,
    tmp_path: Path,
    model: str,
    keys: list[str],
    status: int,
    comment: str,
) -> None:
    outcome = find(archive_server, tmp_path, *keys, model=model)
    assert outcome.statuses == [status], outcome.output[-2000:]
    assert comment in outcome.error_comment
    assert outcome.responses == []


# --- C-CANCEL, limits, extended negotiation (own servers) -------------------------------------


def many_instances(folder: Path, count: int) -> list[Path]:
    study, series = f"{study_uid(99)}", f"{series_uid(99)}"
    paths = []
    for n in range(1, count + 1):
        path = folder / f"many-{n:04d}.dcm"
        make_instance(
            path,
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            SOPInstanceUID=sop_uid(99, n),
            InstanceNumber=n,
        )
        paths.append(path)
    return paths


def image_keys() -> list[str]:
    return [
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study_uid(99)}",
        f"SeriesInstanceUID={series_uid(99)}",
        "SOPInstanceUID",
    ]


def test_cancel_stops_a_running_query(tmp_path: Path, database_url: str) -> None:
    """A C-CANCEL (PS3.7 9.3.2.3) ends a C-FIND of 200 matches early with 0xFE00.

    The pynetdicom SCU sends the C-CANCEL right behind the C-FIND request, so the test does not
    depend on how fast the client reads; the server looks for it between matches. (DCMTK's
    ``findscu --cancel 1`` behaves the same, but when its C-CANCEL arrives depends on process
    scheduling.)
    """
    running = make_server(tmp_path / "data", database_url)
    try:
        count = 200
        store(running, many_instances(tmp_path / "files", count))
        ae = AE(ae_title="PYFIND")
        model = StudyRootQueryRetrieveInformationModelFind
        ae.add_requested_context(model)
        assoc = ae.associate("127.0.0.1", running.port, ae_title=running.ae_title)
        assert assoc.is_established
        send = assoc.dimse.send_msg

        def send_then_cancel(primitive: Any, context_id: int) -> None:
            send(primitive, context_id)
            if isinstance(primitive, C_FIND) and primitive.Identifier is not None:
                assoc.send_c_cancel(primitive.MessageID, context_id)

        assoc.dimse.send_msg = send_then_cancel
        query = identifier(
            QueryRetrieveLevel="IMAGE",
            StudyInstanceUID=study_uid(99),
            SeriesInstanceUID=series_uid(99),
            SOPInstanceUID="",
        )
        try:
            statuses = [int(status.Status) for status, _ in assoc.send_c_find(query, model)]
        finally:
            assoc.release()
        assert statuses[-1] == CANCEL
        assert len(statuses) - 1 < count
        assert set(statuses[:-1]) <= {PENDING}
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def test_stale_cancel_does_not_cancel_the_next_query(archive_server: RunningServer) -> None:
    """A C-CANCEL for a finished C-FIND must not cancel a later one reusing its Message ID."""
    model = StudyRootQueryRetrieveInformationModelFind
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", archive_server.port, ae_title=archive_server.ae_title)
    assert assoc.is_established
    query = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="")
    try:
        first = [int(s.Status) for s, _ in assoc.send_c_find(query, model, msg_id=5)]
        assoc.send_c_cancel(5, query_model=model)
        second = [int(s.Status) for s, _ in assoc.send_c_find(query, model, msg_id=5)]
    finally:
        assoc.release()
    expected = [PENDING] * len(ALL_STUDIES) + [SUCCESS]
    assert first == expected
    assert second == expected


def test_max_results_caps_matches(tmp_path: Path, database_url: str) -> None:
    running = make_server(tmp_path / "data", database_url, **{"query.max_results": 2})
    try:
        store(running, many_instances(tmp_path / "files", 3))
        outcome = findscu(running, tmp_path, *image_keys())
        assert_success(outcome, 2)
        assert [r.SOPInstanceUID for r in outcome.responses] == [sop_uid(99, 1), sop_uid(99, 2)]
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def pynetdicom_find(
    server: RunningServer, identifier: Dataset, options: bytes | None, sop_class: Any
) -> tuple[bytes | None, list[tuple[int, Dataset | None]]]:
    """Query with a pynetdicom SCU proposing ``options`` (PS3.4 C.5.1.1.2) for ``sop_class``;
    returns the accepted options and ``(status, identifier)`` of every response."""
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(sop_class)
    ext: list[Any] = []
    if options is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = sop_class
        item.service_class_application_information = options
        ext.append(item)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title, ext_neg=ext)
    assert assoc.is_established
    try:
        accepted = assoc.acceptor.sop_class_extended.get(sop_class)
        responses = [
            (int(status.Status), found)
            for status, found in assoc.send_c_find(identifier, sop_class)
        ]
    finally:
        assoc.release()
    return accepted, responses


def identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_extended_negotiation(archive_server: RunningServer) -> None:
    """Relational queries, combined date-time and fuzzy person-name matching (PS3.4 C.5.1.1.2)
    are accepted when proposed and change matching only then."""
    study_root = StudyRootQueryRetrieveInformationModelFind
    relational = identifier(QueryRetrieveLevel="SERIES", Modality="MR", SeriesInstanceUID="")
    accepted, responses = pynetdicom_find(archive_server, relational, None, study_root)
    assert accepted is None
    assert [s for s, _ in responses] == [0xA900]
    accepted, responses = pynetdicom_find(
        archive_server, relational, b"\x01\x01\x01\x01", study_root
    )
    assert accepted == b"\x01\x01\x01"
    assert [s for s, _ in responses] == [PENDING, PENDING, SUCCESS]
    assert {str(ds.SeriesInstanceUID) for _, ds in responses if ds} == {
        series_uid(2),
        series_uid(4),
    }

    ranges = identifier(
        QueryRetrieveLevel="STUDY",
        StudyDate="20240105-20240107",
        StudyTime="1000-0900",
        StudyInstanceUID="",
    )
    accepted, responses = pynetdicom_find(archive_server, ranges, b"\x00\x01", study_root)
    assert accepted == b"\x00\x01"
    assert {str(ds.StudyInstanceUID) for _, ds in responses if ds} == {study_uid(1), study_uid(2)}
    _, responses = pynetdicom_find(archive_server, ranges, None, study_root)
    assert [s for s, _ in responses] == [SUCCESS]

    fuzzy = identifier(QueryRetrieveLevel="PATIENT", PatientName="jan", PatientID="")
    patient_root = PatientRootQueryRetrieveInformationModelFind
    accepted, responses = pynetdicom_find(archive_server, fuzzy, b"\x00\x00\x01", patient_root)
    assert accepted == b"\x00\x00\x01"
    assert [str(ds.PatientID) for _, ds in responses if ds] == ["SMITH-2"]
    _, responses = pynetdicom_find(archive_server, fuzzy, None, patient_root)
    assert [s for s, _ in responses] == [SUCCESS]


def test_universal_query_over_everything(archive_server: RunningServer, tmp_path: Path) -> None:
    """Only the level: every study, each with its unique key and the service keys."""
    outcome = find(archive_server, tmp_path, "QueryRetrieveLevel=STUDY")
    assert_success(outcome, len(ALL_STUDIES))
    assert outcome.uids("StudyInstanceUID") == ALL_STUDIES
    assert {r.InstanceAvailability for r in outcome.responses} == {"ONLINE"}
