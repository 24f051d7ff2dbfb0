"""Wiring: settings → archive → DIMSE and HTTP servers. Nothing imports this module."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from vesalius.dimse.server import DimseServer, listen
from vesalius.dimse.workers import LoadBoard, WorkerPool, worker_count
from vesalius.errors import ConfigError
from vesalius.services.archive import Archive
from vesalius.settings import Settings
from vesalius.web.app import create_app

log = logging.getLogger(__name__)


class _HttpServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its own shutdown, which would kill the process
    before the DIMSE side drains; here a signal only asks the server to exit."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def serve(settings: Settings) -> None:
    """Run the PACS until SIGINT/SIGTERM, then shut down cleanly."""
    configure_logging(settings["log_level"])
    archive = Archive.open(settings)
    processes = worker_count(settings)
    board = LoadBoard(processes)
    dimse = DimseServer(archive, load=board.slot(0))
    host, port = settings["dicom.host"], settings["dicom.port"]
    try:
        listener = listen(host, port)
    except OSError as exc:
        archive.close()
        raise ConfigError(f"cannot listen for DIMSE on {host}:{port}: {exc.strerror}") from exc
    dimse.start(listener)
    workers = WorkerPool(settings, listener, processes - 1, board)
    workers.start()
    config = uvicorn.Config(
        create_app(archive),
        host=settings["http.host"],
        port=settings["http.port"],
        log_level="warning",
        lifespan="off",
    )
    http = _HttpServer(config)
    log.info(
        "Vesalius ready: DIMSE %s on port %d, HTTP on http://%s:%d, data in %s",
        settings["dicom.ae_title"],
        dimse.port,
        settings["http.host"],
        settings["http.port"],
        settings.data_dir.resolve(),
    )
    try:
        http.run()  # returns on SIGINT/SIGTERM (uvicorn installs the handlers)
    finally:
        log.info("shutting down: draining associations")
        workers.stop()
        dimse.stop()
        archive.close()
        log.info("stopped")
