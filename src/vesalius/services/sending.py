"""Sending stored instances to a known peer as a job (``vesalius send --study``, the REST API,
the admin UI, later routing rules): the request is checked and queued here.

Two ways out, one job kind each, run by the adapter the wiring registers:

- ``send``: C-STORE sub-operations over one association we open (``dimse/sender.py``),
  audited like a C-MOVE (event ``instances-transferred``, operation ``send``);
- ``send-dicomweb``: STOW-RS requests to the peer's DICOMweb URL (PS3.18 10.5;
  ``dicomweb/sender.py``), audited the same way (operation ``stow``).
"""

from __future__ import annotations

from typing import Literal

from vesalius.errors import InvalidDataError, NotFoundError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import RetrieveKeys, find_instances
from vesalius.services.jobs import JobRow, JobService, keys_payload
from vesalius.services.peers import Peer, PeerDirectory
from vesalius.services.policy import keys_resource

#: The job kind of a send over DIMSE (C-STORE).
KIND = "send"
#: The job kind of a send over DICOMweb (STOW-RS).
WEB_KIND = "send-dicomweb"
Via = Literal["dimse", "dicomweb"]


class SendService:
    """Queues sends of stored instances to known peers."""

    def __init__(
        self, jobs: JobService, peers: PeerDirectory, catalog: Catalog | None = None
    ) -> None:
        self.jobs = jobs
        self.peers = peers
        #: To refuse a send of nothing at once (404) rather than as a failed job.
        self.catalog = catalog

    def peer(self, name: str) -> Peer:
        """The known peer named ``name`` (its name in the peers table, or its AE title)."""
        found = self.peers.by_name(name) or self.peers.by_ae(name)
        if found is None:
            raise NotFoundError(f"no known peer {name!r} (see [modalities] in the settings)")
        return found

    def submit(
        self, keys: RetrieveKeys, destination: str, who: Identity, via: Via = "dimse"
    ) -> JobRow:
        """Queue the send of what ``keys`` name to the known peer ``destination``, by
        C-STORE (``dimse``) or by STOW-RS to the peer's DICOMweb URL (``dicomweb``)."""
        peer = self.peer(destination)
        kind = KIND
        if via == "dicomweb":
            if not peer.dicomweb_url:
                raise InvalidDataError(f"peer {peer.name} has no DICOMweb URL: set one first")
            kind = WEB_KIND
        resource = keys_resource(keys)
        resource.details["destination"] = peer.ae_title
        known = self.jobs.kinds.get(kind)
        if self.catalog is not None and known is not None:
            self.jobs.oversight.check(who, known.action, resource)
            labels = self.jobs.oversight.visible_labels(who)
            with self.catalog.read() as conn:
                if not find_instances(conn, keys, limit=1, labels=labels):
                    raise NotFoundError("nothing stored matches what is to be sent")
        payload = {**keys_payload(keys), "peer": peer.name}
        return self.jobs.submit(kind, payload, who, resource)
