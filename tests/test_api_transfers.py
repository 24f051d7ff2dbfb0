"""The transfers part of the REST API against real peers, on SQLite and PostgreSQL: send a study
by C-STORE to DCMTK's storescp and by STOW-RS to a second Vesalius; query that Vesalius and
DCMTK's dcmqrscp (C-FIND) and retrieve from both by C-MOVE and by C-GET, as jobs."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.servers import Orthanc
from lxml import etree
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from conftest import free_port, make_server, running_http, wait_until
from synth import make_instance
from transfers_support import (
    SYSTEM,
    Site,
    Study,
    dataset_bytes,
    make_study,
    site,
    stored_datasets,
    wait_job,
)
from vesalius.commands import operator
from vesalius.dicomweb import sender as stow
from vesalius.dimse.scu.retrieve import (
    COMMON_IMAGE_CLASSES,
    COMMON_OTHER_CLASSES,
    Role,
    get_contexts,
)
from vesalius.errors import ForbiddenError
from vesalius.identity import Identity
from vesalius.index.audit_trail import AuditFilter, search
from vesalius.services.audit_messages import validator
from vesalius.services.jobs import JobError, JobFailed
from vesalius.services.peers import Peer
from vesalius.services.retrieve import InstanceLocation, RetrieveKeys

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def peers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    with site(request.param, tmp_path_factory.mktemp(f"transfers-{request.param}")) as running:
        yield running


@pytest.fixture
def api(peers: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=peers.url + "/api/v1", timeout=60) as client:
        yield client


def test_send_a_study_to_storescp_by_c_store(peers: Site, api: httpx.Client) -> None:
    study = peers.local_study
    answer = api.post(f"/studies/{study.uid}/send", json={"peer": "store"})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["kind"] == "send" and job["payload"]["peer"] == "store"
    ended = wait_job(peers.ours, job["id"])
    assert ended.state == "succeeded", ended.message
    assert ended.message == "4 of 4 sent to STORE"
    got = {dataset_bytes(p) for p in peers.storescp_dir.iterdir() if p.is_file()}
    assert {dataset_bytes(p) for p in study.files} <= got  # bit-exact


def test_send_a_series_by_stow_rs_to_a_second_vesalius(peers: Site, api: httpx.Client) -> None:
    study = peers.local_study
    first, second = study.series
    answer = api.post(
        f"/studies/{study.uid}/send",
        json={"peer": "theirs", "series_uids": [first], "via": "dicomweb"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["kind"] == "send-dicomweb"
    ended = wait_job(peers.ours, answer.json()["id"])
    assert ended.state == "succeeded", ended.message
    assert ended.message.startswith("2 of 2 sent to http://127.0.0.1:")
    held = stored_datasets(peers.theirs)
    assert {dataset_bytes(p) for p in study.series[first]} <= held
    assert not {dataset_bytes(p) for p in study.series[second]} & held


def test_send_refusals(peers: Site, api: httpx.Client) -> None:
    uid = peers.local_study.uid
    cases = [
        (f"/studies/{uid}/send", {"peer": "nobody"}, 404, "no known peer"),
        (f"/studies/{uid}/send", {"peer": "store", "via": "dicomweb"}, 400, "no DICOMweb URL"),
        ("/studies/1.2.3.999/send", {"peer": "store"}, 404, "nothing stored matches"),
        ("/studies/not-a-uid/send", {"peer": "store"}, 400, "not a valid UID"),
        (f"/studies/{uid}/send", {"peer": "store", "series_uids": ["x"]}, 400, "not a valid"),
        (f"/studies/{uid}/send", {"peer": "store", "via": "ftp"}, 422, "via"),
    ]
    for path, body, status, words in cases:
        answer = api.post(path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert words in answer.json()["detail"], answer.text


def test_query_a_second_vesalius_and_dcmqrscp(peers: Site, api: httpx.Client) -> None:
    moved, gotten = peers.remote_studies
    answer = api.post("/peers/theirs/query", json={"keys": {"PatientName": "REMOTE*"}})
    assert answer.status_code == 200, answer.text
    items = {item["StudyInstanceUID"]: item for item in answer.json()["items"]}
    assert set(items) == {moved.uid, gotten.uid} and answer.json()["truncated"] is False
    assert items[moved.uid]["PatientName"] == "Remote^Moved"
    assert items[moved.uid]["NumberOfStudyRelatedInstances"] == 4
    assert items[moved.uid]["ModalitiesInStudy"] == "CT"

    series = api.post(
        "/peers/theirs/query",
        json={"level": "series", "keys": {"StudyInstanceUID": moved.uid}},
    ).json()["items"]
    assert {s["SeriesInstanceUID"] for s in series} == set(moved.series)
    assert sorted(s["SeriesNumber"] for s in series) == ["1", "2"] or sorted(
        s["SeriesNumber"] for s in series
    ) == [1, 2]

    qr = api.post("/peers/qrscp/query", json={"keys": {"PatientID": "QUERYRITA"}})
    assert qr.status_code == 200, qr.text
    assert [i["StudyInstanceUID"] for i in qr.json()["items"]] == [peers.qr_study.uid]

    nothing = api.post("/peers/theirs/query", json={"keys": {"PatientName": "NOBODY*"}})
    assert nothing.json()["items"] == []


@pytest.mark.parametrize("peers", ["sqlite"], indirect=True)  # the backend plays no part
def test_a_remote_query_is_audited_as_the_standard_query_message(
    peers: Site, api: httpx.Client
) -> None:
    """PS3.15 A.5.3.12: EventID (110112, DCM, "Query"), action Execute; this archive issues
    the query (Source Role ID), the peer answers it (Destination Role ID), the user asked for
    it; the Study Root FIND SOP Class, and the keys as a data set in ParticipantObjectQuery.
    A query the peer cannot answer is the same message, with outcome 8."""
    moved = peers.remote_studies[0]
    asked = api.post(
        "/peers/theirs/query", json={"keys": {"PatientName": "REMOTE*", "StudyDate": ""}}
    )
    assert asked.status_code == 200, asked.text
    assert api.post("/peers/down/query", json={"keys": {"PatientID": "X"}}).status_code == 502
    sink = peers.ours.archive.audit.sink
    assert sink is not None and sink.flush()
    with peers.ours.catalog.read() as conn:
        records = [r for _, r in search(conn, AuditFilter(limit=0)) if r.kind == "remote-query"]
    failed, found = records[0], next(r for r in records if r.details.get("peer") == "theirs")
    schema = validator()
    for record in (found, failed):
        assert record.message == "Query"
        message = etree.fromstring(record.xml.encode())
        assert schema.validate(message), schema.error_log
        event = message.find("EventIdentification")
        assert event.get("EventActionCode") == "E"
        assert event.find("EventID").get("csd-code") == "110112"
        roles = {
            p.find("RoleIDCode").get("csd-code"): p
            for p in message.findall("ActiveParticipant")
            if p.find("RoleIDCode") is not None
        }
        assert set(roles) == {"110153", "110152"}  # Source, Destination Role ID
        assert roles["110153"].get("UserID") == "OURS"
        assert roles["110152"].get("NetworkAccessPointID") == "127.0.0.1"
        assert roles["110152"].get("UserIsRequestor") == "false"
        requestor = message.find("ActiveParticipant[@UserIsRequestor='true']")
        assert requestor.get("UserID") == "anonymous"
        query = message.find("ParticipantObjectIdentification")
        assert query.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
        assert query.find("ParticipantObjectIDTypeCode").get("csd-code") == "110181"
    assert message_of(found).get("UserID") == "THEIRS"
    keys = read_dataset(
        DicomBytesIO(
            base64.b64decode(
                etree.fromstring(found.xml.encode()).findtext(".//ParticipantObjectQuery")
            )
        ),
        is_implicit_VR=False,
        is_little_endian=True,
    )
    assert (keys.QueryRetrieveLevel, keys.PatientName) == ("STUDY", "REMOTE*")
    assert found.outcome == "success" and moved.uid in found.details["study_uids"]
    assert failed.outcome == "failure" and 'EventOutcomeIndicator="8"' in failed.xml
    assert message_of(failed).get("UserID") == "DOWN"


def message_of(record: Any) -> Any:
    """The peer's participant (Destination Role ID) in a record's message."""
    for participant in etree.fromstring(record.xml.encode()).findall("ActiveParticipant"):
        code = participant.find("RoleIDCode")
        if code is not None and code.get("csd-code") == "110152":
            return participant
    raise AssertionError("no Destination Role ID participant")


def test_query_refusals(peers: Site, api: httpx.Client) -> None:
    cases = [
        ("/peers/nobody/query", {}, 404, "no known peer"),
        ("/peers/theirs/query", {"level": "series"}, 400, "needs StudyInstanceUID"),
        ("/peers/theirs/query", {"keys": {"NoSuchKeyword": "x"}}, 400, "unknown keyword"),
        ("/peers/theirs/query", {"keys": {"Patient Name": "x"}}, 400, "DICOM keyword"),
        ("/peers/theirs/query", {"keys": {"QueryRetrieveLevel": "IMAGE"}}, 400, "not a matching"),
        ("/peers/theirs/query", {"keys": {"Rows": "99999999"}}, 400, "cannot be encoded"),
        ("/peers/theirs/query", {"level": "image"}, 422, "level"),
        ("/peers/down/query", {}, 502, "no association with DOWN"),
    ]
    for path, body, status, words in cases:
        answer = api.post(path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert words in answer.json()["detail"], answer.text


@pytest.mark.parametrize("method", ["move", "get"])
def test_retrieve_from_a_second_vesalius(peers: Site, api: httpx.Client, method: str) -> None:
    study = peers.remote_studies[0 if method == "move" else 1]
    answer = api.post("/peers/theirs/retrieve", json={"study_uid": study.uid, "method": method})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["kind"] == "retrieve" and job["payload"]["method"] == method
    ended = wait_job(peers.ours, job["id"])
    service = "C-MOVE" if method == "move" else "C-GET"
    count = len(study.files)
    assert ended.state == "succeeded", ended.message
    assert ended.message == f"{count} instance(s) retrieved by {service} from THEIRS"
    assert (ended.done, ended.total) == (count, count) or method == "get"
    assert {dataset_bytes(p) for p in study.files} <= stored_datasets(peers.ours)


@pytest.mark.parametrize("method", ["move", "get"])
def test_retrieve_from_dcmqrscp(peers: Site, api: httpx.Client, method: str) -> None:
    study = peers.qr_study
    answer = api.post("/peers/qrscp/retrieve", json={"study_uid": study.uid, "method": method})
    assert answer.status_code == 202, answer.text
    ended = wait_job(peers.ours, answer.json()["id"])
    assert ended.state == "succeeded", ended.message
    assert f"{len(study.files)} instance(s) retrieved" in ended.message
    assert {dataset_bytes(p) for p in study.files} <= stored_datasets(peers.ours)


#: Encapsulated CDA Storage (PS3.4 B.5): a class outside the common set a C-GET proposes
#: without knowing better.
ENCAPSULATED_CDA = "1.2.840.10008.5.1.4.1.1.104.2"


def make_document(path: Path, study: Study) -> Path:
    """An Encapsulated CDA instance (PS3.3 A.45.2) in ``study``, made with pydicom."""
    first = dcmread(study.files[0])
    ds = make_instance(
        path,
        sop_class_uid=ENCAPSULATED_CDA,
        StudyInstanceUID=study.uid,
        SeriesNumber=9,
        InstanceNumber=1,
        PatientName=first.PatientName,
        PatientID=first.PatientID,
        Modality="DOC",
    )
    for keyword in (
        "PixelData",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    ):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = "Report"
    ds.MIMETypeOfEncapsulatedDocument = "text/xml"
    ds.EncapsulatedDocument = b"<ClinicalDocument/>\n"
    ds.save_as(path, enforce_file_format=True)
    study.series.setdefault(ds.SeriesInstanceUID, []).append(path)
    return path


def test_c_get_proposes_the_classes_the_study_needs() -> None:
    """The classes learnt from the peer come first, each with SCP role selection (PS3.7
    D.3.3.4), and the common ones fill the room left, 128 contexts at most."""
    contexts, roles = get_contexts("study", needed=[ENCAPSULATED_CDA])
    assert contexts[1].abstract_syntax == ENCAPSULATED_CDA
    assert len(contexts) <= 128 and roles[0] == Role(ENCAPSULATED_CDA, False, True)
    assert ENCAPSULATED_CDA not in COMMON_IMAGE_CLASSES + COMMON_OTHER_CLASSES
    assert {r.sop_class_uid for r in roles} == {c.abstract_syntax for c in contexts[1:]}
    many = [f"1.2.3.{n}" for n in range(200)]
    contexts, roles = get_contexts("study", needed=many)
    assert len(contexts) == 128
    assert [c.abstract_syntax for c in contexts[1:]] == many[:127]
    assert len(roles) == 127


@pytest.mark.parametrize("peers", ["sqlite"], indirect=True)  # the backend plays no part
@pytest.mark.parametrize("peer", ["theirs", "orthanc"])
def test_c_get_of_a_study_with_a_class_outside_the_common_set(
    peers: Site, api: httpx.Client, tmp_path: Path, peer: str
) -> None:
    """A second Vesalius and Orthanc say which classes a study holds (SOP Classes in Study,
    PS3.4 C.6.2.1.2): the C-GET proposes them, and the Encapsulated CDA document comes back
    with the CT images. (dcmqrscp says neither that nor its instances' SOP Class UIDs: its
    C-GET takes the common set, ``test_retrieve_from_dcmqrscp``.)"""
    study = make_study(tmp_path / "s", f"Mixed^{peer.title()}", series=1, per_series=2)
    make_document(tmp_path / "s" / "cda.dcm", study)
    with contextlib.ExitStack() as stack:
        if peer == "theirs":
            for path in study.files:
                peers.theirs.archive.ingest.ingest_copy(path, SYSTEM)
        else:
            reason = Orthanc.unavailable()
            if reason:
                pytest.fail(reason)
            orthanc = stack.enter_context(Orthanc(tmp_path / "orthanc"))
            for path in study.files:
                answer = httpx.post(
                    f"http://127.0.0.1:{orthanc.http_port}/instances", content=path.read_bytes()
                )
                assert answer.status_code == 200, answer.text
            entry = Peer("orthanc", "ORTHANC", "127.0.0.1", orthanc.dicom_port)
            peers.ours.archive.peers.save(entry)
            stack.callback(peers.ours.archive.peers.remove, "orthanc")
        answer = api.post(f"/peers/{peer}/retrieve", json={"study_uid": study.uid, "method": "get"})
        assert answer.status_code == 202, answer.text
        ended = wait_job(peers.ours, answer.json()["id"])
        assert ended.state == "succeeded", ended.message
        assert ended.message.startswith(f"{len(study.files)} instance(s) retrieved by C-GET")
        assert {dataset_bytes(p) for p in study.files} <= stored_datasets(peers.ours)


def test_retrieve_refusals_and_a_peer_that_does_not_know_us(
    peers: Site, api: httpx.Client, tmp_path: Path
) -> None:
    cases = [
        ("/peers/nobody/retrieve", {"study_uid": "1.2.3"}, 404, "no known peer"),
        ("/peers/theirs/retrieve", {"study_uid": "x"}, 400, "not a valid UID"),
        ("/peers/theirs/retrieve", {"study_uid": "1.2", "series_uid": "y.1"}, 400, "valid UID"),
        ("/peers/theirs/retrieve", {"study_uid": "1.2", "method": "push"}, 422, "method"),
    ]
    for path, body, status, words in cases:
        answer = api.post(path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert words in answer.json()["detail"], answer.text
    # THEIRS forgets OURS: a C-MOVE to us is refused (Move Destination Unknown), at once
    peers.theirs.archive.peers.remove("ours")
    try:
        study = peers.remote_studies[0]
        answer = api.post("/peers/theirs/retrieve", json={"study_uid": study.uid})
        ended = wait_job(peers.ours, answer.json()["id"])
        assert ended.state == "failed"
        assert "does not know our AE title OURS" in ended.message
    finally:
        peers.theirs.archive.peers.save(Peer("ours", "OURS", "127.0.0.1", peers.ours.port))


def test_orthanc_as_a_peer_stow_rs_find_and_move(
    peers: Site, api: httpx.Client, tmp_path: Path
) -> None:
    """Orthanc with its DICOMweb plugin: a send by STOW-RS lands there; a C-FIND finds it; a
    C-MOVE to us brings back a study Orthanc got otherwise."""
    reason = Orthanc.unavailable()
    if reason:
        pytest.fail(reason)
    with Orthanc(tmp_path / "orthanc", destinations={"OURS": peers.ours.port}) as orthanc:
        ours = peers.ours.archive.peers
        ours.save(
            Peer(
                "orthanc",
                "ORTHANC",
                "127.0.0.1",
                orthanc.dicom_port,
                dicomweb_url=f"http://127.0.0.1:{orthanc.http_port}/dicom-web",
            )
        )
        try:
            study = peers.local_study
            sent = api.post(
                f"/studies/{study.uid}/send", json={"peer": "orthanc", "via": "dicomweb"}
            )
            ended = wait_job(peers.ours, sent.json()["id"])
            assert ended.state == "succeeded", ended.message
            assert orthanc.instance_count() == len(study.files)

            found = api.post("/peers/orthanc/query", json={"keys": {"PatientID": "LOCALSENT"}})
            assert found.status_code == 200, found.text
            assert [i["StudyInstanceUID"] for i in found.json()["items"]] == [study.uid]

            other = make_study(tmp_path / "o", "Orthanc^Only", series=1)
            for path in other.files:
                answer = httpx.post(
                    f"http://127.0.0.1:{orthanc.http_port}/instances", content=path.read_bytes()
                )
                assert answer.status_code == 200, answer.text
            moved = api.post("/peers/orthanc/retrieve", json={"study_uid": other.uid})
            ended = wait_job(peers.ours, moved.json()["id"])
            assert ended.state == "succeeded", ended.message
            assert ended.message == "2 instance(s) retrieved by C-MOVE from ORTHANC"
            assert {dataset_bytes(p) for p in other.files} <= stored_datasets(peers.ours)
        finally:
            ours.remove("orthanc")


@pytest.mark.parametrize("peers", ["sqlite"], indirect=True)  # the backend plays no part
def test_stow_rs_to_peers_that_need_a_login(peers: Site, api: httpx.Client, tmp_path: Path) -> None:
    """A second Vesalius that requires authentication takes a bearer token (an API token of
    its own); Orthanc with a registered user takes HTTP Basic. The login is stored with the
    peer and is write-only: GET /peers and the effective settings never show the secret."""
    study = peers.local_study
    locked = make_server(
        tmp_path / "locked",
        f"sqlite:///{tmp_path / 'locked.sqlite'}",
        **{"auth.required": "true", "dicom.ae_title": "LOCKED"},
    )
    try:
        with running_http(locked.archive, locked.settings) as locked_url:
            accounts = locked.archive.accounts
            accounts.add_user("sender", "a long password", frozenset({"technologist"}), operator())
            token = str(accounts.create_token("sender", operator(), frozenset())[1])
            peer = {
                "ae_title": "LOCKED",
                "host": "127.0.0.1",
                "port": locked.port,
                "dicomweb_url": f"{locked_url}/dicom-web",
            }

            def send() -> Any:
                sent = api.post(
                    f"/studies/{study.uid}/send", json={"peer": "locked", "via": "dicomweb"}
                )
                assert sent.status_code == 202, sent.text
                return wait_job(peers.ours, sent.json()["id"])

            assert api.put("/peers/locked", json=peer).status_code == 201
            ended = send()  # no login yet
            assert ended.state == "failed"
            assert (
                "HTTP 401" in ended.message and "check the peer's DICOMweb login" in ended.message
            )

            login = {"dicomweb_auth": "bearer", "dicomweb_secret": token}
            assert api.put("/peers/locked", json={**peer, **login}).status_code == 200
            shown = api.get("/peers/locked").json()
            assert shown["dicomweb_auth"] == "bearer" and shown["dicomweb_secret_set"] is True
            for listing in ("/peers", "/peers/locked", "/settings"):
                assert token not in api.get(listing).text
            ended = send()
            assert ended.state == "succeeded", ended.message
            assert {dataset_bytes(p) for p in study.files} <= stored_datasets(locked)

            # a PUT without the secret keeps it (a form cannot show it back)
            assert api.put("/peers/locked", json={**peer, "port": 1}).status_code == 200
            assert api.get("/peers/locked").json()["dicomweb_secret_set"] is True
            assert send().state == "succeeded"
            # a wrong token: refused, the job fails at once
            wrong = {**peer, "dicomweb_auth": "bearer", "dicomweb_secret": token + "x"}
            assert api.put("/peers/locked", json=wrong).status_code == 200
            ended = send()
            assert ended.state == "failed" and "HTTP 401" in ended.message
            bad = api.put("/peers/locked", json={**peer, "dicomweb_auth": "basic"})
            assert bad.status_code == 422
            assert {e["location"] for e in bad.json()["errors"]} >= {
                "body.dicomweb_user",
                "body.dicomweb_secret",
            }
    finally:
        api.delete("/peers/locked")
        locked.dimse.stop(grace=2)
        locked.archive.close()

    reason = Orthanc.unavailable()
    if reason:
        pytest.fail(reason)
    with Orthanc(tmp_path / "orthanc", users={"alice": "alice's secret"}) as orthanc:
        web = f"127.0.0.1:{orthanc.http_port}/dicom-web"
        # a user and password in the URL (the old way) become the peer's Basic login
        peer = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}
        put = api.put("/peers/orthanc", json={**peer, "dicomweb_url": f"http://alice:wrong@{web}"})
        assert put.status_code == 201, put.text
        shown = put.json()
        assert shown["dicomweb_url"] == f"http://{web}"
        assert (shown["dicomweb_auth"], shown["dicomweb_user"]) == ("basic", "alice")
        assert "wrong" not in api.get("/peers").text
        try:
            sent = api.post(
                f"/studies/{study.uid}/send", json={"peer": "orthanc", "via": "dicomweb"}
            )
            ended = wait_job(peers.ours, sent.json()["id"])
            assert ended.state == "failed" and "HTTP 401" in ended.message
            assert orthanc.instance_count() == 0

            right = {
                "dicomweb_auth": "basic",
                "dicomweb_user": "alice",
                "dicomweb_secret": "alice's secret",
            }
            put = api.put("/peers/orthanc", json={**peer, "dicomweb_url": f"http://{web}", **right})
            assert put.status_code == 200, put.text
            sent = api.post(
                f"/studies/{study.uid}/send", json={"peer": "orthanc", "via": "dicomweb"}
            )
            ended = wait_job(peers.ours, sent.json()["id"])
            assert ended.state == "succeeded", ended.message
            assert orthanc.instance_count() == len(study.files)
        finally:
            api.delete("/peers/orthanc")


class HoldingGetSCP:
    """A pynetdicom Q/R SCP whose C-GET sends one instance, then holds until the requestor
    sends C-CANCEL (PS3.7 9.3.3.3), which is answered with Cancel (0xFE00)."""

    def __init__(self, port: int, first: Path) -> None:
        self.first = first
        ae = AE(ae_title="HOLDING")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_GET, self._get)]
        )

    def _get(self, event: Any) -> Iterator[Any]:
        yield 3
        yield 0xFF00, dcmread(self.first)
        deadline = time.monotonic() + 60
        while not event.is_cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield 0xC000, None


def test_cancelling_a_retrieve_sends_c_cancel(peers: Site, api: httpx.Client) -> None:
    port = free_port()
    study = peers.remote_studies[0]
    holding = HoldingGetSCP(port, study.files[0])
    ours = peers.ours.archive
    ours.peers.save(Peer("holding", "HOLDING", "127.0.0.1", port))
    try:
        answer = api.post("/peers/holding/retrieve", json={"study_uid": study.uid, "method": "get"})
        pk = answer.json()["id"]
        wait_until(lambda: ours.jobs.get(pk, SYSTEM).done == 1, 30, "the first sub-operation")
        assert ours.jobs.get(pk, SYSTEM).total == 3
        ours.jobs.cancel(pk, SYSTEM)
        ended = wait_job(peers.ours, pk)
        assert ended.state == "cancelled", ended.message
        # the peer's final response came (after our C-CANCEL): the association ended cleanly
        assert ended.message.startswith("cancelled on request: 1 of "), ended.message
    finally:
        holding.server.shutdown()
        ours.peers.remove("holding")


def _location(uid: str) -> InstanceLocation:
    return InstanceLocation(
        1, "1.2.840.10008.5.1.4.1.1.2", uid, "1.2.840.10008.1.2.1", "f", "k", 10, "1.2", "P"
    )


def test_the_store_instances_response_is_read_per_instance() -> None:
    """PS3.18 10.5.3: stored (with a Warning Reason: a warning), failed (with its Failure
    Reason), absent from the answer (failed); statuses other than 200/202/409 fail the batch."""
    batch = [_location(uid) for uid in ("1.1", "1.2", "1.3", "1.4")]

    def item(uid: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"00081155": {"vr": "UI", "Value": [uid]}, **(extra or {})}

    body = {
        "00081199": {
            "vr": "SQ",
            "Value": [item("1.1"), item("1.2", {"00081196": {"vr": "US", "Value": [0xB006]}})],
        },
        "00081198": {
            "vr": "SQ",
            "Value": [item("1.3", {"00081197": {"vr": "US", "Value": [272]}})],
        },
    }
    answer = httpx.Response(202, json=body, headers={"Content-Type": "application/dicom+json"})
    outcome = stow._outcome(answer, batch, "http://u:secret@peer/dicom-web")
    assert outcome.stored == {"1.1", "1.2"} and outcome.warned == {"1.2"}
    assert outcome.failed == {"1.3": "failure reason 0x0110", "1.4": "not in the peer's answer"}

    assert stow._outcome(httpx.Response(200), batch, "http://peer").stored == {
        "1.1",
        "1.2",
        "1.3",
        "1.4",
    }
    with pytest.raises(JobFailed, match=r"HTTP 404 Not Found: no such route"):
        stow._outcome(httpx.Response(404, text="no such route"), batch, "http://peer")
    with pytest.raises(JobError, match="HTTP 503") as raised:
        stow._outcome(httpx.Response(503), batch, "https://u:secret@peer:8443/dicom-web")
    assert not isinstance(raised.value, JobFailed)
    assert "secret" not in str(raised.value) and "https://peer:8443/dicom-web" in str(raised.value)


def test_who_may_query_retrieve_and_send(peers: Site) -> None:
    """A radiologist may query a remote AE but neither retrieve into the archive (``store``)
    nor send (``send``); a technologist may do all three (services/policy.py)."""
    archive = peers.ours.archive
    assert archive.remote is not None
    study = peers.remote_studies[0]
    keys = RetrieveKeys("STUDY", study_uids=(peers.local_study.uid,))
    reader = Identity("user", "rad", "127.0.0.1", frozenset({"radiologist"}), method="token")
    found = archive.remote.query("theirs", "study", {"StudyInstanceUID": study.uid}, reader)
    assert [m["StudyInstanceUID"] for m in found.items] == [study.uid]
    assert [p.name for p in archive.remote.targets(reader)][:2] == ["down", "qrscp"]
    with pytest.raises(ForbiddenError):
        archive.remote.retrieve("theirs", study.uid, reader)
    with pytest.raises(ForbiddenError):
        archive.sending.submit(keys, "store", reader)
    tech = Identity("user", "tech", "127.0.0.1", frozenset({"technologist"}), method="token")
    job = archive.remote.retrieve("theirs", study.uid, tech, method="get")
    assert wait_job(peers.ours, job.pk).state == "succeeded"
    sent = archive.sending.submit(keys, "store", tech)
    assert wait_job(peers.ours, sent.pk).state == "succeeded"
