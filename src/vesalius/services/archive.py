"""The archive: the one door every front door (DIMSE, DICOMweb, the CLI, the coming REST API
and UI) goes through. It holds services, and nothing else: no catalog, no storage, no raw
settings. The wiring (``vesalius.wiring``) builds the parts and the services over them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vesalius.services.accounts import AccountService
from vesalius.services.anonymize import AnonymizeService
from vesalius.services.audit_trail import AuditService
from vesalius.services.browse import BrowseService
from vesalius.services.corrections import CorrectionService
from vesalius.services.deidentify import DeidentifyService
from vesalius.services.deletion import DeleteService
from vesalius.services.downloads import DownloadService
from vesalius.services.health import HealthService
from vesalius.services.ingest import IngestService
from vesalius.services.instances import InstanceService
from vesalius.services.jobs import JobService
from vesalius.services.labels import LabelService
from vesalius.services.live import LiveEvents
from vesalius.services.metadata import MetadataService
from vesalius.services.oversight import Oversight
from vesalius.services.peers import PeerDirectory
from vesalius.services.query import QueryService
from vesalius.services.remote import RemoteService
from vesalius.services.retrieve import RetrieveService
from vesalius.services.sending import SendService
from vesalius.services.statistics import StatisticsService
from vesalius.services.uploads import UploadService


@dataclass
class Archive:
    """The services of one archive."""

    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    metadata: MetadataService
    health: HealthService
    peers: PeerDirectory
    jobs: JobService
    deletion: DeleteService
    sending: SendService
    oversight: Oversight
    accounts: AccountService
    audit: AuditService
    #: Access labels, their grants and ingest rules (issue 14).
    labels: LabelService
    #: De-identification (PS3.15 Annex E); None where the wiring built no secret for it.
    anonymize: AnonymizeService | None = None
    #: Releases what the wiring opened for these services (index connections, storage).
    closer: Callable[[], None] = field(default=lambda: None, repr=False)
    #: A series' instances and their tags (the REST API, issue 15).
    instances: InstanceService | None = None
    #: Uploads of files and zips (the REST API, issue 15).
    uploads: UploadService | None = None
    #: Studies and selections as a streamed ZIP or DICOM media (issue 15).
    downloads: DownloadService | None = None
    #: Counts, disk, ingest over time and the storage forecast (issue 15).
    statistics: StatisticsService | None = None
    #: Live updates of jobs and studies (``GET /api/v1/events``); None: not wired.
    live: LiveEvents | None = None
    #: Query and retrieve from remote AEs (C-FIND, C-MOVE, C-GET); None: not wired.
    remote: RemoteService | None = None
    #: Study list, studies, series and patients for the REST API and UI (issue 15).
    browse: BrowseService | None = None
    #: Corrections of patient and study attributes, with undo (issue 15).
    corrections: CorrectionService | None = None
    #: De-identification for the REST API: into the archive as a job, or a streamed ZIP.
    deidentify: DeidentifyService | None = None

    def close(self) -> None:
        self.closer()
