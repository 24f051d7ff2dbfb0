"""Jobs over a real ``vesalius serve``: ``vesalius delete`` (gone from C-FIND, QIDO-RS and
WADO-RS, its files gone, audited), ``vesalius send --study`` to DCMTK's storescp, and a send that
survives the server being killed mid-job (the job is taken back and finished after a restart),
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from conftest import dcmtk, free_port, run_cli, wait_for_port, wait_until
from loglines import audit_trail
from served import Served, serve
from synth import make_instance
from test_cli_scu import dataset_bytes, start, stop

STUDY = generate_uid()
SERIES = [generate_uid(), generate_uid()]


def vesalius(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line, with the served instance's settings file (in this process:
    conftest.run_cli)."""
    return run_cli(*args, "--config", str(served.log.parent / "vesalius.toml"))


def job(served: Served, pk: int) -> dict[str, Any]:
    shown = vesalius(served, "jobs", "show", str(pk))
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def job_id(output: str) -> int:
    """The job number in ``job N kind state ...`` or ``queued: job N ...``."""
    words = output.split()
    return int(words[words.index("job") + 1])


def study_files(folder: Path, per_series: int = 3) -> list[Path]:
    files = []
    for s, series_uid in enumerate(SERIES):
        for n in range(per_series):
            path = folder / f"s{s}-{n}.dcm"
            make_instance(
                path,
                StudyInstanceUID=STUDY,
                SeriesInstanceUID=series_uid,
                SeriesNumber=s + 1,
                InstanceNumber=n + 1,
                PatientID="DEL-1",
                pixel_data=bytes([n]) * 32,
            )
            files.append(path)
    return files


def store(served: Served, files: list[Path]) -> None:
    dcmtk(
        "storescu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port), *map(str, files)
    )


def blobs(served: Served) -> list[Path]:
    return sorted((served.data_dir / "storage" / "blobs").rglob("*.dcm"))


def cfind_series(served: Served) -> list[str]:
    answer = dcmtk(
        "findscu", "-S", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={STUDY}",
        "-k", "SeriesInstanceUID",
    )  # fmt: skip
    found = []
    for line in (answer.stdout + answer.stderr).splitlines():
        if "(0020,000e)" in line and "[" in line:
            found.append(line.split("[", 1)[1].split("]", 1)[0].rstrip("\x00 "))
    return found


