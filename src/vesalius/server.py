"""Wiring: settings → archive → DIMSE and HTTP servers, in the main process and in each worker
process (:func:`worker_main`). Nothing imports this module but ``cli`` and the workers' spawn."""

from __future__ import annotations

import getpass
import logging
import os
import signal
import socket
import threading
from typing import Any

from vesalius import logs, tls
from vesalius.dimse.server import DimseServer, listen
from vesalius.errors import ListenError
from vesalius.identity import Identity
from vesalius.processes import (
    LoadBoard,
    LoadSlot,
    WorkerPool,
    die_with_parent,
    raise_descriptor_limit,
    worker_count,
)
from vesalius.reload import Reloader, SettingsSource, on_sighup
from vesalius.services.archive import Archive
from vesalius.settings import Settings
from vesalius.shutdown import Shutdown
from vesalius.startup import check_archive
from vesalius.systemd import notify
from vesalius.telemetry import metrics, tracing
from vesalius.telemetry import shared as shared_metrics
from vesalius.web.serving import bind_http, http_server
from vesalius.wiring import (
    assemble,
    auth_required,
    dimse_config,
    dimse_tls,
    http_app,
    http_limits,
    http_tls,
    job_runner,
    runs_jobs,
)

log = logging.getLogger(__name__)

#: Seconds a worker has, past the grace period, to send its A-ABORTs and exit before it is killed.
WORKER_MARGIN = 5.0


