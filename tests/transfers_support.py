"""Real peers for the transfers tests (``test_api_transfers.py``, ``test_ui_transfers.py``):
Vesalius ``OURS`` (DIMSE, HTTP and a job runner) and a second Vesalius ``THEIRS`` (DIMSE and
DICOMweb), each knowing the other; DCMTK's storescp (bit-preserving) and DCMTK's Q/R server
dcmqrscp, which knows ``OURS`` as a C-MOVE destination."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import generate_uid

from conftest import (
    RunningServer,
    dcmtk,
    free_port,
    make_server,
    running_http,
    scratch_database,
    wait_for_port,
    wait_until,
)
from synth import make_instance
from test_cli_scu import start, stop
from vesalius.dicom.structure import dataset_offset
from vesalius.identity import Identity
from vesalius.index.jobs import FINISHED, JobRow
from vesalius.services.peers import Peer
from vesalius.wiring import job_runner

SYSTEM = Identity.system()


@dataclass
class Study:
    """A synthetic study's files, by series."""

    uid: str
    series: dict[str, list[Path]] = field(default_factory=dict)
    patient_name: str = ""

    @property
    def files(self) -> list[Path]:
        return [p for files in self.series.values() for p in files]


def make_study(folder: Path, patient: str, series: int = 2, per_series: int = 2) -> Study:
    """``series`` series of ``per_series`` CT instances, for patient ``patient``."""
    study = Study(generate_uid(), patient_name=patient)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(series):
        uid = generate_uid()
        study.series[uid] = []
        for i in range(per_series):
            path = folder / f"{uid}-{i}.dcm"
            make_instance(
                path,
                StudyInstanceUID=study.uid,
                SeriesInstanceUID=uid,
                SeriesNumber=s + 1,
                InstanceNumber=i + 1,
                PatientName=patient,
                PatientID=patient.replace("^", "").upper(),
                StudyDescription=f"Study of {patient}",
            )
            study.series[uid].append(path)
    return study


def store(server: RunningServer, study: Study) -> None:
    for path in study.files:
        server.archive.ingest.ingest_copy(path, SYSTEM)


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: everything after the File Meta."""
    with open(path, "rb") as fh:
        fh.seek(dataset_offset(path))
        return fh.read()


def stored_datasets(server: RunningServer) -> set[bytes]:
    return {dataset_bytes(p) for p in server.stored_files()}


def wait_job(server: RunningServer, pk: int, timeout: float = 60) -> JobRow:
    """The job once finished (the runner of ``server`` runs it)."""
    wait_until(lambda: server.archive.jobs.get(pk, SYSTEM).state in FINISHED, timeout, f"job {pk}")
    return server.archive.jobs.get(pk, SYSTEM)


@dataclass
class Site:
    """Everything a transfers test talks to."""

    ours: RunningServer
    url: str
    theirs: RunningServer
    theirs_url: str
    storescp_dir: Path
    #: On THEIRS: two studies to query and retrieve; on dcmqrscp: one.
    remote_studies: list[Study]
    qr_study: Study
    #: A study stored in OURS, to send.
    local_study: Study


@contextmanager
def site(backend: str, folder: Path) -> Iterator[Site]:
    """Start OURS (its index on ``backend``), THEIRS, storescp and dcmqrscp."""
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        ours_db = stack.enter_context(scratch_database(backend, folder / "a"))
        # the peer's own index is not under test: SQLite (a PostgreSQL database costs seconds)
        theirs_db = f"sqlite:///{folder / 'b' / 'index.sqlite'}"
        ours = make_server(
            folder / "ours",
            ours_db,
            **{
                "dicom.ae_title": "OURS",
                "jobs.poll_interval": 0.05,
                "jobs.retry_after": 3600,
                "jobs.stale_after": 4,  # the heartbeat (a cancel request seen) every second
            },
        )
        stack.callback(ours.archive.close)
        stack.callback(ours.dimse.stop, grace=2)
        theirs = make_server(folder / "theirs", theirs_db, **{"dicom.ae_title": "THEIRS"})
        stack.callback(theirs.archive.close)
        stack.callback(theirs.dimse.stop, grace=2)
        url = stack.enter_context(running_http(ours.archive, ours.settings))
        theirs_url = stack.enter_context(running_http(theirs.archive, theirs.settings))
        runner = job_runner(ours.archive, ours.settings)
        runner.start()
        stack.callback(runner.stop)

        received = folder / "storescp"
        received.mkdir()
        store_port = free_port()
        scp = start(
            "storescp", "-aet", "STORE", "+B", "-od", str(received), str(store_port),
            log=folder / "storescp.log",
        )  # fmt: skip
        stack.callback(stop, scp)

        qr_study = make_study(folder / "qr", "Query^Rita", series=1, per_series=2)
        db = folder / "qrdb"
        db.mkdir()
        for path in qr_study.files:
            shutil.copy(path, db / path.name)
        dcmtk("dcmqridx", str(db), *sorted(str(p) for p in db.glob("*.dcm")))
        qr_port = free_port()
        config = folder / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {qr_port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
            f"HostTable BEGIN\nours = (OURS, 127.0.0.1, {ours.port})\nHostTable END\n"
            "VendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\nQRSCP {db} RW (100, 1024mb) ANY\nAETable END\n"
        )
        qr = start("dcmqrscp", "-c", str(config), log=folder / "dcmqrscp.log")
        stack.callback(stop, qr)

        remote = [
            make_study(folder / "r1", "Remote^Moved"),
            make_study(folder / "r2", "Remote^Gotten", series=1),
        ]
        for study in remote:
            store(theirs, study)
        local = make_study(folder / "local", "Local^Sent")
        store(ours, local)

        theirs.archive.peers.save(Peer("ours", "OURS", "127.0.0.1", ours.port))
        peers = ours.archive.peers
        peers.save(
            Peer(
                "theirs",
                "THEIRS",
                "127.0.0.1",
                theirs.port,
                dicomweb_url=f"{theirs_url}/dicom-web",
            )
        )
        peers.save(Peer("store", "STORE", "127.0.0.1", store_port))
        peers.save(Peer("qrscp", "QRSCP", "127.0.0.1", qr_port))
        peers.save(Peer("down", "DOWN", "127.0.0.1", free_port()))
        wait_for_port(store_port)
        wait_for_port(qr_port)
        yield Site(ours, url, theirs, theirs_url, received, remote, qr_study, local)