def audit_lines(text: str, event: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        if f'"event": "{event}"' in line:
            records.append(json.loads(line[line.index("{") :]))
    return records


@pytest.fixture
def db_settings(tmp_path: Path, database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "jobs.poll_interval": 0.2}


def test_delete_a_series_then_the_study_over_a_real_server(
    tmp_path: Path, db_settings: dict[str, Any]
) -> None:
    with serve(tmp_path / "pacs", db_settings) as served:
        files = study_files(tmp_path / "in")
        store(served, files)
        assert len(blobs(served)) == 6
        assert sorted(cfind_series(served)) == sorted(SERIES)
        doomed = dcmread(files[0]).SOPInstanceUID

        # The CLI runs the job itself (unless a server's runner claims it first, as on
        # PostgreSQL it may), with a progress bar, and prints the audit record.
        deleted = vesalius(served, "delete", "--series", SERIES[0], "--yes")
        assert deleted.returncode == 0, deleted.stderr
        assert "delete succeeded" in deleted.stdout and "3 of 3 instance(s)" in deleted.stdout
        # The command writes the server's audit trail too (or the server's runner did).
        trail = lambda: audit_lines(audit_trail(served.data_dir), "instances-deleted")  # noqa: E731
        wait_until(lambda: bool(trail()), 10, "the audit record")
        (record,) = trail()
        assert record["series_uids"] == [SERIES[0]] and record["deleted"] == 3
        assert record["patient_ids"] == ["DEL-1"] and record["who"].startswith("user:")

        assert cfind_series(served) == [SERIES[1]]
        with httpx.Client(base_url=served.url + "/dicom-web", timeout=30) as web:
            listed = web.get(f"/studies/{STUDY}/series").json()
            assert [s["0020000E"]["Value"][0] for s in listed] == [SERIES[1]]
            assert web.get(f"/studies/{STUDY}/series/{SERIES[0]}").status_code == 404
            gone = f"/studies/{STUDY}/series/{SERIES[0]}/instances/{doomed}"
            assert web.get(gone).status_code == 404
            assert web.get(f"/studies/{STUDY}/series/{SERIES[1]}").status_code == 200
            study = web.get("/studies", params={"StudyInstanceUID": STUDY}).json()
            assert study[0]["00201208"]["Value"] == [3]  # Number of Study Related Instances
        assert len(blobs(served)) == 3

        # Queued only: the server's runner deletes the rest.
        queued = vesalius(served, "delete", "--study", STUDY, "--yes", "--no-wait")
        assert queued.returncode == 0, queued.stderr
        pk = job_id(queued.stdout)
        wait_until(lambda: job(served, pk)["state"] == "succeeded", 30, "the server's runner")
        assert job(served, pk)["message"] == "3 of 3 instance(s) deleted"
        assert cfind_series(served) == []
        with httpx.Client(base_url=served.url + "/dicom-web", timeout=30) as web:
            none = web.get("/studies", params={"StudyInstanceUID": STUDY})
            assert none.status_code in (200, 204) and (none.content or b"[]") == b"[]"
            assert web.get(f"/studies/{STUDY}").status_code == 404
        assert blobs(served) == []
        wait_until(
            lambda: bool(audit_lines(audit_trail(served.data_dir), "instances-deleted")),
            10,
            "audit",
        )
        record = audit_lines(audit_trail(served.data_dir), "instances-deleted")[-1]
        assert record["study_uids"] == [STUDY] and record["deleted"] == 3

        again = vesalius(served, "delete", "--study", STUDY, "--yes")
        assert again.returncode == 1 and "nothing stored matches" in again.stderr
        nothing = vesalius(served, "delete", "--yes")
        assert nothing.returncode == 2 and "name what to delete" in nothing.stderr


def test_send_a_stored_study_to_storescp_as_a_job(
    tmp_path: Path, db_settings: dict[str, Any]
) -> None:
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    scp = start(
        "storescp", "-aet", "STORE", "+B", "-od", str(received), str(port),
        log=tmp_path / "storescp.log",
    )  # fmt: skip
    try:
        wait_for_port(port)
        settings = {
            **db_settings,
            "modalities.STORE.ae_title": "STORE",
            "modalities.STORE.host": "127.0.0.1",
            "modalities.STORE.port": port,
        }
        with serve(tmp_path / "pacs", settings) as served:
            files = study_files(tmp_path / "in")
            store(served, files)
            sent = vesalius(served, "send", "--study", STUDY, "--to", "STORE")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "send succeeded" in sent.stdout and "6 of 6 sent to STORE" in sent.stdout
            sends = lambda: audit_lines(audit_trail(served.data_dir), "instances-transferred")  # noqa: E731
            wait_until(lambda: bool(sends()), 10, "the audit record")
            (record,) = sends()
            assert record["operation"] == "send" and record["destination"] == "STORE"
            assert record["completed"] == 6 and record["outcome"] == "success"

            got = {str(dcmread(p).SOPInstanceUID): p for p in received.iterdir()}
            for path in files:
                uid = str(dcmread(path).SOPInstanceUID)
                assert dataset_bytes(got[uid]) == dataset_bytes(path)  # bit-exact

            unknown = vesalius(served, "send", "--study", STUDY, "--to", "NOBODY")
            assert unknown.returncode == 1 and "no known peer 'NOBODY'" in unknown.stderr
    finally:
        stop(scp)


def test_a_send_to_a_peer_that_is_down_is_retried_and_can_be_cancelled(
    tmp_path: Path, db_settings: dict[str, Any]
) -> None:
    settings = {
        **db_settings,
        "modalities.DOWN.ae_title": "DOWN",
        "modalities.DOWN.host": "127.0.0.1",
        "modalities.DOWN.port": free_port(),
        "jobs.retry_after": 3600,
    }
    with serve(tmp_path / "pacs", settings) as served:
        store(served, study_files(tmp_path / "in", per_series=1))
        sent = vesalius(served, "send", "--study", STUDY, "--to", "DOWN")
        assert sent.returncode == 1
        pk = job_id(sent.stdout)
        assert "will be tried again" in sent.stderr
        row = job(served, pk)
        assert row["state"] == "queued" and row["attempts"] == 1
        assert "cannot connect to DOWN" in row["message"]
        cancelled = vesalius(served, "jobs", "cancel", str(pk))
        assert cancelled.returncode == 0 and f"job {pk}: cancelled" in cancelled.stdout
        assert job(served, pk)["state"] == "cancelled"
        listed = vesalius(served, "jobs", "list", "--state", "cancelled")
        assert f"job {pk} send cancelled" in listed.stdout


class SlowPeer:
    """A pynetdicom storage SCP that takes ``delay`` seconds per instance and, once it holds
    ``hold_after`` instances, answers no more until :attr:`release` is set (so a test can act
    while a send is surely under way, however slow the machine)."""

    def __init__(self, port: int, delay: float, hold_after: int | None = None) -> None:
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.delay = delay
        self.hold_after = hold_after
        self.release = threading.Event()
        ae = AE(ae_title="SLOW")
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ae.add_supported_context(CTImageStorage, syntax)
        ae.add_supported_context(Verification)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._stored)]
        )

    def _stored(self, event: Any) -> int:
        time.sleep(self.delay)
        if self.hold_after is not None and len(self.received) >= self.hold_after:
            self.release.wait(120)
        with self.lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def slow_peer() -> Iterator[tuple[SlowPeer, int]]:
    port = free_port()
    peer = SlowPeer(port, 0.25)
    yield peer, port
    peer.close()


