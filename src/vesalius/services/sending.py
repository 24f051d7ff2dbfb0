"""Sending stored instances to a known peer as a job (``vesalius send --study``, later the REST
API, the admin UI and routing rules): the request is checked and queued here; the job of kind
``send`` is run by the DIMSE adapter's handler (``dimse/sender.py``), which the wiring registers,
as C-STORE sub-operations audited like a C-MOVE (event ``instances-transferred``, operation
``send``).
"""

from __future__ import annotations

from vesalius.errors import NotFoundError
from vesalius.identity import Identity
from vesalius.index.lookup import RetrieveKeys
from vesalius.services.jobs import JobRow, JobService, keys_payload
from vesalius.services.peers import Peer, PeerDirectory
from vesalius.services.policy import keys_resource

#: The job kind.
KIND = "send"


class SendService:
    """Queues sends of stored instances to known peers."""

    def __init__(self, jobs: JobService, peers: PeerDirectory) -> None:
        self.jobs = jobs
        self.peers = peers

    def peer(self, name: str) -> Peer:
        """The known peer named ``name`` (its name in the peers table, or its AE title)."""
        found = self.peers.by_name(name) or self.peers.by_ae(name)
        if found is None:
            raise NotFoundError(f"no known peer {name!r} (see [modalities] in the settings)")
        return found

    def submit(self, keys: RetrieveKeys, destination: str, who: Identity) -> JobRow:
        """Queue the send of what ``keys`` name to the known peer ``destination``."""
        peer = self.peer(destination)
        resource = keys_resource(keys)
        resource.details["destination"] = peer.ae_title
        payload = {**keys_payload(keys), "peer": peer.name}
        return self.jobs.submit(KIND, payload, who, resource)
