"""The REST API's jobs, peers and live updates over a served archive, on SQLite and PostgreSQL:
peers created, replaced, refused field by field and removed; a C-ECHO to DCMTK's storescp and
to a closed port; a real send job cancelled, retried, run to storescp, its progress arriving on
``GET /api/v1/events``, as does a study stored by storescu; the stream ends at shutdown."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from bench.tools import dcmtk_tool

from conftest import (
    RunningServer,
    config_for,
    dcmtk,
    free_port,
    make_server,
    run_cli,
    running_http,
    scratch_database,
    wait_for_port,
    wait_until,
)
from sse import open_stream
from synth import make_instance
from vesalius.identity import Identity
from vesalius.services.retrieve import RetrieveKeys

STUDY = "1.2.826.0.1.3680043.8.498.15001"


@dataclass
class Site:
    server: RunningServer
    url: str
    scp_port: int
    received: Path
    files: list[Path]
    #: Bearer headers of the users boss (admin), tech (technologist), rad (radiologist).
    bearer: dict[str, dict[str, str]]
    #: A client acting as boss.
    http: httpx.Client


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """One served archive per backend, with DCMTK's storescp as a peer to send to."""
    folder = tmp_path_factory.mktemp(f"jobs-peers-{request.param}")
    received = folder / "received"
    received.mkdir()
    port = free_port()
    exe = dcmtk_tool("storescp")
    assert exe is not None
    scp = subprocess.Popen(
        [exe, "-aet", "STORE", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    files = []
    for n in range(3):
        path = folder / "in" / f"{n}.dcm"
        path.parent.mkdir(exist_ok=True)
        make_instance(path, StudyInstanceUID=STUDY, InstanceNumber=n + 1, PatientID="JP-1")
        files.append(path)
    try:
        wait_for_port(port)
        with scratch_database(request.param, folder) as database:
            server = make_server(folder / "data", database, **{"auth.required": "true"})
            accounts, system = server.archive.accounts, Identity.system()
            bearer = {}
            for name, role in (("boss", "admin"), ("tech", "technologist"), ("rad", "radiologist")):
                accounts.add_user(name, "a long enough password 1", frozenset({role}), system)
                token = accounts.create_token(name, system)[1]
                bearer[name] = {"Authorization": f"Bearer {token}"}
            try:
                with (
                    running_http(server.archive, server.settings) as url,
                    httpx.Client(headers=bearer["boss"], timeout=30) as http,
                ):
                    yield Site(server, url, port, received, files, bearer, http)
            finally:
                server.dimse.stop(grace=2)
                server.archive.close()
    finally:
        scp.terminate()
        scp.wait(10)


def test_peers_are_created_replaced_checked_and_removed(site: Site) -> None:
    base = site.url + "/api/v1/peers"
    body = {"ae_title": "WS1", "host": "10.0.0.5", "port": 104, "permissions": ["echo", "find"]}
    created = site.http.put(f"{base}/ws1", json=body)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": "ws1",
        "ae_title": "WS1",
        "host": "10.0.0.5",
        "port": 104,
        "permissions": ["echo", "find"],
        "tls": False,
        "dicomweb_url": None,
        "dicomweb_auth": "none",
        "dicomweb_user": "",
        "dicomweb_secret_set": False,
        "source": "admin",
    }
    web = {**body, "permissions": ["all"], "tls": True, "dicomweb_url": "https://pacs.example/dw/"}
    replaced = site.http.put(f"{base}/ws1", json=web)
    assert replaced.status_code == 200
    assert replaced.json()["dicomweb_url"] == "https://pacs.example/dw"
    assert replaced.json()["tls"] is True and len(replaced.json()["permissions"]) == 7
    assert site.http.get(f"{base}/ws1").json() == replaced.json()
    assert [p["name"] for p in site.http.get(base).json()] == ["ws1"]

    # Each field that breaks a rule is named (PS3.5 6.2 for the AE title).
    bad = {
        "ae_title": "A\\B",
        "host": "no spaces here",
        "port": 70000,
        "permissions": ["fly"],
        "dicomweb_url": "ftp://x",
    }
    refused = site.http.put(f"{base}/ws2", json=bad)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    located = {e["location"] for e in refused.json()["errors"]}
    assert located == {
        "body.ae_title",
        "body.host",
        "body.port",
        "body.permissions",
        "body.dicomweb_url",
    }
    too_long = site.http.put(f"{base}/ws2", json={**body, "ae_title": "A" * 17})
    assert too_long.status_code == 422 and "16" in too_long.text
    assert site.http.put(f"{base}/-bad", json=body).status_code == 422
    assert site.http.get(f"{base}/ws2").status_code == 404

    # A login for its DICOMweb service: the token is write-only, and a login needs a URL.
    login = {**web, "dicomweb_auth": "bearer", "dicomweb_secret": "token-of-ws1"}
    with_login = site.http.put(f"{base}/ws1", json=login)
    assert with_login.status_code == 200, with_login.text
    assert with_login.json()["dicomweb_auth"] == "bearer"
    assert with_login.json()["dicomweb_secret_set"] is True
    assert "token-of-ws1" not in site.http.get(base).text
    no_url = site.http.put(f"{base}/ws2", json={**body, "dicomweb_auth": "bearer"})
    assert {e["location"] for e in no_url.json()["errors"]} == {
        "body.dicomweb_auth",
        "body.dicomweb_secret",
    }
    control = {**login, "dicomweb_secret": "a\x00b"}
    assert site.http.put(f"{base}/ws1", json=control).status_code == 422
    # removed with "none", and with the URL
    assert site.http.put(f"{base}/ws1", json=web).json()["dicomweb_secret_set"] is True
    cleared = site.http.put(f"{base}/ws1", json={**web, "dicomweb_auth": "none"}).json()
    assert (cleared["dicomweb_auth"], cleared["dicomweb_secret_set"]) == ("none", False)

    # The command line's --dicomweb-url sets the same field.
    config = config_for(site.server, site.received.parent)
    url = "http://other.example:8042/dicom-web"
    ran = run_cli("peer", "set", "ws1", "--dicomweb-url", url, "--config", str(config))
    assert ran.returncode == 0 and ran.stdout.strip().endswith(url), ran.stdout + ran.stderr
    assert site.http.get(f"{base}/ws1").json()["dicomweb_url"] == (
        "http://other.example:8042/dicom-web"
    )

    assert site.http.delete(f"{base}/ws1").status_code == 204
    assert site.http.delete(f"{base}/ws1").status_code == 404
    assert site.http.get(f"{base}/ws1").status_code == 404


def test_echo_a_real_storescp_and_a_closed_port(site: Site) -> None:
    base = site.url + "/api/v1/peers"
    scp = {"ae_title": "STORE", "host": "127.0.0.1", "port": site.scp_port}
    assert site.http.put(f"{base}/echo-scp", json=scp).status_code in (200, 201)
    answer = site.http.post(f"{base}/echo-scp/echo").json()
    assert answer["ok"] is True and answer["status"] == 0, answer
    assert answer["milliseconds"] > 0

    closed = {**scp, "port": free_port()}
    assert site.http.put(f"{base}/echo-closed", json=closed).status_code in (200, 201)
    failed = site.http.post(f"{base}/echo-closed/echo").json()
    assert failed["ok"] is False and failed["status"] is None
    assert failed["message"]
    assert site.http.post(f"{base}/nobody/echo").status_code == 404


def test_a_send_job_is_cancelled_retried_and_streams_its_progress(site: Site) -> None:
    base = site.url + "/api/v1"
    archive = site.server.archive
    peer = {"ae_title": "STORE", "host": "127.0.0.1", "port": site.scp_port}
    assert site.http.put(f"{base}/peers/store", json=peer).status_code in (200, 201)
    stream, _reader = open_stream(site.url, site.bearer["boss"])
    assert stream.text[0] == "retry: 3000"

    # A study stored over DIMSE arrives as one study event.
    server = site.server
    dcmtk("storescu", *server.address, *map(str, site.files))
    wait_until(lambda: stream.has("study", study_uid=STUDY, change="stored"), what="study event")
    assert sum(1 for kind, d in stream.events if kind == "study" and d["study_uid"] == STUDY) == 1

    # A send job (queued: no runner runs in this test server) is cancelled, then retried.
    keys = RetrieveKeys(level="STUDY", study_uids=(STUDY,))
    job = archive.sending.submit(keys, "store", Identity.system()).pk
    listed = site.http.get(f"{base}/jobs", params={"state": "queued", "kind": "send"}).json()
    assert job in [j["id"] for j in listed["items"]] and listed["total"] >= 1
    cancelled = site.http.post(f"{base}/jobs/{job}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert site.http.post(f"{base}/jobs/{job}/cancel").status_code == 409
    wait_until(lambda: stream.has("job", id=job, state="cancelled"), what="cancelled event")
    retried = site.http.post(f"{base}/jobs/{job}/retry")
    assert retried.status_code == 200 and retried.json()["state"] == "queued"
    assert site.http.post(f"{base}/jobs/{job}/retry").status_code == 409

    # It runs to storescp; its progress and its end arrive on the stream.
    ran = archive.jobs.run_job(job)
    assert ran is not None and ran.state == "succeeded", ran
    wait_until(lambda: stream.has("job", id=job, state="succeeded", done=3, total=3))
    got = site.http.get(f"{base}/jobs/{job}").json()
    assert got["state"] == "succeeded" and got["done"] == got["total"] == 3
    assert got["payload"]["peer"] == "store" and got["needs"] == "send"
    assert len(list(site.received.iterdir())) >= 3

    # Paging by cursor: one job a page, newest first, every job once.
    second = archive.sending.submit(keys, "store", Identity.system()).pk
    first = site.http.get(f"{base}/jobs", params={"limit": 1}).json()
    assert [j["id"] for j in first["items"]] == [second] and first["next"]
    rest = site.http.get(f"{base}/jobs", params={"limit": 1, "cursor": first["next"]}).json()
    assert [j["id"] for j in rest["items"]] == [job]
    assert site.http.get(f"{base}/jobs", params={"cursor": "nonsense"}).status_code == 400
    assert site.http.get(f"{base}/jobs/999999").status_code == 404
    assert site.http.get(f"{base}/jobs", params={"state": "sleeping"}).status_code == 422
    assert site.http.get(f"{base}/events").status_code == 406  # a stream must be asked for
    site.http.post(f"{base}/jobs/{second}/cancel")

    # A deleted study is one study event too.
    archive.deletion.delete(keys, Identity.system())
    wait_until(lambda: stream.has("study", study_uid=STUDY, change="deleted"), what="deletion")


def test_the_event_stream_ends_when_the_server_stops(site: Site) -> None:
    server = site.server
    with running_http(server.archive, server.settings) as url:
        stream, reader = open_stream(url, site.bearer["boss"])
        assert server.archive.live is not None and server.archive.live.listening >= 1
    # Leaving the block stopped that server (and waited for it): the stream ended at once.
    assert stream.ended.is_set()
    assert stream.text[-2:] == [": the server is stopping", ""] or stream.text[-1] == (
        ": the server is stopping"
    )
    reader.join(5)


def test_each_identity_sees_only_its_jobs_and_the_studies_it_may_query(site: Site) -> None:
    """A radiologist sees neither a technologist's job nor a study labeled for others, on
    the lists or the stream; an administrator sees both; peers are for administrators only."""
    secret, public = "1.2.826.0.1.3680043.8.498.15003", "1.2.826.0.1.3680043.8.498.15004"
    running, url, bearer = site.server, site.url, site.bearer
    archive, system = running.archive, Identity.system()
    folder = site.files[0].parent

    def instance(study: str, n: int) -> str:
        path = folder / f"{study}-{n}.dcm"
        make_instance(path, StudyInstanceUID=study, PatientID="JP-2")
        return str(path)

    dcmtk("storescu", *running.address, instance(secret, 0), instance(public, 0))
    archive.labels.add(secret, ["oncology"], system)
    streams = {name: open_stream(url, bearer[name])[0] for name in ("boss", "tech", "rad")}
    tech = Identity("user", "tech", "127.0.0.1", frozenset({"technologist"}), method="token")
    archive.peers.put("nowhere", system, ae_title="NOWHERE", host="127.0.0.1", port=free_port())
    keys = RetrieveKeys(level="STUDY", study_uids=(public,))
    job = archive.sending.submit(keys, "nowhere", tech).pk
    dcmtk("storescu", *running.address, instance(secret, 1))
    wait_until(lambda: streams["boss"].has("job", id=job), what="the admin's job event")
    wait_until(lambda: streams["boss"].has("study", study_uid=secret), what="the admin's study")
    wait_until(lambda: streams["tech"].has("job", id=job), what="the submitter's job event")
    # A later event the radiologist may see: everything before it was sent already.
    dcmtk("storescu", *running.address, instance(public, 1))
    wait_until(lambda: streams["rad"].has("study", study_uid=public), what="rad's study event")
    assert not streams["rad"].has("job")
    assert not streams["rad"].has("study", study_uid=secret)

    def listed(name: str) -> list[int]:
        answer = httpx.get(f"{url}/api/v1/jobs", headers=bearer[name])
        return [j["id"] for j in answer.json()["items"]]

    assert job in listed("boss") and listed("tech") == [job] and listed("rad") == []
    assert httpx.get(f"{url}/api/v1/jobs/{job}", headers=bearer["rad"]).status_code == 404
    assert httpx.post(f"{url}/api/v1/jobs/{job}/cancel", headers=bearer["rad"]).status_code == 404
    assert httpx.post(f"{url}/api/v1/jobs/{job}/cancel", headers=bearer["tech"]).status_code == 200
    assert httpx.get(f"{url}/api/v1/peers", headers=bearer["rad"]).status_code == 403
    assert httpx.get(f"{url}/api/v1/events").status_code == 401


def test_a_study_stored_by_another_process_arrives_on_the_stream(site: Site) -> None:
    """A DIMSE worker process or another node stores through its own archive on the same index:
    its store is not on this process's event bus, and arrives all the same (the hub reads the
    studies that received instances since its last look), once."""
    from vesalius.wiring import assemble

    stream, _reader = open_stream(site.url, site.bearer["boss"])
    other = assemble(site.server.settings)  # another process's archive, same index and storage
    studies = [f"1.2.826.0.1.3680043.8.498.1501{n}" for n in range(3)]
    try:
        for n, study in enumerate(studies):  # one after the other: each a later look of the hub
            path = site.files[0].parent / f"elsewhere-{n}.dcm"
            make_instance(path, StudyInstanceUID=study, PatientID="JP-9")
            other.archive.ingest.ingest_copy(path, Identity.system())
            wait_until(
                lambda s=study: stream.has("study", study_uid=s, change="stored"), what="event"
            )
    finally:
        other.close()
    first = [data for kind, data in stream.events if data.get("study_uid") == studies[0]]
    assert len(first) == 1  # not again at the looks after
