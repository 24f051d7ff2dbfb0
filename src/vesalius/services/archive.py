"""The archive: one object holding the services, built from settings (see ``server.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vesalius.index.catalog import Catalog
from vesalius.services.ingest import IngestService
from vesalius.services.metadata import MetadataService
from vesalius.services.query import QueryService
from vesalius.services.retrieve import RetrieveService
from vesalius.settings import Settings
from vesalius.storage import FolderStorage

log = logging.getLogger(__name__)


@dataclass
class Archive:
    """What every protocol adapter talks to."""

    settings: Settings
    catalog: Catalog
    storage: FolderStorage
    ingest: IngestService
    retrieve: RetrieveService
    query: QueryService
    metadata: MetadataService

    @classmethod
    def open(cls, settings: Settings) -> Archive:
        """Open (and migrate) the index and the storage named by ``settings``."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        catalog = Catalog.open(settings.database_url)
        storage = FolderStorage(settings.data_dir / "storage", fsync=settings["storage.fsync"])
        recovered = storage.recover_staging()
        if recovered.removed:
            log.warning("staging: %s", recovered.describe())
        if recovered.kept:
            log.debug("staging: %d file(s) of running processes left alone", recovered.kept)
        ingest = IngestService(
            catalog,
            storage,
            duplicate_policy=settings["ingest.duplicate_policy"],
            min_free_bytes=settings["storage.min_free_mb"] * 1024 * 1024,
            max_inflated_bytes=settings["ingest.max_inflated_mb"] << 20,
        )
        retrieve = RetrieveService(catalog, storage)
        query = QueryService(
            catalog,
            ae_title=settings["dicom.ae_title"],
            case_insensitive_pn=settings["query.case_insensitive_pn"],
            max_results=settings["query.max_results"],
        )
        metadata = MetadataService(catalog, storage)
        return cls(settings, catalog, storage, ingest, retrieve, query, metadata)

    def close(self) -> None:
        self.storage.close()
        self.catalog.close()
