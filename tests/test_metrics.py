"""Prometheus metrics of a real ``vesalius serve`` with two processes: known work (storescu,
STOW-RS, findscu, QIDO-RS, WADO-RS, getscu, a refused association, failing requests, a job) is
scraped from ``/metrics`` several times, parsed with prometheus-client's parser, and every
counter must equal the work done, whichever process did it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from conftest import dcmtk, wait_until
from served import Served, serve
from synth import make_instance

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
BOUNDARY = "metrics-test-boundary"
DASHBOARD = Path(__file__).parents[1] / "docs" / "grafana" / "vesalius.json"


def scrape(served: Served) -> Samples:
    response = httpx.get(served.url + "/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def shared_folder(served: Served) -> Path:
    """The metrics folder the server's processes share (from a worker's environment: the
    main process named it after it started)."""
    worker = next(p for p in served.server_pids() if p != served.proc.pid)
    with open(f"/proc/{worker}/environ", "rb") as fh:
        for entry in fh.read().split(b"\0"):
            if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("the server named no metrics folder")


def per_process(folder: Path, name: str, **labels: str) -> dict[int, float]:
    """``name`` as each process counted it (its own files, read by the client library)."""
    counts: dict[int, float] = {}
    pids = {int(p.stem.rsplit("_", 1)[1]) for p in folder.glob("counter_*.db")}
    for pid in pids:
        with tempfile.TemporaryDirectory() as one:
            for file in folder.glob(f"*_{pid}.db"):
                shutil.copy(file, one)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=one)
            samples: Samples = {}
            for family in registry.collect():
                for s in family.samples:
                    samples[(s.name, frozenset(s.labels.items()))] = s.value
            counts[pid] = total(samples, name, **labels)
    return counts


def stow_body(files: list[Path]) -> bytes:
    parts = [
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read_bytes()
        for f in files
    ]
    return b"\r\n".join(parts) + f"\r\n--{BOUNDARY}--\r\n".encode()


def blob_bytes(served: Served) -> int:
    return sum(p.stat().st_size for p in (served.data_dir / "storage" / "blobs").rglob("*.dcm"))


def test_counters_match_the_work_done_across_processes(tmp_path: Path) -> None:
    study, doomed = generate_uid(), generate_uid()
    series = [generate_uid() for _ in range(4)]
    batches = [
        [tmp_path / "in" / f"b{b}-{n}.dcm" for n in range(2)] for b in range(4)
    ]  # 4 associations of 2 instances
    for b, batch in enumerate(batches):
        for n, path in enumerate(batch):
            make_instance(
                path,
                StudyInstanceUID=study,
                SeriesInstanceUID=series[b],
                InstanceNumber=n + 1,
                pixel_data=bytes([n]) * 32,
            )
    stowed = tmp_path / "in" / "stowed.dcm"
    make_instance(stowed, StudyInstanceUID=doomed, PatientID="DOOMED")
    settings = {"dicom.workers": 2, "dicom.require_called_ae": True, "jobs.poll_interval": 0.2}
    with serve(tmp_path / "pacs", settings) as served:
        aec = ("-aec", served.ae_title, "127.0.0.1", str(served.dicom_port))
        before = scrape(served)
        assert value(before, "vesalius_dimse_associations_accepted_total") == 0
        assert value(before, "vesalius_build_info", version=__import__("vesalius").__version__,
                     python=".".join(map(str, sys.version_info[:3]))) == 1  # fmt: skip

        # DIMSE: four storescu associations at once (the processes share them out)
        failures: list[BaseException] = []

        def store(batch: list[Path]) -> None:
            try:
                dcmtk("storescu", *aec, *map(str, batch))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=store, args=(batch,)) for batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        stored_bytes = blob_bytes(served)
        mid = scrape(served)
        assert value(mid, "vesalius_dimse_associations_accepted_total") == 4
        assert (
            value(mid, "vesalius_instances_stored_total", protocol="dimse", outcome="created") == 8
        )
        assert value(mid, "vesalius_stored_bytes_total", protocol="dimse") == stored_bytes
        assert value(mid, "vesalius_dimse_operations_total", command="C-STORE",
                     status="success") == 8  # fmt: skip
        assert value(mid, "vesalius_dimse_associations_active") == 0

        # STOW-RS: one instance, of the study deleted below
        with httpx.Client(base_url=served.url, timeout=30) as web:
            stow = web.post(
                "/dicom-web/studies",
                content=stow_body([stowed]),
                headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                    f"boundary={BOUNDARY}"
                },
            )
            assert stow.status_code == 200, stow.text

        # C-FIND, and an association refused (called AE title not ours)
        dcmtk("findscu", "-S", *aec, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID")
        refused = dcmtk("echoscu", "-aec", "NOT-US", "127.0.0.1", str(served.dicom_port),
                        check=False)  # fmt: skip
        assert refused.returncode != 0

        # C-GET of the study (8 instances)
        got = tmp_path / "got"
        got.mkdir()
        dcmtk("getscu", "-S", "-od", str(got), *aec, "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={study}")  # fmt: skip
        assert len(list(got.iterdir())) == 8

        # QIDO-RS from many connections at once until both processes answered some
        folder = shared_folder(served)
        qido = 0

        def one_query() -> None:
            with httpx.Client(timeout=30) as client:  # a new connection each
                try:
                    assert client.get(served.url + "/dicom-web/studies").status_code == 200
                except BaseException as exc:
                    failures.append(exc)

        while qido < 400:
            batch = [threading.Thread(target=one_query) for _ in range(8)]
            for thread in batch:
                thread.start()
            for thread in batch:
                thread.join()
            qido += len(batch)
            assert failures == []
            by_pid = per_process(folder, "vesalius_http_requests_total", route="/dicom-web/studies")
            if sum(1 for n in by_pid.values() if n) >= 2:
                break
        assert sum(1 for n in by_pid.values() if n) >= 2, by_pid  # both processes served

        # WADO-RS of the study; failing requests: a missing study and an unknown path
        with httpx.Client(base_url=served.url, timeout=30) as web:
            wado = web.get(f"/dicom-web/studies/{study}", headers={"Accept": "multipart/related; "
                           'type="application/dicom"; transfer-syntax=*'})  # fmt: skip
            assert wado.status_code == 200
            missing = web.get(f"/dicom-web/studies/{generate_uid()}/metadata")
            assert missing.status_code == 404
            assert web.get("/foo.php").status_code == 404

        # a job run by the server: delete the stowed study
        env = {k: v for k, v in os.environ.items() if not k.startswith("VESALIUS_")}
        queued = subprocess.run(
            [sys.executable, "-m", "vesalius.cli", "delete", "--study", doomed, "--yes",
             "--no-wait", "--config", str(served.log.parent / "vesalius.toml")],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stderr

        def deleted() -> bool:
            done = scrape(served)
            return value(done, "vesalius_jobs", kind="delete", state="succeeded") == 1

        wait_until(deleted, 60, "the delete job")

        expected: list[tuple[str, dict[str, str], float]] = [
            ("vesalius_dimse_associations_accepted_total", {}, 6),
            ("vesalius_dimse_associations_rejected_total", {"reason": "called-ae"}, 1),
            ("vesalius_dimse_associations_active", {}, 0),
            ("vesalius_dimse_operations_total", {"command": "C-STORE", "status": "success"}, 8),
            ("vesalius_dimse_operations_total", {"command": "C-FIND", "status": "success"}, 1),
            ("vesalius_dimse_operations_total", {"command": "C-GET", "status": "success"}, 1),
            ("vesalius_instances_stored_total", {"protocol": "dimse", "outcome": "created"}, 8),
            ("vesalius_instances_stored_total", {"protocol": "stow", "outcome": "created"}, 1),
            ("vesalius_stored_bytes_total", {"protocol": "dimse"}, stored_bytes),
            ("vesalius_instances_sent_total", {"operation": "C-GET"}, 8),
            ("vesalius_sent_bytes_total", {"operation": "C-GET"}, stored_bytes),
            ("vesalius_instances_sent_total", {"operation": "WADO-RS"}, 8),
            ("vesalius_sent_bytes_total", {"operation": "WADO-RS"}, stored_bytes),
            ("vesalius_query_duration_seconds_count", {"protocol": "dimse"}, 1),
            ("vesalius_query_duration_seconds_count", {"protocol": "dicomweb"}, qido),
            (
                "vesalius_http_requests_total",
                {"method": "GET", "route": "/dicom-web/studies", "status": "200"},
                qido,
            ),
            (
                "vesalius_http_request_duration_seconds_count",
                {"method": "GET", "route": "/dicom-web/studies"},
                qido,
            ),
            (
                "vesalius_http_requests_total",
                {"method": "POST", "route": "/dicom-web/studies", "status": "200"},
                1,
            ),
            (
                "vesalius_http_requests_total",
                {"method": "GET", "route": "/dicom-web/studies/{study}/metadata", "status": "404"},
                1,
            ),
            (
                "vesalius_http_requests_total",
                {"method": "GET", "route": "/{path:path}", "status": "404"},
                1,
            ),
            ("vesalius_jobs_finished_total", {"kind": "delete", "outcome": "succeeded"}, 1),
            ("vesalius_index_entries", {"level": "instance"}, 8),
            ("vesalius_index_entries", {"level": "series"}, 4),
            ("vesalius_index_entries", {"level": "study"}, 1),
        ]
        for _ in range(3):  # every scrape, from whichever process, says the same
            after = scrape(served)
            found = [(name, labels, value(after, name, **labels)) for name, labels, _ in expected]
            assert found == expected
            assert value(after, "vesalius_storage_free_bytes") > 0
            labels = {v for (n, ls) in after for k, v in ls if k == "route"}
            assert not any(study in v or doomed in v for v in labels)  # no UIDs in labels
        # the example Grafana dashboard uses only metrics the server exposes
        exposed = {name for name, _ in after}
        used = set(re.findall(r"vesalius_[a-z_]+", DASHBOARD.read_text()))
        assert used and used <= exposed, used - exposed
    assert not folder.exists()  # removed at shutdown


def test_metrics_off(tmp_path: Path) -> None:
    with serve(tmp_path, {"metrics.enabled": False, "dicom.workers": 2}) as served:
        response = httpx.get(served.url + "/metrics")
        assert response.status_code == 404
        assert response.json()["status"] == 404
        with pytest.raises(AssertionError, match="no metrics folder"):
            shared_folder(served)
        assert httpx.get(served.url + "/healthz").status_code == 200


def test_a_dead_workers_live_gauges_are_dropped(tmp_path: Path) -> None:
    """A worker killed with associations open: the main process replaces it and forgets its
    active associations; what it counted stays counted."""
    with serve(tmp_path, {"dicom.workers": 2}) as served:
        folder = shared_folder(served)
        wait_until(lambda: len(list(folder.glob("gauge_livesum_*.db"))) == 2, 30, "both gauges")
        worker = next(p for p in served.server_pids() if p != served.proc.pid)
        os.kill(worker, 9)
        wait_until(lambda: not (folder / f"gauge_livesum_{worker}.db").exists(), 30, "cleanup")
        wait_until(lambda: len(list(folder.glob("gauge_livesum_*.db"))) == 2, 60, "a new worker")
        assert value(scrape(served), "vesalius_dimse_associations_active") == 0


def test_the_folder_of_a_killed_server_is_removed_at_the_next_start(tmp_path: Path) -> None:
    with serve(tmp_path / "one", {"dicom.workers": 2}) as served:
        killed = shared_folder(served)
        os.killpg(served.proc.pid, signal.SIGKILL)  # no chance to clean up
        served.proc.wait()
    assert killed.is_dir()
    with serve(tmp_path / "two", {"dicom.workers": 2}) as served:
        assert not killed.exists()
        assert shared_folder(served).is_dir()