def worker_main(
    settings: Settings,
    listener: socket.socket | None,
    grace: float,
    ready: Any,
    load: LoadSlot,
    http_socket: socket.socket | None,
    parent_pid: int,
    log_setup: logs.WorkerLogging,
    source: SettingsSource | None = None,
    tls_listener: socket.socket | None = None,
) -> None:
    """Entry point of a worker process (``vesalius/processes.py``): DIMSE on ``listener`` (and
    over TLS on ``tls_listener``), HTTP on ``http_socket``, until SIGTERM or the main
    process's death; then it drains for ``grace`` seconds (``vesalius/shutdown.py``). SIGHUP
    re-reads ``source`` for the log level and the certificates."""
    logs.configure_worker(log_setup)
    if settings["metrics.enabled"]:
        metrics.enable()  # in the folder the main process named (telemetry/shared.py)
    if settings["tracing.otlp_endpoint"]:
        tracing.configure(settings["tracing.otlp_endpoint"])
    done = threading.Event()
    http = None
    shutdown = Shutdown(grace, announce=False)  # the main process says it
    shutdown.on_begin(done.set)
    shutdown.catch_signals()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    if source is not None:
        on_sighup(Reloader(source, settings))
    else:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    die_with_parent(parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
    archive = assemble(settings).archive
    dimse = DimseServer(archive, dimse_config(settings), load=load, tls=dimse_tls(settings))
    dimse.start(listener, tls_listener)
    secure_http = http_tls(settings)
    tls.watch()
    shutdown.on_begin(dimse.drain)
    runner = job_runner(archive, settings) if runs_jobs(settings, main_process=False) else None
    if runner is not None:
        runner.start()
        shutdown.on_begin(runner.request_stop)
    try:
        if http_socket is not None:
            # uvicorn takes SIGTERM over while it runs (HttpServer: it only asks to exit, and
            # begins the drain of the rest).
            http = http_server(
                http_app(archive, settings),
                http_limits(settings),
                ignore_sigint=True,
                grace=grace,
                on_exit=shutdown.begin,
                tls=secure_http,
            )
            shutdown.on_begin(http.request_exit)  # a SIGTERM before uvicorn caught signals
            ready.set()
            if not shutdown.begun:
                http.run(sockets=[http_socket])
        else:
            ready.set()
            done.wait()
    finally:
        if os.getppid() != parent_pid:
            logs.detach(log_setup)  # the main process wrote the log
            log.warning("the main process %d is gone: stopping this worker", parent_pid)
        shutdown.begin()
        if runner is not None:
            runner.stop(shutdown.remaining())
        dimse.stop(shutdown.remaining())
        archive.close()


def _application_activity(
    archive: Archive, settings: Settings, kind: str, launcher: str = ""
) -> str:
    """Audit the server's start or stop (PS3.15 A.5.3.1 Application Activity), naming who
    launched it; returns that name."""
    try:
        launcher = launcher or getpass.getuser()
    except (KeyError, OSError):
        launcher = launcher or "unknown"
    archive.oversight.record(
        kind,
        Identity.system(),
        launcher=launcher,
        ae_title=settings["dicom.ae_title"],
        pid=os.getpid(),
    )
    return launcher


def _notify_stopping() -> None:
    """Tell systemd (Type=notify) that the drain has begun."""
    notify("STOPPING=1")


def serve(settings: Settings, source: SettingsSource | None = None) -> None:
    """Run the PACS until SIGINT/SIGTERM, then shut down cleanly (``vesalius/shutdown.py``);
    SIGHUP re-reads ``source`` (``vesalius/reload.py``)."""
    logging_ = logs.configure(settings)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reloader is in place
    grace = float(settings["shutdown_grace"])
    # Which archive, whether it is new, the data folder writable, the index reachable: in
    # the log's format; a problem ends the start with one line (fatal.py).
    try:
        check_archive(settings, create="serve", notify=log.log)
    except BaseException:
        logging_.stop()  # the lines so far first, then the error
        raise
    raise_descriptor_limit()  # before the workers start: they inherit it
    archive = assemble(settings).archive
    processes = worker_count(settings)
    board = LoadBoard(processes)
    try:  # the certificate and key load, or the start ends here (fatal.py, exit 78)
        dimse_secure, secure_http = dimse_tls(settings), http_tls(settings)
    except BaseException:
        archive.close()
        raise
    config = dimse_config(settings)
    dimse = DimseServer(archive, config, load=board.slot(0), tls=dimse_secure)
    host, port = settings["dicom.host"], settings["dicom.port"]
    listener = tls_listener = None
    keys = "dicom.host, dicom.port"
    try:
        if config.plain:
            listener = listen(host, port)
        if dimse_secure is not None:
            keys, port = "dicom.host, dicom.tls_port", config.tls_port
            tls_listener = listen(host, port)
    except OSError as exc:
        if listener is not None:
            listener.close()
        archive.close()
        raise ListenError.from_os_error("DIMSE", keys, host, port, exc) from exc
    http_host, http_port = settings["http.host"], settings["http.port"]
    try:
        http_socket = bind_http(http_host, http_port)
    except OSError as exc:
        for sock in (listener, tls_listener):
            if sock is not None:
                sock.close()
        archive.close()
        raise ListenError.from_os_error(
            "HTTP", "http.host, http.port", http_host, http_port, exc
        ) from exc
    shutdown = Shutdown(grace)
    shutdown.on_begin(_notify_stopping)
    shutdown.catch_signals()  # no longer killed by a SIGTERM while starting
    if settings["metrics.enabled"]:
        shared_metrics.create()  # before the workers start: they inherit its name
        metrics.enable()
    if settings["tracing.otlp_endpoint"]:
        tracing.configure(settings["tracing.otlp_endpoint"])
    # Audited before any port answers, and written at once, so the trail's first record of
    # this run is its start, before any worker's (PS3.15 A.5.3.1).
    launched = _application_activity(archive, settings, "application-start")
    if archive.audit.sink is not None:
        archive.audit.sink.flush()
    dimse.start(listener, tls_listener)
    tls.watch()
    shutdown.on_begin(dimse.drain)
    workers = WorkerPool(
        worker_main,
        settings,
        listener,
        processes - 1,
        board,
        http_socket,
        (logging_.for_workers, source, tls_listener),
    )
    workers.on_death = shared_metrics.process_died
    workers.start(grace)
    shutdown.on_begin(workers.begin_stop)
    runner = job_runner(archive, settings)
    runner.start()
    shutdown.on_begin(runner.request_stop)
    if source is not None:
        reloader = Reloader(source, settings, seed_peers=archive.peers.seed)
        on_sighup(reloader, then=lambda: workers.signal_all(signal.SIGHUP))
    http = http_server(
        http_app(archive, settings),
        http_limits(settings),
        grace=grace,
        on_exit=shutdown.begin,
        tls=secure_http,
    )
    shutdown.on_begin(http.request_exit)
    log.info(
        "Vesalius ready: DIMSE %s on port %s, HTTP on %s://%s:%d, data in %s",
        settings["dicom.ae_title"],
        " and ".join(
            f"{p}{' (TLS)' if tls_on else ''}"
            for p, tls_on in ((dimse.port, False), (dimse.tls_port, True))
            if p
        ),
        "https" if secure_http is not None else "http",
        settings["http.host"],
        settings["http.port"],
        settings.data_dir.resolve(),
    )
    if auth_required(settings) and not archive.accounts.has_users():
        log.warning(
            "authentication is on (auth.required) and no user exists yet: create the first "
            "administrator with `vesalius user add NAME --role admin`"
        )
    notify("READY=1")  # systemd Type=notify: both ports listen
    try:
        if not shutdown.begun:
            http.run(sockets=[http_socket])  # returns on SIGINT/SIGTERM (uvicorn's handlers)
    finally:
        shutdown.begin()  # when uvicorn returned for another reason
        shutdown.hold_signals()
        runner.stop(shutdown.remaining())
        dimse.stop(shutdown.remaining())
        # The workers' grace periods began with ours: a little more for their last aborts.
        workers.stop(shutdown.remaining() + WORKER_MARGIN)
        _application_activity(archive, settings, "application-stop", launched)
        archive.close()  # the audit trail's pending records are written first
        log.info("stopped")
        logging_.stop()
