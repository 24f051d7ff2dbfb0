"""Wiring: settings → archive → DIMSE and HTTP servers. Nothing imports this module."""

from __future__ import annotations

import logging

import uvicorn

from vesalius.dimse.server import DimseServer
from vesalius.services.archive import Archive
from vesalius.settings import Settings
from vesalius.web.app import create_app

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def serve(settings: Settings) -> None:
    """Run the PACS until SIGINT/SIGTERM, then shut down cleanly."""
    configure_logging(settings["log_level"])
    archive = Archive.open(settings)
    dimse = DimseServer(archive)
    dimse.start()
    config = uvicorn.Config(
        create_app(archive),
        host=settings["http.host"],
        port=settings["http.port"],
        log_level="warning",
        lifespan="off",
    )
    http = uvicorn.Server(config)
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
        dimse.stop()
        archive.close()
        log.info("stopped")
