"""The servers under test, each a subprocess on free loopback ports with its own data folder.

* :class:`Vesalius`: ``python -m vesalius.cli serve`` configured by ``VESALIUS_*`` variables;
* :class:`Orthanc`: Debian's ``Orthanc`` with a generated JSON configuration and the DICOMweb
  plugin, no authentication;
* :class:`StoreScp`: DCMTK's ``storescp --bit-preserving -od DIR``, files and no index: the
  near-physical limit for ingest.

Readiness is polled (HTTP and the DIMSE port), never slept for. DCMTK tools and Orthanc get
``TCP_NODELAY=1`` in their environment (DCMTK otherwise waits on delayed ACKs). Peak resident
memory is the kernel's VmHWM, reset by writing ``5`` to ``/proc/PID/clear_refs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx

from bench.tools import dcmtk_tool, require_dcmtk

LOOPBACK = "127.0.0.1"
DEST_AE = "BENCHDEST"


class ServerError(RuntimeError):
    """A server could not start, or died."""


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0


def dcmtk_env() -> dict[str, str]:
    """The environment for DCMTK tools and Orthanc: TCP_NODELAY on."""
    return {**os.environ, "TCP_NODELAY": "1"}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; raise :class:`ServerError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise ServerError(f"timed out after {timeout:.0f} s waiting for {what}")
        pause.wait(0.02)


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/PID/task/TID/children``)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def plugin_path(package: str = "orthanc-dicomweb") -> Path | None:
    """The shared library a Debian Orthanc plugin package installs (``dpkg -L``)."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", package], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return None
    libraries = [Path(line) for line in listing.splitlines() if line.endswith(".so")]
    libraries.sort(key=lambda p: "/plugins/" not in str(p))  # prefer the plugins folder
    return next((p for p in libraries if p.exists()), None)


