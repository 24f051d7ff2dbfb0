"""A server that fails like a service, not like a script (issue 11, items 8 and 10): worker
processes die with the main one and are replaced when they die alone; readiness says when
the disk is too full to store; a ``kill -9`` mid-transfer leaves nothing behind that the next
start does not find, remove and report."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
from pydicom.data import get_testdata_file
from pynetdicom import build_context

from conftest import dcmtk, wait_until
from served import Served, serve
from vesalius.dicom.uids import EXPLICIT_VR_LE
from vesalius.dimse import commands, pdu
from vesalius.dimse.requestor import connect

CT = get_testdata_file("CT_small.dcm")
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def workers(served: Served) -> list[int]:
    return [pid for pid in served.server_pids() if pid != served.proc.pid]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def echo(served: Served) -> None:
    dcmtk("echoscu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port))


def test_workers_die_with_the_main_process(tmp_path: Path) -> None:
    """kill -9 of the main process: its workers stop (nothing keeps serving or holding the
    ports), and a new server starts on the same ports at once."""
    with serve(tmp_path, {"dicom.workers": 3}) as served:
        wait_until(lambda: "Vesalius ready" in served.log_text(), what="every process up")
        orphans = workers(served)
        assert len(orphans) == 2
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait()
        wait_until(lambda: all(gone(pid) for pid in orphans), 15, "the workers to exit")
        assert port_free(served.dicom_port)
        assert port_free(served.http_port)
    again = tmp_path / "again"
    config = {"dicom.port": served.dicom_port, "http.port": served.http_port, "dicom.workers": 2}
    with serve(again, config) as restarted:
        echo(restarted)
        # the orphans said why they stopped
        assert served.log_text().count("is gone: stopping this worker") == 2


def test_a_dead_worker_is_logged_and_replaced(tmp_path: Path) -> None:
    with serve(tmp_path, {"dicom.workers": 2}) as served:
        wait_until(lambda: "Vesalius ready" in served.log_text(), what="every process up")
        (victim,) = workers(served)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(workers(served)) == 1 and workers(served)[0] != victim,
            30,
            "a new worker",
        )
        wait_until(lambda: "was killed by SIGKILL" in served.log_text(), what="the log line")
        for _ in range(4):  # whichever process takes the association answers
            echo(served)
        assert f"(pid {victim}) was killed by SIGKILL; starting a new one" in served.log_text()


def test_readiness_reports_low_disk(tmp_path: Path) -> None:
    """/health is 503 with the reason while free space is below storage.min_free_mb, and a
    C-STORE is refused with 0xA700 meanwhile."""
    huge = 1 << 40  # MiB: more than any disk has free
    with serve(tmp_path, {"storage.min_free_mb": huge}) as served:
        answer = httpx.get(served.url + "/health", timeout=10)
        assert answer.status_code == 503
        report = answer.json()
        assert report["status"] == "degraded"
        assert report["storage"].startswith("low:")
        proc = dcmtk(
            "storescu",
            "-v",
            "-aec",
            served.ae_title,
            "127.0.0.1",
            str(served.dicom_port),
            CT,
            check=False,
        )
        assert "Refused: OutOfResources" in proc.stdout + proc.stderr
    with serve(tmp_path / "fine") as served:
        assert httpx.get(served.url + "/health", timeout=10).json()["storage"] == "ok"


def test_staging_left_by_a_kill_is_removed_and_reported(tmp_path: Path) -> None:
    """kill -9 in the middle of a C-STORE leaves a partial staging file; the next start
    removes it and says what it found, and the unacknowledged instance is not in the index."""
    with serve(tmp_path, {"dicom.workers": 1}) as served:
        link = connect(
            "127.0.0.1",
            served.dicom_port,
            calling_ae="CRASHER",
            called_ae=served.ae_title,
            contexts=[build_context(CT_CLASS, [EXPLICIT_VR_LE])],
            max_pdu=16384,
            acse_timeout=10,
            network_timeout=10,
            dimse_timeout=10,
        )
        context = next(iter(link.contexts.values()))
        command = commands.encode(
            [
                (commands.AFFECTED_SOP_CLASS, CT_CLASS),
                (commands.COMMAND_FIELD, commands.C_STORE_RQ),
                (commands.MESSAGE_ID, 1),
                (commands.PRIORITY, 0),
                (commands.DATA_SET_TYPE, commands.DATA_SET),
                (commands.AFFECTED_SOP_INSTANCE, "1.2.3.4.5"),
            ]
        )
        link.send_command(context.id, command)
        fragment = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(16000)
        for _ in range(80):  # past the 1 MiB write buffer: the partial file has bytes
            link.sock.sendall(pdu.pdata_header(context.id, 0x00, len(fragment)) + fragment)
        staging = served.data_dir / "storage" / "staging"
        wait_until(lambda: any(p.stat().st_size for p in staging.iterdir()), what="a partial file")
        os.killpg(served.proc.pid, signal.SIGKILL)
        served.proc.wait()
        link.close()
    partial = [p.name for p in staging.iterdir() if p.stat().st_size]
    assert len(partial) == 1
    with serve(tmp_path) as served:
        log = served.log_text()
        assert "staging: removed 1 unfinished transfer(s)" in log
        assert not (staging / partial[0]).exists()
        answer = httpx.get(served.url + "/dicom-web/studies", timeout=10)
        assert answer.status_code in (200, 204)
        assert not answer.content.strip() or answer.json() == []
