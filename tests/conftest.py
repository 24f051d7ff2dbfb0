"""Shared fixtures: a real Vesalius DIMSE server on an ephemeral port, over SQLite and PostgreSQL.

Every test that takes ``server`` runs twice, once per index backend (``SQLITE_ONLY`` keeps a
test whose behaviour does not depend on it to SQLite). PostgreSQL tests create and
drop their own database on 127.0.0.1:5432 (override with ``VESALIUS_TEST_PG``); where no
PostgreSQL answers they skip, unless ``VESALIUS_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which
turns the skip into a failure.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench.tools import dcmtk_tool
from sqlalchemy import create_engine, text

from vesalius.dimse.server import DimseServer
from vesalius.index.catalog import Catalog
from vesalius.services.archive import Archive
from vesalius.services.audit import AUDIT_LOGGER, Auditor
from vesalius.services.policy import Policy
from vesalius.settings import Modality, Settings, load_settings
from vesalius.storage import BlobStorage, Spool, Stores
from vesalius.web.serving import bind_http, http_server
from vesalius.wiring import (
    Assembly,
    assemble,
    dimse_config,
    dimse_tls,
    http_app,
    http_limits,
)

PG_ADMIN_URL = os.environ.get(
    "VESALIUS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("VESALIUS_REQUIRE_POSTGRES") == "1"

#: Tests call Vesalius from arbitrary AE titles (DCMTK's, pynetdicom's): unknown callers may do
#: everything unless a test is about permissions (tests/test_remote_aes.py sets its own). Set
#: for the servers the tests spawn (inherited) and the ones they build in process.
PERMISSIVE = {"dicom.unknown_caller_permissions": "all"}
os.environ.setdefault("VESALIUS_DICOM_UNKNOWN_CALLER_PERMISSIONS", "all")


@functools.cache
def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: no PostgreSQL here
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"


@contextmanager
def scratch_database(backend: str, folder: Path) -> Iterator[str]:
    """An empty index database URL on ``backend`` ("sqlite" or "postgresql"), dropped after;
    skips where no PostgreSQL answers unless VESALIUS_REQUIRE_POSTGRES=1."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'index.sqlite'}"
        return
    reason = _pg_available()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"vesalius_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


#: For tests whose behaviour does not depend on the index backend (the browser tests' page
#: flows: the API tests cover both backends under the pages): ``database_url`` and the
#: ``server`` and ``web`` fixtures over it on SQLite only. A module applies it with
#: ``pytestmark = SQLITE_ONLY``, a test with ``@SQLITE_ONLY``.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty index database URL for each backend."""
    with scratch_database(request.param, tmp_path) as url:
        yield url


@dataclass
class RunningServer:
    """A Vesalius archive with its DIMSE server listening on 127.0.0.1:``port``."""

    archive: Archive
    dimse: DimseServer
    ae_title: str
    port: int
    data_dir: Path
    assembly: Assembly

    @property
    def catalog(self) -> Catalog:
        return self.assembly.catalog

    @property
    def spool(self) -> Spool:
        return self.assembly.spool

    @property
    def stores(self) -> Stores:
        return self.assembly.stores

    @property
    def settings(self) -> Settings:
        return self.assembly.settings

    @property
    def address(self) -> list[str]:
        """``["-aec", AET, "127.0.0.1", PORT]`` for DCMTK command lines."""
        return ["-aec", self.ae_title, "127.0.0.1", str(self.port)]

    def stored_files(self) -> list[Path]:
        return sorted((self.data_dir / "storage" / "blobs").rglob("*.dcm"))

    def staging_files(self) -> list[Path]:
        """Files in staging, other than the empty ones made ahead of need."""
        spare = self.spool.spare_files()
        folder = self.data_dir / "storage" / "staging"
        return sorted(p for p in folder.iterdir() if p.is_file() and p not in spare)


