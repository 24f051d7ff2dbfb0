"""C-STORE SCP (PS3.4 B.2): received data sets go to the ingest service as files.

pynetdicom writes each incoming data set straight to a file in our staging folder
(``STORE_RECV_CHUNKED_DATASET``, see ``dimse.server``), so no data set is ever decoded or held
in memory here; the ingest service moves that file into storage by rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from vesalius.dimse.status import SUCCESS, failure
from vesalius.identity import Identity
from vesalius.services.archive import Archive


def peer_identity(event: Any) -> Identity:
    """The calling AE and address of the association behind ``event``."""
    requestor = event.assoc.requestor
    return Identity.ae(str(requestor.ae_title), str(requestor.address))


def handle_store(event: Any, archive: Archive) -> int | Dataset:
    """EVT_C_STORE: ingest the received file and answer with its status (PS3.4 B.2.3)."""
    request = event.request
    try:
        path = Path(event.dataset_path)
        archive.ingest.ingest_staged(
            path,
            peer_identity(event),
            expected_sop_class=str(request.AffectedSOPClassUID),
            expected_sop_instance=str(request.AffectedSOPInstanceUID),
        )
    except Exception as exc:
        return failure(exc, "C-STORE")
    return SUCCESS


HANDLERS = [(evt.EVT_C_STORE, handle_store)]
