"""Wiring: settings become parts (index, blob stores, spool), parts become services (the
:class:`~vesalius.services.archive.Archive`), and settings become the configuration of each
front door. ``server.py``, ``cli.py`` and the commands use this; nothing else imports it, and
nothing below it reads raw settings.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.applications import Starlette

from vesalius import __version__
from vesalius.api.app import api_routes
from vesalius.api.deps import ApiConfig
from vesalius.dicomweb.routes import dicomweb_routes
from vesalius.dicomweb.sender import stow_handler
from vesalius.dicomweb.stow import UploadLimits
from vesalius.dimse.config import DimseConfig
from vesalius.dimse.remote import RemoteFind, retrieve_handler
from vesalius.dimse.scu.echo import peer_echoer
from vesalius.dimse.sender import send_handler
from vesalius.errors import ConfigError
from vesalius.index.catalog import Catalog
from vesalius.index.database import describe_url
from vesalius.services.accounts import AccountConfig, AccountService
from vesalius.services.anonymize import AnonymizeService, SiteSecret
from vesalius.services.archive import Archive
from vesalius.services.audit import Auditor
from vesalius.services.audit_messages import AuditSource
from vesalius.services.audit_trail import AuditService, TrailSink
from vesalius.services.browse import BrowseService
from vesalius.services.corrections import CorrectionService
from vesalius.services.deidentify import DeidentifyService
from vesalius.services.deletion import DeleteService
from vesalius.services.downloads import DownloadService
from vesalius.services.events import EventBus
from vesalius.services.health import HealthService
from vesalius.services.ingest import IngestService
from vesalius.services.instances import InstanceService
from vesalius.services.jobs import JobRunner, JobService
from vesalius.services.labels import AccessCache, LabelService
from vesalius.services.live import LiveEvents
from vesalius.services.metadata import MetadataService
from vesalius.services.oversight import Oversight
from vesalius.services.peers import PeerDirectory
from vesalius.services.policy import ROLE_ACTIONS, Policy
from vesalius.services.query import QueryService
from vesalius.services.remote import KIND as RETRIEVE_JOB
from vesalius.services.remote import RemoteService
from vesalius.services.retrieve import RetrieveService
from vesalius.services.search_index import SearchIndexer
from vesalius.services.sending import KIND as SEND_JOB
from vesalius.services.sending import WEB_KIND as STOW_JOB
from vesalius.services.sending import SendService
from vesalius.services.site_policy import CallerRules, SitePolicy
from vesalius.services.statistics import StatisticsService
from vesalius.services.uploads import UploadService
from vesalius.settings import SETTINGS, Settings, parse_permissions
from vesalius.storage import FOLDER_STORE, BlobStorage, FolderStorage, Spool, Stores
from vesalius.telemetry.events import count_event
from vesalius.telemetry.syslog import SyslogSender, sender_for
from vesalius.tls import ClientTls, ServerTls, TlsFiles, files_from
from vesalius.ui.app import UiConfig, ui_routes
from vesalius.viewer.app import ViewerConfig, viewer_routes
from vesalius.web.host import HostConfig, create_host
from vesalius.web.identity import AuthConfig
from vesalius.web.oidc_client import OidcConfig, parse_role_map
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
    #: Writes the search terms of new studies (``services/search_index.py``).
    indexer: SearchIndexer | None = None

    def close(self) -> None:
        self.archive.close()


def secret_file(settings: Settings) -> Path:
    """The de-identification secret (``anonymize.secret_file``; relative: in data_dir)."""
    given = str(settings["anonymize.secret_file"]).strip()
    return settings.data_dir / (given or "anonymize.secret")


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
    syslog = audit_syslog(settings)
    trail = TrailSink(
        catalog, audit_source(settings), forward=syslog, interval=settings["audit.interval"]
    )
    events.subscribe(trail)  # the durable trail in the index, whatever auditor is given
    events.subscribe(count_event)  # metrics; a no-op unless telemetry.metrics is enabled
    indexer = SearchIndexer(catalog)  # the search terms of new studies, off the ingest commit
    events.subscribe(indexer)
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
        indexer.close()
        trail.close()  # what is pending is written before the index closes
        if syslog is not None:
            syslog.close()
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

    retrieve = RetrieveService(catalog, stores, oversight=oversight)
    archive = Archive(
        ingest=ingest,
        query=query,
        retrieve=retrieve,
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
        sending=SendService(jobs, peers, catalog),
        oversight=oversight,
        anonymize=AnonymizeService(
            catalog, retrieve, ingest, oversight=oversight, secret=SiteSecret(secret_file(settings))
        ),
        accounts=AccountService(catalog, oversight=oversight, config=account_config(settings)),
        audit=AuditService(catalog, oversight=oversight, trail=describe_url(settings.database_url)),
        labels=labels,
        closer=close,
        instances=InstanceService(catalog, stores, spool, oversight=oversight),
        uploads=UploadService(
            ingest,
            max_bytes=settings["http.max_upload_mb"] << 20,
            max_inflation_ratio=settings["http.max_inflation_ratio"],
        ),
        downloads=DownloadService(catalog, stores, oversight=oversight),
        statistics=StatisticsService(catalog, spool, oversight=oversight),
    )
    archive.audit.sink = trail
    archive.browse = BrowseService(
        catalog,
        oversight=oversight,
        deletion=archive.deletion,
        case_insensitive_pn=settings["query.case_insensitive_pn"],
    )
    archive.corrections = CorrectionService(
        catalog,
        stores,
        spool,
        oversight=oversight,
        jobs=jobs,
        keep_days=settings["corrections.keep_days"],
    )
    if archive.anonymize is not None:
        archive.deidentify = DeidentifyService(
            catalog, archive.anonymize, oversight=oversight, jobs=jobs
        )
    jobs.register(SEND_JOB, send_handler(archive, dimse_config(settings)), "send")
    peers.echoer = peer_echoer(dimse_config(settings))
    archive.live = LiveEvents(catalog, jobs, oversight, events)
    transfers(archive, settings)
    return Assembly(settings, catalog, spool, stores, archive, indexer)


def transfers(archive: Archive, settings: Settings) -> None:
    """Sending by STOW-RS, and querying and retrieving from remote AEs (``services/remote.py``
    with its DIMSE part, ``dimse/remote.py``): the services and their job handlers."""
    dimse = dimse_config(settings)
    files = tls_files(settings)
    client = ClientTls(files) if files is not None else None
    tls = (lambda: client.context) if client is not None else None
    archive.jobs.register(
        STOW_JOB, stow_handler(archive, timeout=settings["dicom.network_timeout"], tls=tls), "send"
    )
    archive.remote = RemoteService(
        archive.peers,
        archive.jobs,
        oversight=archive.oversight,
        finder=RemoteFind(dimse, settings["query.remote_timeout"]),
        max_matches=settings["query.remote_max_results"],
    )
    # a retrieve adds instances to this archive: its submitter must be allowed to store
    archive.jobs.register(RETRIEVE_JOB, retrieve_handler(archive, dimse), "store")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an ``http.host``) is reachable from this machine only."""
    text = host.strip().strip("[]")
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def auth_required(settings: Settings) -> bool:
    """``auth.required``: ``auto`` is on unless ``http.host`` is a loopback address (the
    laptop quick start stays as it is; anything reachable from the network asks who)."""
    configured = settings["auth.required"]
    if configured == "auto":
        return not is_loopback(settings["http.host"])
    return bool(configured == "true")