@pytest.fixture
def held_peer() -> Iterator[tuple[SlowPeer, int]]:
    port = free_port()
    peer = SlowPeer(port, 0.05, hold_after=3)
    yield peer, port
    peer.release.set()
    peer.close()


def test_a_send_resumes_after_the_server_is_killed_mid_job(
    tmp_path: Path, db_settings: dict[str, Any], held_peer: tuple[SlowPeer, int]
) -> None:
    peer, port = held_peer
    settings = {
        **db_settings,
        "data_dir": str(tmp_path / "data"),
        "modalities.SLOW.ae_title": "SLOW",
        "modalities.SLOW.host": "127.0.0.1",
        "modalities.SLOW.port": port,
        "jobs.stale_after": 2.0,
    }
    files = study_files(tmp_path / "in", per_series=8)
    with serve(tmp_path / "first", settings) as served:
        store(served, files)
        queued = vesalius(served, "send", "--study", STUDY, "--to", "SLOW", "--no-wait")
        pk = job_id(queued.stdout)
        # The peer holds the fourth instance unanswered: the job is surely mid-send.
        wait_until(lambda: len(peer.received) >= 3, 60, "the send under way")
        os.killpg(served.proc.pid, signal.SIGKILL)  # the server and its workers, at once
        served.proc.wait()
        row = job(served, pk)
        assert row["state"] == "running" and row["attempts"] == 1
    before = len(peer.received)
    assert before == 3 < len(files)
    peer.release.set()

    with serve(tmp_path / "second", settings) as served:
        wait_until(lambda: job(served, pk)["state"] == "succeeded", 60, "the job resumed")
        row = job(served, pk)
        assert row["attempts"] == 2 and row["message"] == "16 of 16 sent to SLOW"
        assert "taken back" in served.log_text()
    expected = {str(dcmread(p).SOPInstanceUID) for p in files}
    assert set(peer.received) == expected  # everything arrived (some twice: at-least-once)


# -- the delete service in process ---------------------------------------------------------------


def test_delete_is_refused_by_the_policy_and_audited(tmp_path: Path) -> None:
    from conftest import make_server
    from test_oversight import Refuse
    from vesalius.errors import ForbiddenError
    from vesalius.identity import Identity
    from vesalius.services.audit import Auditor, MemorySink
    from vesalius.services.retrieve import RetrieveKeys

    sink = MemorySink()
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        policy=Refuse(("intern", "delete")),
        auditor=Auditor([sink]),
    )
    try:
        address = ["-aec", running.ae_title, "127.0.0.1", str(running.port)]
        dcmtk("storescu", *address, *map(str, study_files(tmp_path / "in", per_series=1)))
        keys = RetrieveKeys("STUDY", study_uids=(STUDY,))
        intern = Identity("user", "intern", "localhost")
        with pytest.raises(ForbiddenError):
            running.archive.deletion.delete(keys, intern)
        with pytest.raises(ForbiddenError):
            running.archive.deletion.submit(keys, intern)
        assert running.catalog.count_instances() == 2
        refused = [e for e in sink.events if e.kind == "instances-deleted"]
        assert refused[0].outcome == "failure" and refused[0].who == intern

        done = running.archive.deletion.delete(keys, Identity("user", "admin", "localhost"))
        assert (done.matched, done.deleted) == (2, 2)
        assert running.catalog.count_instances() == 0 and running.stored_files() == []
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def test_files_of_rows_deleted_before_a_crash_are_removed_by_the_sweep(
    tmp_path: Path, database_url: str
) -> None:
    """A crash after the rows' transaction committed and before the files went: the notes
    written with the rows let the next sweep (every runner's housekeeping) finish the job."""
    from conftest import make_server
    from vesalius.index import jobs as table
    from vesalius.index.lookup import RetrieveKeys, find_instances
    from vesalius.index.records import delete_instance_if_present

    running = make_server(tmp_path / "data", database_url)
    try:
        address = ["-aec", running.ae_title, "127.0.0.1", str(running.port)]
        dcmtk("storescu", *address, *map(str, study_files(tmp_path / "in", per_series=2)))
        assert len(running.stored_files()) == 4
        with running.catalog.read() as conn:
            found = find_instances(conn, RetrieveKeys("SERIES", series_uids=(SERIES[0],)))
        with running.catalog.write() as conn:  # what DeleteService does before "crashing"
            blobs = [delete_instance_if_present(conn, i.pk) for i in found]
            table.note_deleted_blobs(conn, [(b.key, b.store) for b in blobs if b])
        assert len(running.stored_files()) == 4 and running.catalog.count_instances() == 2
        assert running.archive.deletion.sweep() == (2, 0)
        assert len(running.stored_files()) == 2
        with running.catalog.read() as conn:
            assert table.pending_blob_deletions(conn) == []
        assert running.archive.deletion.sweep() == (0, 0)
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()
