"""Clean shutdown and reload of a real ``vesalius serve`` (issue 13): SIGTERM during a
500-instance storescu loses nothing a success was answered for and leaves nothing half
written; new associations during the drain get an A-ASSOCIATE-RJ (transient); a peer idle in
an association gets an A-ABORT when the grace period ends, even while an HTTP client stalls;
SIGHUP applies a changed peer without a restart, says which settings need one, and survives a
broken settings file.

Timings are measured and printed, never asserted beyond a generous hang bound."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.tools import dcmtk_tool
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import build_context

from conftest import dcmtk, free_port, wait_for_port, wait_until
from loglines import audit_trail
from served import Served, serve, write_config
from synth import make_instance
from test_cli_scu import start, stop
from vesalius.dicom.uids import VERIFICATION
from vesalius.dimse import pdu
from vesalius.dimse.association import Association
from vesalius.dimse.requestor import connect

#: Hang bound past the grace period: far beyond what a drain takes; not a performance limit.
MARGIN = 15.0
STUDY = generate_uid()


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """500 small synthetic CT instances of one study, in sending order."""
    folder = tmp_path_factory.mktemp("many")
    series = generate_uid()
    files = []
    for n in range(500):
        path = folder / f"{n:04}.dcm"
        make_instance(
            path,
            StudyInstanceUID=STUDY,
            SeriesInstanceUID=series,
            InstanceNumber=n + 1,
            rows=16,
            columns=16,
            pixel_data=n.to_bytes(2, "little") * 256,
        )
        files.append(path)
    return files


def ready(served: Served) -> None:
    wait_until(lambda: "Vesalius ready" in served.log_text(), 60, "every process up")


def stored_audits(served: Served) -> int:
    return audit_trail(served.data_dir).count('"event": "instance-stored"')


def succeeded(output: str, files: list[Path]) -> set[Path]:
    """The files storescu was answered Success for: each response follows the request of
    the MsgID it answers (one association, one message at a time, in file order)."""
    done, current = set(), None
    for line in output.splitlines():
        sent = re.search(r"Sending Store Request \(MsgID (\d+)", line)
        if sent:
            current = int(sent.group(1))
        elif "Received Store Response (Success)" in line and current is not None:
            done.add(files[current - 1])
    return done


def index_uids(served: Served) -> set[str]:
    answer = httpx.get(
        f"{served.url}/dicom-web/studies/{STUDY}/instances",
        params={"limit": "1000", "includefield": "00080018"},
        timeout=60,
    )
    if answer.status_code == 204:
        return set()
    answer.raise_for_status()
    return {item["00080018"]["Value"][0] for item in answer.json()}


def retrieved_uids(served: Served) -> set[str]:
    """Every stored instance of the study, read back over WADO-RS and parsed whole."""
    answer = httpx.get(
        f"{served.url}/dicom-web/studies/{STUDY}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        timeout=120,
    )
    answer.raise_for_status()
    boundary = re.search(r'boundary="?([^";]+)', answer.headers["content-type"])
    assert boundary
    uids = set()
    for part in answer.content.split(b"--" + boundary.group(1).encode())[1:-1]:
        body = part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
        path = served.log.parent / "part.dcm"
        path.write_bytes(body)
        ds = dcmread(path)
        assert len(ds.PixelData) == 512
        uids.add(str(ds.SOPInstanceUID))
    return uids


def stop_and_measure(served: Served, grace: float) -> float:
    started = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(grace + MARGIN)  # a hang check, not a timing requirement
    return time.monotonic() - started


@pytest.mark.parametrize(("workers", "grace"), [(1, 0.0), (2, 0.0), (1, 30.0), (2, 30.0)])
def test_sigterm_during_storescu_loses_nothing(
    tmp_path: Path, many_files: list[Path], workers: int, grace: float
) -> None:
    """SIGTERM once storescu is under way: with no grace the association is aborted at once,
    with a long one storescu finishes; either way every instance answered Success is stored
    and reads back whole after a restart, and no staging file is left."""
    settings: dict[str, Any] = {"dicom.workers": workers, "shutdown_grace": grace}
    with serve(tmp_path / "pacs", settings) as served:
        ready(served)
        storescu = dcmtk_tool("storescu")
        assert storescu, "DCMTK's storescu not found: install Debian's dcmtk package"
        sender = subprocess.Popen(
            [
                *[storescu, "-v", "-aec", served.ae_title],
                *["127.0.0.1", str(served.dicom_port)],
                *map(str, many_files),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.append(sender.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        wait_until(lambda: stored_audits(served) >= 20, 60, "the first instances stored")
        took = stop_and_measure(served, grace)
        sender.wait(60)
        reader.join(10)
        print(f"workers={workers} grace={grace}: the server exited {took:.1f} s after SIGTERM")
        text = output[0]
        answered = succeeded(text, many_files)
        log = served.log_text()
        assert served.proc.returncode == 0, log[-3000:]
        if grace:  # the association was under way: it is served to its end
            assert sender.returncode == 0, text[-2000:]
            assert len(answered) == len(many_files)
        elif len(answered) < len(many_files):  # cut short: by an A-ABORT, not a closed socket
            assert "aborting association with STORESCU at shutdown" in log
        assert answered, text[-2000:]
    staging = tmp_path / "pacs" / "data" / "storage" / "staging"
    assert not any(p.is_file() for p in staging.rglob("*"))
    config = {"data_dir": str(tmp_path / "pacs" / "data")}
    with serve(tmp_path / "again", config) as again:
        want = {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in answered}
        indexed = index_uids(again)
        assert want <= indexed
        assert retrieved_uids(again) == indexed  # every indexed instance reads back whole


def hold(port: int, calling: str) -> Association:
    return connect(
        "127.0.0.1",
        port,
        calling_ae=calling,
        called_ae="VESALIUS",
        contexts=[build_context(VERIFICATION)],
        max_pdu=16384,
        acse_timeout=30,
        network_timeout=None,
        dimse_timeout=None,
    )


def first_pdu_after(link: Association, limit: float) -> tuple[str, float]:
    """What ends an idle association, and when: ``A-ABORT``, ``closed`` (no PDU) or other."""
    started = time.monotonic()
    link.sock.settimeout(limit)
    try:
        data = link.sock.recv(10)
    except TimeoutError:
        return "nothing", time.monotonic() - started
    except OSError as exc:
        return f"reset ({exc})", time.monotonic() - started
    took = time.monotonic() - started
    if not data:
        return "closed", took
    return ("A-ABORT" if data[0] == pdu.ABORT else f"PDU 0x{data[0]:02X}"), took


@pytest.fixture(scope="module")
def large_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 8 MiB instances: a study whose download outlasts a client that reads nothing."""
    folder = tmp_path_factory.mktemp("large")
    files = [folder / f"{n}.dcm" for n in range(3)]
    for path in files:
        pixels = os.urandom(2 * 2048 * 2048)
        make_instance(path, StudyInstanceUID=STUDY, rows=2048, columns=2048, pixel_data=pixels)
    return files