def anonymous_roles(settings: Settings) -> frozenset[str]:
    return frozenset(r.strip() for r in settings["auth.anonymous_roles"].split(",") if r.strip())


def account_config(settings: Settings) -> AccountConfig:
    """The accounts service's configuration (``auth.*``)."""
    return AccountConfig(
        session_minutes=settings["auth.session_minutes"],
        max_failures=settings["auth.max_failures"],
        max_failures_per_address=settings["auth.max_failures_per_address"],
        lockout_minutes=settings["auth.lockout_minutes"],
    )


def auth_config(settings: Settings) -> AuthConfig:
    """The HTTP host's authentication (``auth.*``; ``web/identity.py``)."""
    return AuthConfig(
        required=auth_required(settings),
        basic=bool(settings["auth.basic"]),
        anonymous_roles=anonymous_roles(settings),
    )


def oidc_config(settings: Settings) -> OidcConfig | None:
    """OpenID Connect (``auth.oidc_*``, checked by the settings loader), or ``None``: off."""
    issuer = str(settings["auth.oidc_issuer"]).strip()
    if not issuer:
        return None
    secret = str(settings["auth.oidc_client_secret"])
    secret_file = str(settings["auth.oidc_client_secret_file"])
    if secret_file:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"auth.oidc_client_secret_file: cannot read {secret_file}: {exc.strerror}"
            ) from None
        if not secret:
            raise ConfigError(f"auth.oidc_client_secret_file: {secret_file} is empty")
    try:
        role_map = parse_role_map(settings["auth.oidc_role_map"], ROLE_ACTIONS)
    except ValueError as exc:
        raise ConfigError(f"auth.oidc_role_map: {exc}") from None
    return OidcConfig(
        issuer=issuer,
        client_id=str(settings["auth.oidc_client_id"]).strip(),
        client_secret=secret,
        scopes=" ".join(str(settings["auth.oidc_scopes"]).split()),
        groups_claim=str(settings["auth.oidc_groups_claim"]).strip(),
        username_claim=str(settings["auth.oidc_username_claim"]).strip(),
        role_map=role_map,
        audience=str(settings["auth.oidc_audience"]).strip(),
    )


def audit_source(settings: Settings) -> AuditSource:
    """Who the audit messages say reports them (``audit.source_id``, ``audit.site_id``)."""
    host = socket.gethostname()
    ae_title = settings["dicom.ae_title"]
    return AuditSource(
        settings["audit.source_id"] or f"{ae_title}@{host}",
        ae_title,
        host,
        settings["audit.site_id"],
    )


