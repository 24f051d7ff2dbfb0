"""Wiring: settings become parts (index, blob stores, spool), parts become services (the
:class:`~vesalius.services.archive.Archive`), and settings become the configuration of each
front door. ``server.py``, ``cli.py`` and the commands use this; nothing else imports it, and
nothing below it reads raw settings.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from vesalius.dicomweb.routes import dicomweb_routes
from vesalius.dicomweb.stow import UploadLimits
from vesalius.dimse.config import DimseConfig
from vesalius.dimse.sender import send_handler
from vesalius.index.catalog import Catalog
from vesalius.services.archive import Archive
from vesalius.services.audit import Auditor
from vesalius.services.deletion import DeleteService
from vesalius.services.events import EventBus
from vesalius.services.health import HealthService
from vesalius.services.ingest import IngestService
from vesalius.services.jobs import JobRunner, JobService
from vesalius.services.labels import AccessCache, LabelService
from vesalius.services.metadata import MetadataService
from vesalius.services.oversight import Oversight
from vesalius.services.peers import PeerDirectory
from vesalius.services.policy import Policy
from vesalius.services.query import QueryService
from vesalius.services.retrieve import RetrieveService
from vesalius.services.sending import KIND as SEND_JOB
from vesalius.services.sending import SendService
from vesalius.services.site_policy import CallerRules, SitePolicy
from vesalius.settings import Settings, parse_permissions
from vesalius.storage import FOLDER_STORE, BlobStorage, FolderStorage, Spool, Stores
from vesalius.telemetry.events import count_event
from vesalius.viewer.app import ViewerConfig, viewer_routes
from vesalius.web.host import HostConfig, create_host
from vesalius.web.serving import HttpLimits, connection_cap

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    """What :func:`assemble` built: the archive and the parts behind it (for the wiring, the
    commands that work on the index directly, and the tests)."""

    settings: Settings
    catalog: Catalog
    spool: Spool
    stores: Stores
    archive: Archive

    def close(self) -> None:
        self.archive.close()


def assemble(
    settings: Settings,
    *,
    auditor: Auditor | None = None,
    policy: Policy | None = None,
    store: BlobStorage | None = None,
) -> Assembly:
    """Open (and migrate) the index, the spool and the blob stores named by ``settings``,
    recover the spool, and build the archive's services over them (with ``policy``, default
    the site policy of :func:`site_policy`, and ``auditor``, default the audit log).

    ``store`` stands in for the folder store under the same id (tests: a store that is not a
    local file system)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(settings.database_url)
    stores = Stores({FOLDER_STORE: store or folder_store(settings)}, current=FOLDER_STORE)
    spool = Spool(settings.data_dir / "storage" / "staging")
    recovered = spool.recover()
    if recovered.removed:
        log.warning("staging: %s", recovered.describe())
    if recovered.kept:
        log.debug("staging: %d file(s) of running processes left alone", recovered.kept)
    events = EventBus()
    events.subscribe(auditor or Auditor())
    events.subscribe(count_event)  # metrics; a no-op unless telemetry.metrics is enabled
    access = AccessCache(catalog, ttl=settings["labels.cache_seconds"])
    oversight = Oversight(policy or site_policy(settings, access), events)
    labels = LabelService(catalog, access, oversight=oversight)
    min_free = settings["storage.min_free_mb"] << 20
    ingest = IngestService(
        catalog,
        spool,
        stores,
        oversight=oversight,
        duplicate_policy=settings["ingest.duplicate_policy"],
        min_free_bytes=min_free,
        max_inflated_bytes=settings["ingest.max_inflated_mb"] << 20,
        labeler=labels.labeler(),
    )
    query = QueryService(
        catalog,
        oversight=oversight,
        ae_title=settings["dicom.ae_title"],
        case_insensitive_pn=settings["query.case_insensitive_pn"],
        max_results=settings["query.max_results"],
    )

    def close() -> None:
        spool.close()
        stores.close()
        catalog.close()

    peers = PeerDirectory(catalog, oversight=oversight, changed=access.invalidate)
    peers.seed(settings.modalities)
    jobs = JobService(
        catalog,
        oversight=oversight,
        max_attempts=settings["jobs.max_attempts"],
        retry_after=settings["jobs.retry_after"],
        stale_after=settings["jobs.stale_after"],
    )

    archive = Archive(
        ingest=ingest,
        query=query,
        retrieve=RetrieveService(catalog, stores, oversight=oversight),
        metadata=MetadataService(catalog, stores, spool, oversight=oversight),
        health=HealthService(
            catalog,
            spool,
            stores,
            ae_title=settings["dicom.ae_title"],
            min_free_bytes=min_free,
            stale_after=settings["jobs.stale_after"],
        ),
        peers=peers,
        jobs=jobs,
        deletion=DeleteService(catalog, stores, oversight=oversight, jobs=jobs),
        sending=SendService(jobs, peers),
        oversight=oversight,
        labels=labels,
        closer=close,
    )
    jobs.register(SEND_JOB, send_handler(archive, dimse_config(settings)), "send")
    return Assembly(settings, catalog, spool, stores, archive)