@pytest.fixture
def stalled_http() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def stall_download(served: Served, held: list[socket.socket]) -> None:
    """A WADO-RS client that asks for the study and reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", served.http_port))
    sock.sendall(
        f"GET /dicom-web/studies/{STUDY} HTTP/1.1\r\nHost: x\r\n"
        'Accept: multipart/related; type="application/dicom"\r\n\r\n'.encode()
    )
    held.append(sock)


@pytest.mark.parametrize("workers", [1, 2])
def test_idle_peers_get_an_abort_when_the_grace_period_ends(
    tmp_path: Path,
    large_files: list[Path],
    stalled_http: list[socket.socket],
    workers: int,
) -> None:
    """Peers idle in associations on every process get an A-ABORT when the grace period ends,
    while HTTP clients that read nothing hold requests open (before: the DIMSE drain began only
    once HTTP had let go, http.send_timeout later, and the idle peer heard nothing until its
    network timeout, 60 s); new associations meanwhile are refused A-ASSOCIATE-RJ, transient."""
    grace = 5.0
    with serve(tmp_path / "pacs", {"dicom.workers": workers, "shutdown_grace": grace}) as served:
        ready(served)
        dcmtk("storescu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port),
              *map(str, large_files))  # fmt: skip
        for _ in range(2 * workers):
            stall_download(served, stalled_http)
        idle = [hold(served.dicom_port, f"IDLE{n}") for n in range(2 * workers)]
        wait_until(lambda: served.log_text().count("association from IDLE") == len(idle))
        served.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutting down" in served.log_text(), what="the drain to begin")
        refused = [
            dcmtk("echoscu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port),
                  check=False)
            for _ in range(2 * workers)
        ]  # fmt: skip
        ends = [first_pdu_after(link, grace + MARGIN) for link in idle]
        served.proc.wait(grace + MARGIN)
        print(f"workers={workers}: idle peers ended after", [f"{t:.1f} s" for _, t in ends])
        for echo in refused:
            said = echo.stdout + echo.stderr
            assert echo.returncode != 0
            assert "Association Rejected" in said, said
            assert "Transient" in said and "Temporary Congestion" in said, said
        assert [what for what, _ in ends] == ["A-ABORT"] * len(idle)
        assert "rejecting association from 127.0.0.1: shutting down" in served.log_text()


def test_sighup_reloads_peers_and_says_what_needs_a_restart(tmp_path: Path) -> None:
    """SIGHUP: a peer added to [modalities] is a C-MOVE destination at once (a DCMTK storescp),
    a changed port is logged "restart needed", the log level follows, and a broken settings
    file is reported while the server keeps serving with the running settings."""
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    scp = start("storescp", "-aet", "DEST", "-od", str(received), str(port),
                log=tmp_path / "storescp.log")  # fmt: skip
    try:
        wait_for_port(port)
        pacs = tmp_path / "pacs"
        with serve(pacs, {"dicom.workers": 2}) as served:
            ready(served)
            config = pacs / "vesalius.toml"
            original = config.read_text()
            files = [tmp_path / "in" / f"{n}.dcm" for n in range(3)]
            for n, path in enumerate(files):
                make_instance(path, StudyInstanceUID=STUDY, InstanceNumber=n + 1)
            address = ("127.0.0.1", str(served.dicom_port))
            dcmtk("storescu", "-aec", served.ae_title, *address, *map(str, files))
            keys = ("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}")
            move = ("movescu", "-S", "-aec", served.ae_title, "-aem", "DEST", *address, *keys)
            unknown = dcmtk(*move, check=False)
            assert not list(received.iterdir()), unknown.stdout
            assert "MoveDestinationUnknown" in unknown.stdout + unknown.stderr

            def sighup(text: str, count: int) -> None:
                config.write_text(text)
                served.proc.send_signal(signal.SIGHUP)
                wait_until(lambda: served.log_text().count("reload:") >= count, what="a reload")

            values = {"data_dir": str(pacs / "data"), "dicom.host": "127.0.0.1",
                      "dicom.port": served.dicom_port, "http.port": served.http_port,
                      "storage.min_free_mb": 0, "dicom.workers": 2}  # fmt: skip
            changed = tmp_path / "changed.toml"
            write_config(
                changed,
                {
                    **values,
                    "log_level": "debug",
                    "dicom.port": free_port(),
                    "modalities.DEST.ae_title": "DEST",
                    "modalities.DEST.host": "127.0.0.1",
                    "modalities.DEST.port": port,
                },
            )
            sighup(changed.read_text(), 1)
            wait_until(lambda: "settings re-read" in served.log_text(), what="the reload")
            log = served.log_text()
            assert "reload: dicom.port changed: restart needed" in log
            assert "reload: log_level is now debug" in log
            assert "http.port changed" not in log
            wait_until(  # the worker follows the log level too
                lambda: re.search(
                    r"process=worker-\d+ .*reload: this process logs at debug", served.log_text()
                ),
                what="the worker's reload",
            )
            for _ in range(3):  # whichever process takes the association, it knows DEST
                dcmtk(*move)
            assert len(list(received.iterdir())) == 3
            assert served.alive()

            before = served.log_text().count("reload:")
            sighup("this is [not toml\n", before + 1)
            assert re.search(r"level=error .*reload: .*vesalius\.toml.*the running settings stay",
                             served.log_text())  # fmt: skip
            for _ in range(3):
                dcmtk("echoscu", "-aec", served.ae_title, *address)
            assert served.alive()
            config.write_text(original)
    finally:
        stop(scp)


def test_a_running_job_goes_back_to_the_queue_at_shutdown(tmp_path: Path) -> None:
    """A send job stuck on a destination that accepts TCP and never answers (no progress
    report within the grace period) is put back in the queue when the grace period ends:
    queued again, its attempt not spent, not lost and not left "running"."""
    from test_delete_send import job, job_id, vesalius

    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)  # accepts connections, never reads or answers
    settings = {
        "shutdown_grace": 2.0,
        "jobs.poll_interval": 0.2,
        "modalities.MUTE.ae_title": "MUTE",
        "modalities.MUTE.host": "127.0.0.1",
        "modalities.MUTE.port": mute.getsockname()[1],
    }
    try:
        with serve(tmp_path / "pacs", settings) as served:
            path = tmp_path / "in" / "one.dcm"
            make_instance(path, StudyInstanceUID=STUDY)
            dcmtk(
                "storescu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port), str(path)
            )
            queued = vesalius(served, "send", "--study", STUDY, "--to", "MUTE", "--no-wait")
            assert queued.returncode == 0, queued.stderr
            pk = job_id(queued.stdout)
            wait_until(lambda: job(served, pk)["state"] == "running", what="the job to start")
            took = stop_and_measure(served, 2.0)
            print(f"the server exited {took:.1f} s after SIGTERM")
            assert f"job {pk} handed back" in served.log_text()
            record = job(served, pk)
            assert record["state"] == "queued", record
            assert record["attempts"] == 0, record
            assert "server stopped" in record["message"], record
    finally:
        mute.close()