class Server(ABC):
    """A server process: start, wait until ready, measure, stop, remove its data."""

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    ae_title: ClassVar[str] = ""

    def __init__(
        self, workdir: Path, destinations: Mapping[str, int] | None = None, **options: Any
    ) -> None:
        self.workdir = workdir
        self.destinations = dict(destinations or {})
        self.options = options
        self.dicom_port = int(options.get("port") or free_port())
        self.http_port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.idle_rss_mib: float | None = None
        self._log: Any = None

    # -- what subclasses provide --------------------------------------------------------------

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this server cannot run here, or None."""
        return None

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start the server."""

    def ready(self) -> bool:
        return port_open(self.dicom_port)

    @abstractmethod
    def instance_count(self) -> int:
        """How many instances the server holds now."""

    @property
    def measurable(self) -> bool:
        """Whether the one process's VmHWM covers all the work (not so with forked children)."""
        return True

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError(f"{self.label} is not running")
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        argv, env = self.command()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def check() -> bool:
            if not self.alive():
                raise ServerError(f"{self.label} exited at start:\n{self.log_tail()}")
            return self.ready()

        try:
            wait_for(check, timeout, f"{self.label} to accept connections")
        except BaseException:
            self.stop()
            raise
        self.idle_rss_mib = self.rss_mib()

    def stop(self, remove: bool = True) -> None:
        """SIGTERM the process group we started, wait, SIGKILL if needed; remove the data."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None
        if remove and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- memory -------------------------------------------------------------------------------

    def reset_peak(self) -> None:
        """Reset the peak RSS (VmHWM) of the server and its child processes to their current
        RSS (``clear_refs`` value 5)."""
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_mib(self) -> float | None:
        """Peak RSS since the last reset, MiB, summed over the server's processes (Vesalius's
        DIMSE worker processes; an upper bound of their simultaneous peak); None when forked
        per-association children did the work."""
        if not self.measurable:
            return None
        peaks = [_status_kib(pid, "VmHWM") for pid in process_tree(self.pid)]
        found = [kib for kib in peaks if kib is not None]
        return sum(found) / 1024 if found else None

    def rss_mib(self) -> float | None:
        found = [_status_kib(pid, "VmRSS") for pid in process_tree(self.pid)]
        kib = [k for k in found if k is not None]
        return sum(kib) / 1024 if kib else None


class Vesalius(Server):
    """``python -m vesalius.cli serve`` with SQLite (default) or a given database URL."""

    kind = "vesalius"
    label = "Vesalius"
    ae_title = "VESALIUS"

    def __init__(
        self, workdir: Path, destinations: Mapping[str, int] | None = None, **options: Any
    ) -> None:
        super().__init__(workdir, destinations, **options)
        self.http_port = free_port()
        self.users: dict[str, str] = dict(options.get("users") or {})
        self.auth = next(iter(self.users.items()), None)
        if options.get("tls_certificate"):  # scenario 11: DIMSE over TLS on a second port
            self.options["tls_port"] = free_port()

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VESALIUS_")}
        env.update(
            {
                "VESALIUS_DATA_DIR": str(self.data_dir),
                "VESALIUS_DICOM_HOST": LOOPBACK,
                "VESALIUS_DICOM_PORT": str(self.dicom_port),
                "VESALIUS_DICOM_AE_TITLE": self.ae_title,
                "VESALIUS_HTTP_HOST": LOOPBACK,
                "VESALIUS_HTTP_PORT": str(self.http_port),
                "VESALIUS_STORAGE_MIN_FREE_MB": "0",
                "VESALIUS_LOG_LEVEL": "warning",
                # The scenarios query and retrieve from AE titles of their own (BENCHFIND,
                # DCMTK's defaults), unknown to the server, as the other servers allow.
                "VESALIUS_DICOM_UNKNOWN_CALLER_PERMISSIONS": "all",
                "TCP_NODELAY": "1",
            }
        )
        if self.options.get("database_url"):
            env["VESALIUS_DATABASE_URL"] = str(self.options["database_url"])
        if self.options.get("tls_certificate"):
            env["VESALIUS_TLS_CERTIFICATE"] = str(self.options["tls_certificate"])
            env["VESALIUS_TLS_PRIVATE_KEY"] = str(self.options["tls_private_key"])
            env["VESALIUS_DICOM_TLS_PORT"] = str(self.options["tls_port"])
        for ae, port in self.destinations.items():
            env[f"VESALIUS_MODALITY_{ae}"] = f"{ae}@{LOOPBACK}:{port}"
        env.update(self.options.get("env") or {})  # scenario 12: auth.required
        return [sys.executable, "-m", "vesalius.cli", "serve"], env

    def ready(self) -> bool:
        try:
            answer = httpx.get(f"http://{LOOPBACK}:{self.http_port}/health", timeout=1)
        except httpx.TransportError:
            return False
        # No TCP probe of the DIMSE port: serve() listens for DIMSE before HTTP.
        return answer.status_code == 200

    def instance_count(self) -> int:
        storage = self.data_dir / "storage"
        return sum(
            1
            for path in storage.rglob("*")
            if path.is_file() and "staging" not in path.relative_to(storage).parts
        )


class Orthanc(Server):
    """Debian's Orthanc with the DICOMweb plugin and a generated configuration.

    Defaults are Orthanc's own except: no authentication, Find/Move/Get allowed from any AE,
    ``SyncStorageArea`` off (Vesalius does not fsync by default either), no saved jobs. With
    ``users={name: password}`` its HTTP side (REST and DICOMweb) needs HTTP Basic as one of
    them (``AuthenticationEnabled``, ``RegisteredUsers``).
    """

    kind = "orthanc"
    label = "Orthanc"
    ae_title = "ORTHANC"

    def __init__(
        self, workdir: Path, destinations: Mapping[str, int] | None = None, **options: Any
    ) -> None:
        super().__init__(workdir, destinations, **options)
        self.http_port = free_port()
        self.users: dict[str, str] = dict(options.get("users") or {})
        self.auth = next(iter(self.users.items()), None)

    @staticmethod
    def executable() -> str | None:
        return shutil.which("Orthanc") or (
            "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
        )

    @classmethod
    def unavailable(cls) -> str | None:
        if cls.executable() is None:
            return "Orthanc is not installed (Debian package orthanc)"
        if plugin_path() is None:
            return "the Orthanc DICOMweb plugin is not installed (orthanc-dicomweb)"
        return None

    def config(self) -> dict[str, Any]:
        plugin = plugin_path()
        return {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalities": {ae: [ae, LOOPBACK, port] for ae, port in self.destinations.items()},
            "SyncStorageArea": False,
            "SaveJobs": False,
            "Plugins": [str(plugin)] if plugin else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }

    def command(self) -> tuple[list[str], dict[str, str]]:
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        exe = self.executable()
        if exe is None:
            raise ServerError("Orthanc is not installed")
        return [exe, str(path)], dcmtk_env()

    def ready(self) -> bool:
        try:
            answer = httpx.get(
                f"http://{LOOPBACK}:{self.http_port}/system", timeout=1, auth=self.auth
            )
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and port_open(self.dicom_port)

    def instance_count(self) -> int:
        answer = httpx.get(
            f"http://{LOOPBACK}:{self.http_port}/statistics", timeout=30, auth=self.auth
        )
        answer.raise_for_status()
        return int(answer.json()["CountInstances"])


class StoreScp(Server):
    """DCMTK's storescp writing what it receives as files (``--bit-preserving``), no index.

    With ``fork=True`` each association runs in a forked child (concurrent associations); the
    parent's VmHWM then says nothing about the work, so peak memory is not reported.
    """

    kind = "storescp"
    label = "DCMTK storescp"
    ae_title = "STORESCP"

    @classmethod
    def unavailable(cls) -> str | None:
        if dcmtk_tool("storescp") is None:
            return "DCMTK is not installed (Debian package dcmtk)"
        return None

    @property
    def output_dir(self) -> Path:
        return self.workdir / "received"

    @property
    def measurable(self) -> bool:
        return not self.options.get("fork", False)

    def command(self) -> tuple[list[str], dict[str, str]]:
        self.output_dir.mkdir()
        argv = [
            require_dcmtk("storescp"),
            "--bit-preserving",
            "-aet",
            str(self.options.get("ae", self.ae_title)),
        ]
        if self.options.get("fork"):
            argv.append("--fork")
        argv += ["-od", str(self.output_dir), str(self.dicom_port)]
        return argv, dcmtk_env()

    def instance_count(self) -> int:
        return sum(1 for p in self.output_dir.rglob("*") if p.is_file())

    def clear(self, discard: Callable[[Path], None]) -> None:
        """Hand the folder of received files to ``discard`` (:meth:`Pool.discard`) and start
        an empty one (between runs, while idle)."""
        discard(self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def received_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.output_dir.rglob("*") if p.is_file())


SERVER_TYPES: dict[str, type[Server]] = {cls.kind: cls for cls in (Vesalius, Orthanc, StoreScp)}


#: Below this much free disk, :meth:`Pool.discard` deletes at once.
TRASH_MIN_FREE = 10 << 30


class Pool:
    """Running servers for the scenarios: fresh ones (empty), and ones holding a corpus.

    Every server is configured with the same C-MOVE destination (``DEST_AE`` on
    ``dest_port``), so a server loaded by one scenario serves a later retrieve scenario.
    """

    def __init__(self, workdir: Path, keep: bool = False, background_stop: bool = False) -> None:
        self.workdir = workdir
        self.keep = keep
        self.background_stop = background_stop
        #: Data of stopped servers and cleared folders, removed by :meth:`close`.
        self.trash = workdir / "trash"
        self._stopping: list[threading.Thread] = []
        self.dest_port = free_port()
        self._counter = 0
        self._loaded: dict[tuple[str, str], Server] = {}
        self._running: list[Server] = []

    def fresh(self, kind: str, **options: Any) -> Server:
        """Start an empty server of this kind."""
        self._counter += 1
        server = SERVER_TYPES[kind](
            self.workdir / f"{self._counter:03d}-{kind}",
            destinations={DEST_AE: self.dest_port},
            **options,
        )
        server.start()
        self._running.append(server)
        return server

    def release(self, server: Server) -> None:
        """Stop a server and remove its data; in the background when ``background_stop``
        (quick runs: shutdowns then overlap the next measurement)."""
        if server in self._running:
            self._running.remove(server)
        if self.background_stop:
            thread = threading.Thread(target=self._stop, args=(server,))
            thread.start()
            self._stopping.append(thread)
        else:
            self._stop(server)

    def _stop(self, server: Server) -> None:
        server.stop(remove=False)
        if not self.keep:
            self.discard(server.workdir)

    def discard(self, path: Path) -> None:
        """Set ``path`` aside for removal when the run ends (a rename, no file is deleted).

        Deleting thousands of files slows the creation of files for minutes afterwards on a
        filesystem without a journal, such as this machine's (ext4 then skips recently freed
        inodes one by one: a quarter of a server's CPU time in the next ingest, measured with
        perf), which would tax whichever server runs next."""
        if not path.exists():
            return
        if shutil.disk_usage(self.workdir).free < TRASH_MIN_FREE:
            shutil.rmtree(path, ignore_errors=True)  # the disk comes first
            return
        self.trash.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        path.rename(self.trash / f"{self._counter:04d}-{path.name}")

    def adopt(self, corpus: str, server: Server) -> None:
        """Keep ``server`` running as the one of its kind holding ``corpus``."""
        key = (server.kind, corpus)
        previous = self._loaded.get(key)
        if previous is not None and previous is not server:
            self.release(previous)
        self._loaded[key] = server

    def loaded(self, kind: str, corpus: str) -> Server | None:
        server = self._loaded.get((kind, corpus))
        if server is not None and not server.alive():
            del self._loaded[(kind, corpus)]
            return None
        return server

    def release_loaded(self) -> None:
        for key in list(self._loaded):
            self.release(self._loaded.pop(key))

    def close(self) -> None:
        self._loaded.clear()
        for server in list(self._running):
            self.release(server)
        for thread in self._stopping:
            thread.join()
        self._stopping.clear()
        shutil.rmtree(self.trash, ignore_errors=True)
