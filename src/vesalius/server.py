"""Wiring: settings → archive → DIMSE and HTTP servers, in the main process and in each worker
process (:func:`worker_main`). Nothing imports this module but ``cli`` and the workers' spawn."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

from vesalius.dimse.server import DimseServer, listen
from vesalius.errors import ConfigError
from vesalius.processes import (
    LoadBoard,
    LoadSlot,
    WorkerPool,
    die_with_parent,
    raise_descriptor_limit,
    worker_count,
)
from vesalius.settings import Settings
from vesalius.telemetry import metrics, tracing
from vesalius.telemetry import shared as shared_metrics
from vesalius.web.serving import bind_http, http_server
from vesalius.wiring import (
    assemble,
    dimse_config,
    http_app,
    http_limits,
    job_runner,
    runs_jobs,
)

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pynetdicom only decodes PDUs for the server; what it would log there (with a traceback)
    # about a malformed request, the server reports in one line of its own.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def worker_main(
    settings: Settings,
    listener: socket.socket,
    grace: float,
    ready: Any,
    load: LoadSlot,
    http_socket: socket.socket | None,
    parent_pid: int,
) -> None:
    """Entry point of a worker process (``dimse/workers.py``): DIMSE on ``listener``, HTTP on
    ``http_socket``, until SIGTERM or the main process's death; then it drains its
    associations for ``grace`` seconds."""
    logging.basicConfig(
        level=str(settings["log_level"]).upper(),
        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    if settings["metrics.enabled"]:
        metrics.enable()  # in the folder the main process named (telemetry/shared.py)
    if settings["tracing.otlp_endpoint"]:
        tracing.configure(settings["tracing.otlp_endpoint"])
    done = threading.Event()
    http = None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop

    def on_sigterm(*_: Any) -> None:
        done.set()
        if http is not None:
            http.should_exit = True  # uvicorn checks this between its ticks

    signal.signal(signal.SIGTERM, on_sigterm)
    die_with_parent(parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
    archive = assemble(settings).archive
    dimse = DimseServer(archive, dimse_config(settings), load=load)
    dimse.start(listener)
    runner = job_runner(archive, settings) if runs_jobs(settings, main_process=False) else None
    if runner is not None:
        runner.start()
    try:
        if http_socket is not None:
            # uvicorn takes SIGTERM over while it runs (HttpServer: it only asks to exit).
            http = http_server(
                http_app(archive, settings), http_limits(settings), ignore_sigint=True
            )
            ready.set()
            if not done.is_set():
                http.run(sockets=[http_socket])
        else:
            ready.set()
            done.wait()
    finally:
        if os.getppid() != parent_pid:
            log.warning("the main process %d is gone: stopping this worker", parent_pid)
        if runner is not None:
            runner.stop()
        dimse.stop(grace)
        archive.close()


def serve(settings: Settings) -> None:
    """Run the PACS until SIGINT/SIGTERM, then shut down cleanly."""
    configure_logging(settings["log_level"])
    raise_descriptor_limit()  # before the workers start: they inherit it
    archive = assemble(settings).archive
    processes = worker_count(settings)
    board = LoadBoard(processes)
    dimse = DimseServer(archive, dimse_config(settings), load=board.slot(0))
    host, port = settings["dicom.host"], settings["dicom.port"]
    try:
        listener = listen(host, port)
    except OSError as exc:
        archive.close()
        raise ConfigError(f"cannot listen for DIMSE on {host}:{port}: {exc.strerror}") from exc
    http_host, http_port = settings["http.host"], settings["http.port"]
    try:
        http_socket = bind_http(http_host, http_port)
    except OSError as exc:
        listener.close()
        archive.close()
        raise ConfigError(
            f"cannot listen for HTTP on {http_host}:{http_port}: {exc.strerror}"
        ) from exc
    if settings["metrics.enabled"]:
        shared_metrics.create()  # before the workers start: they inherit its name
        metrics.enable()
    if settings["tracing.otlp_endpoint"]:
        tracing.configure(settings["tracing.otlp_endpoint"])
    dimse.start(listener)
    workers = WorkerPool(worker_main, settings, listener, processes - 1, board, http_socket)
    workers.on_death = shared_metrics.process_died
    workers.start()
    runner = job_runner(archive, settings)
    runner.start()
    http = http_server(http_app(archive, settings), http_limits(settings))
    log.info(
        "Vesalius ready: DIMSE %s on port %d, HTTP on http://%s:%d, data in %s",
        settings["dicom.ae_title"],
        dimse.port,
        settings["http.host"],
        settings["http.port"],
        settings.data_dir.resolve(),
    )
    try:
        http.run(sockets=[http_socket])  # returns on SIGINT/SIGTERM (uvicorn's handlers)
    finally:
        log.info("shutting down: draining associations")
        runner.stop()
        workers.stop()
        dimse.stop()
        archive.close()
        log.info("stopped")
