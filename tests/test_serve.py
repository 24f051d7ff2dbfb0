"""`vesalius serve` as a user runs it: a subprocess, configured by file and environment, stopped
by SIGTERM and SIGINT, with its data intact afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from conftest import dcmtk, free_port


def wait_healthy(proc: subprocess.Popen[str], url: str, timeout: float = 30) -> dict[str, object]:
    """Poll the health endpoint until it answers (the process must stay alive)."""
    with httpx.Client(timeout=1) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return dict(response.json())
            except httpx.TransportError:
                pass
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
    raise AssertionError("server did not become healthy")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int, Path]]:
    dicom_port, http_port = free_port(), free_port()
    config = tmp_path / "vesalius.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[dicom]\nae_title = "TESTPACS"\nport = {dicom_port}\n'
        f"[http]\nport = 1\n"
    )
    env = {**os.environ, "VESALIUS_HTTP_PORT": str(http_port)}  # environment beats the file
    proc = subprocess.Popen(
        [sys.executable, "-m", "vesalius.cli", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, dicom_port, http_port, tmp_path / "data"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stores_and_stops_cleanly(
    serve: tuple[subprocess.Popen[str], int, int, Path], sig: signal.Signals
) -> None:
    proc, dicom_port, http_port, data = serve
    report = wait_healthy(proc, f"http://127.0.0.1:{http_port}/health")
    assert report["status"] == "ok"
    assert report["ae_title"] == "TESTPACS"
    dcmtk("echoscu", "-aec", "TESTPACS", "127.0.0.1", str(dicom_port))
    dcmtk(
        "storescu",
        "-aec",
        "TESTPACS",
        "127.0.0.1",
        str(dicom_port),
        get_testdata_file("CT_small.dcm"),
    )
    with socket.create_connection(("127.0.0.1", dicom_port)):  # a probe that never negotiates
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert (data / "index.sqlite").is_file()
    assert len(list((data / "storage" / "blobs").rglob("*.dcm"))) == 1
    assert list((data / "storage" / "staging").iterdir()) == []


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vesalius.cli",
                "serve",
                "--data-dir",
                str(tmp_path),
                "--port",
                str(port),
                "--http-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "VESALIUS_DICOM_HOST": "127.0.0.1"},
        )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert str(port) in proc.stderr
