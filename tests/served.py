"""A real ``vesalius serve`` process for the robustness tests: started with a settings file,
ready once ``/health`` answers, measured as the sum of the VmRSS of all its processes (the
main one and its workers), stopped with SIGTERM.

Its output goes to a file (``log``), so a chatty server never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conftest import PERMISSIVE, free_port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), depth first."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                direct = [int(p) for p in fh.read().split()]
        except OSError:
            continue
        for child in direct:
            found.append(child)
            found.extend(children(child))
    return found


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Served:
    """A running server: its process, ports, data folder and log file."""

    proc: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int
    data_dir: Path
    log: Path
    ae_title: str = "VESALIUS"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def server_pids(self) -> list[int]:
        """The main process and its workers (not multiprocessing's resource tracker)."""
        pids = []
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if b"resource_tracker" not in cmd:
                pids.append(pid)
        return pids

    def rss_mb(self) -> float:
        """Resident memory of the main process and its workers, in MiB."""
        return sum(rss_mb(pid) for pid in self.server_pids())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_ready(served: Served, timeout: float = 60, path: str = "/health") -> None:
    """Poll ``path`` until it answers (any status): the HTTP side, and so the process, is up."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if not served.alive():
                raise AssertionError(f"server exited early:\n{served.log_text()}")
            with contextlib.suppress(httpx.TransportError):
                client.get(served.url + path)
                return
            time.sleep(0.05)
    raise AssertionError(f"server did not start:\n{served.log_text()}")


def write_config(path: Path, settings: Mapping[str, Any]) -> None:
    """A TOML settings file from dotted keys (``{"dicom.port": 0}``)."""
    tables: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in settings.items():
        if "." in key:
            table, name = key.rsplit(".", 1)
            tables.setdefault(table, {})[name] = value
        else:
            top[key] = value
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for table, entries in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in entries.items())
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def serve(
    tmp_path: Path,
    settings: Mapping[str, Any] | None = None,
    *,
    ready: bool = True,
    rlimit_nofile: tuple[int, int] | None = None,
    command_prefix: Sequence[str] = (),
) -> Iterator[Served]:
    """Run ``vesalius serve`` on free ports with ``settings``; stop it (SIGTERM) afterwards.

    ``rlimit_nofile`` (soft, hard) starts it with that open-file limit; ``command_prefix``
    runs it under another command (e.g. ``unshare``), which must exec it.
    """
    dicom_port, http_port = free_port(), free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    config = tmp_path / "vesalius.toml"
    values: dict[str, Any] = {
        "data_dir": str(data),
        "dicom.host": "127.0.0.1",
        "dicom.port": dicom_port,
        "http.port": http_port,
        "storage.min_free_mb": 0,
        **PERMISSIVE,
        **(settings or {}),
    }
    write_config(config, values)
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VESALIUS_")}

    def limit_files() -> None:
        if rlimit_nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, rlimit_nofile)

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *command_prefix,
                sys.executable,
                "-m",
                "vesalius.cli",
                "serve",
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=limit_files if rlimit_nofile is not None else None,
        )
    ae_title = str(values.get("dicom.ae_title", "VESALIUS"))
    ports = int(values["dicom.port"]), int(values["http.port"])
    served = Served(proc, *ports, Path(values["data_dir"]), log, ae_title)
    try:
        if ready:
            wait_ready(served)
        yield served
    finally:
        served.stop()
        with contextlib.suppress(OSError):  # anything left of its process group
            os.killpg(proc.pid, signal.SIGKILL)