def run_cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``vesalius ARGS`` run in this process by click's runner, with no VESALIUS_* variable of
    the test run but those of ``env``, and ``input`` as its standard input (a subprocess costs
    a second of Python start-up per command; what the command does is the same). Tests of
    signals and of the process itself run the real process instead."""
    from click.testing import CliRunner

    from vesalius.cli import main

    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("VESALIUS_")}
    unset.update(env or {})
    # A command sets up logging as a process of its own would (the audit logger to its
    # stderr, which the runner closes afterwards): put it back for the tests that follow.
    loggers = [logging.getLogger(), logging.getLogger(AUDIT_LOGGER)]
    saved = [(each, list(each.handlers), each.propagate, each.level) for each in loggers]
    try:
        result = CliRunner().invoke(main, list(args), input=input, env=unset)
    finally:
        for each, handlers, propagate, level in saved:
            for handler in list(each.handlers):
                if handler not in handlers:
                    each.removeHandler(handler)
                    handler.close()
            each.propagate = propagate
            each.setLevel(level)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def config_for(server: RunningServer, tmp_path: Path) -> Path:
    """A settings file naming the running server's data folder and index (for commands run
    against it)."""
    settings = server.settings
    config = tmp_path / "vesalius.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\ndatabase_url = "{settings["database_url"]}"\n'
        "[storage]\nmin_free_mb = 0\n"
    )
    return config


def make_server(
    data_dir: Path,
    database_url: str,
    modalities: dict[str, Modality] | None = None,
    *,
    policy: Policy | None = None,
    auditor: Auditor | None = None,
    store: BlobStorage | None = None,
    **overrides: object,
) -> RunningServer:
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(data_dir),
            "database_url": database_url,
            "dicom.port": 0,
            "dicom.host": "127.0.0.1",
            "storage.min_free_mb": 0,
            **PERMISSIVE,
            **overrides,
        },
    )
    if modalities:
        settings = type(settings)(settings.values, modalities)
    assembly = assemble(settings, policy=policy, auditor=auditor, store=store)
    dimse = DimseServer(assembly.archive, dimse_config(settings), tls=dimse_tls(settings))
    dimse.start()
    return RunningServer(
        assembly.archive, dimse, settings["dicom.ae_title"], dimse.port, data_dir, assembly
    )


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    """A fresh archive and DIMSE server for one test, on each index backend."""
    running = make_server(tmp_path / "data", database_url)
    try:
        yield running
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


@dataclass
class WebServer:
    """A running archive with both its DIMSE server and its HTTP server (``url``, no slash)."""

    dimse: RunningServer
    url: str

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    @property
    def archive(self) -> Archive:
        return self.dimse.archive

    @property
    def catalog(self) -> Catalog:
        return self.dimse.catalog


@contextmanager
def running_http(archive: Archive, settings: Settings) -> Iterator[str]:
    """Serve ``create_app(archive)`` on an ephemeral port as ``vesalius serve`` does (uvicorn
    with the guarded protocol of ``web/serving.py``); yield its base URL."""
    listener = bind_http("127.0.0.1", 0)
    port = listener.getsockname()[1]
    http = http_server(http_app(archive, settings), http_limits(settings))
    thread = threading.Thread(
        target=http.run, kwargs={"sockets": [listener]}, name="test-http", daemon=True
    )
    thread.start()
    try:
        wait_until(lambda: http.started, what="HTTP server start")
        yield f"http://127.0.0.1:{port}"
    finally:
        http.should_exit = True
        thread.join(10)
        listener.close()


@pytest.fixture
def web(server: RunningServer) -> Iterator[WebServer]:
    """A fresh archive serving DIMSE and HTTP, on each index backend."""
    with running_http(server.archive, server.settings) as url:
        yield WebServer(server, url)


def wait_until(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.02)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    wait_until(lambda: port_open(port), timeout, f"port {port}")


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dcmtk(
    tool: str, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK command-line tool with TCP_NODELAY=1 (DCMTK otherwise waits on delayed ACKs)."""
    exe = dcmtk_tool(tool)
    if exe is None:
        pytest.fail(f"{tool} not found: install Debian's dcmtk package")
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{tool} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