def audit_syslog(settings: Settings) -> SyslogSender | None:
    """The sender to the syslog collector ``audit.syslog_url`` names, if any; its TLS CA is
    ``audit.syslog_ca`` or else ``tls.ca_certificates``, and our certificate is offered."""
    url = settings["audit.syslog_url"]
    if not url:
        return None
    values = settings.values
    return sender_for(
        url,
        app_name=settings["audit.syslog_app_name"],
        ca_file=settings["audit.syslog_ca"] or str(values.get("tls.ca_certificates") or ""),
        cert_file=str(values.get("tls.certificate") or ""),
        key_file=str(values.get("tls.private_key") or ""),
        max_queue=settings["audit.syslog_queue"],
    )


def site_policy(settings: Settings, access: AccessCache) -> SitePolicy:
    """The policy of ``settings``: users by their roles, remote AEs by their peer permissions
    (``dicom.unknown_caller_permissions``, ``dicom.known_callers_only``,
    ``dicom.check_caller_host``), studies by access labels. A user identity that no
    authentication established acts with ``auth.anonymous_roles`` while authentication is
    off, and with no role at all while it is on."""
    return SitePolicy(
        access,
        CallerRules(
            unknown_permissions=parse_permissions(settings["dicom.unknown_caller_permissions"]),
            known_callers_only=settings["dicom.known_callers_only"],
            check_host=settings["dicom.check_caller_host"],
        ),
        anonymous_roles=frozenset() if auth_required(settings) else anonymous_roles(settings),
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
    corrections, live = archive.corrections, archive.live

    def housekeeping() -> None:
        if corrections is not None:
            corrections.purge()  # notes the expired previous versions, which the sweep removes
        archive.deletion.sweep()
        if live is not None:
            live.prune()  # the change feed's old rows

    runner = JobRunner(
        archive.jobs, poll_interval=settings["jobs.poll_interval"], housekeeping=housekeeping
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
        plain=settings["dicom.plain"],
        tls_port=settings["dicom.tls_port"] if settings["tls.certificate"] else -1,
        client_tls=ClientTls(tls_files(settings)),
    )


def tls_files(settings: Settings) -> TlsFiles | None:
    """The PEM files of ``tls.*``, None when neither a certificate nor authorities are set."""
    return files_from(settings)


def dimse_tls(settings: Settings) -> ServerTls | None:
    """The live TLS context of DIMSE over TLS (``dicom.tls_port``), None when it is off;
    :class:`~vesalius.errors.ConfigError` when the files do not load."""
    files = tls_files(settings)
    if files is None or not files.certificate or settings["dicom.tls_port"] < 0:
        return None
    return ServerTls(files)


def http_tls(settings: Settings) -> ServerTls | None:
    """The live TLS context of HTTPS (``http.tls``), None when it is off."""
    files = tls_files(settings)
    if files is None or not settings["http.tls"]:
        return None
    return ServerTls(files, http=True)


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


#: Settings whose values are secrets: shown as ``***`` by ``GET /api/v1/settings``.
SECRET_SETTINGS = frozenset({"auth.oidc_client_secret"})


def _without_password(url: str) -> str:
    """``url`` with the password of its user info, if any, shown as ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting's value and where it came from, secrets hidden (the password of a
    database URL, or of any other URL, included)."""
    shown: dict[str, Any] = {}
    for setting in SETTINGS:
        value = settings[setting.key]
        if setting.key in SECRET_SETTINGS and value:
            value = "***"
        elif setting.key == "database_url" and value:
            value = describe_url(str(value))
        elif isinstance(value, str) and "://" in value:
            value = _without_password(value)
        shown[setting.key] = {"value": value, "source": settings.origin(setting.key)}
    return shown


def frontend_dir(settings: Settings) -> Path:
    """The UI's front-end packages (``ui.assets_dir``; ``vesalius ui install``)."""
    configured = str(settings["ui.assets_dir"])
    if configured:
        return Path(configured).expanduser()
    return Path(sys.prefix) / "share" / "vesalius" / "frontend"


def http_app(archive: Archive, settings: Settings) -> Starlette:
    """The HTTP application of ``archive`` as ``settings`` configure it: the host
    (``web/host.py``) with DICOMweb and then the viewer mounted."""
    origins = tuple(o.strip() for o in settings["http.cors_origins"].split(",") if o.strip())
    upload = UploadLimits(
        max_bytes=settings["http.max_upload_mb"] << 20,
        max_inflation_ratio=settings["http.max_inflation_ratio"],
    )
    assets = frontend_dir(settings)
    return create_host(
        archive,
        [
            dicomweb_routes(archive, upload),
            api_routes(archive, ApiConfig(effective_settings(settings), assets, __version__)),
            ui_routes(UiConfig(bool(settings["ui.enabled"]), assets)),
            viewer_routes(viewer_config(settings)),
        ],
        HostConfig(
            cors_origins=origins,
            public_url=settings["http.public_url"],
            access_log=settings["log.access"],
            metrics=bool(settings["metrics.enabled"]),
            auth=auth_config(settings),
            oidc=oidc_config(settings),
            https=bool(settings["http.tls"]),
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