def site_policy(settings: Settings, access: AccessCache) -> SitePolicy:
    """The policy of ``settings``: users by their roles, remote AEs by their peer permissions
    (``dicom.unknown_caller_permissions``, ``dicom.known_callers_only``,
    ``dicom.check_caller_host``), studies by access labels. An unauthenticated HTTP client
    (no authentication exists yet on this branch: the laptop defaults) acts as an admin."""
    return SitePolicy(
        access,
        CallerRules(
            unknown_permissions=parse_permissions(settings["dicom.unknown_caller_permissions"]),
            known_callers_only=settings["dicom.known_callers_only"],
            check_host=settings["dicom.check_caller_host"],
        ),
        anonymous_roles=frozenset({"admin"}),
    )


def folder_store(settings: Settings) -> FolderStorage:
    """The folder store under ``<data_dir>/storage`` (id :data:`FOLDER_STORE`); the spool
    lies beside it, in ``<data_dir>/storage/staging``, so moving a file in is a rename."""
    return FolderStorage(settings.data_dir / "storage", fsync=settings["storage.fsync"])


def runs_jobs(settings: Settings, *, main_process: bool) -> bool:
    """Whether a process runs a job runner: every process on PostgreSQL (claims skip each
    other's locked rows), only the main one on SQLite (one writer at a time anyway)."""
    return main_process or not settings.database_url.startswith("sqlite")


def job_runner(archive: Archive, settings: Settings) -> JobRunner:
    """A runner for ``archive``'s jobs (``jobs.*``), which also finishes pending blob
    deletions; the caller starts and stops it."""
    runner = JobRunner(
        archive.jobs,
        poll_interval=settings["jobs.poll_interval"],
        housekeeping=archive.deletion.sweep,
    )
    archive.health.runner_alive = runner.alive  # for /readyz
    return runner


def dimse_config(settings: Settings) -> DimseConfig:
    """The DIMSE front door's configuration (``dicom.*``)."""
    return DimseConfig(
        ae_title=settings["dicom.ae_title"],
        host=settings["dicom.host"],
        port=settings["dicom.port"],
        max_pdu=settings["dicom.max_pdu"],
        max_associations=settings["dicom.max_associations"],
        max_associations_per_host=settings["dicom.max_associations_per_host"],
        acse_timeout=settings["dicom.acse_timeout"],
        dimse_timeout=settings["dicom.dimse_timeout"],
        network_timeout=settings["dicom.network_timeout"],
        min_receive_rate=settings["dicom.min_receive_rate"],
        require_called_ae=settings["dicom.require_called_ae"],
    )


def viewer_dir(settings: Settings) -> Path:
    """The OHIF build to serve: ``viewer.dir`` itself if it holds an ``index.html`` (a custom
    build), else ``<viewer.dir>/<viewer.version>``; ``viewer.dir`` defaults to
    ``<sys.prefix>/share/vesalius/ohif`` (inside the virtualenv, apart from data_dir)."""
    base = viewer_base_dir(settings)
    if (base / "index.html").is_file():
        return base
    return base / str(settings["viewer.version"])


def viewer_base_dir(settings: Settings) -> Path:
    """The folder holding installed OHIF versions, one sub-folder each."""
    configured = str(settings["viewer.dir"])
    if configured:
        return Path(configured).expanduser()
    return Path(sys.prefix) / "share" / "vesalius" / "ohif"


def viewer_config(settings: Settings) -> ViewerConfig:
    """The viewer app's configuration (``viewer.*``)."""
    return ViewerConfig(
        bool(settings["viewer.enabled"]),
        viewer_dir(settings),
        f"Vesalius {settings['dicom.ae_title']}",
    )


def http_app(archive: Archive, settings: Settings) -> Starlette:
    """The HTTP application of ``archive`` as ``settings`` configure it: the host
    (``web/host.py``) with DICOMweb and then the viewer mounted."""
    origins = tuple(o.strip() for o in settings["http.cors_origins"].split(",") if o.strip())
    upload = UploadLimits(
        max_bytes=settings["http.max_upload_mb"] << 20,
        max_inflation_ratio=settings["http.max_inflation_ratio"],
    )
    return create_host(
        archive,
        [dicomweb_routes(archive, upload), viewer_routes(viewer_config(settings))],
        HostConfig(
            cors_origins=origins,
            public_url=settings["http.public_url"],
            access_log=settings["log.access"],
            metrics=bool(settings["metrics.enabled"]),
        ),
    )


def http_limits(settings: Settings) -> HttpLimits:
    """The HTTP server's bounds (``http.*``), the connection cap kept within the open-file
    limit."""
    return HttpLimits(
        header_timeout=settings["http.header_timeout"],
        keepalive_timeout=settings["http.keepalive_timeout"],
        body_timeout=settings["http.body_timeout"],
        send_timeout=settings["http.send_timeout"],
        max_connections=connection_cap(settings["http.max_connections"]),
        max_body=settings["http.max_upload_mb"] << 20,
    )
