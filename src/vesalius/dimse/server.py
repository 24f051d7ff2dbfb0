"""The DIMSE server: one pynetdicom Application Entity wired to the archive (PS3.8).

It accepts every storage SOP class in every transfer syntax the standard defines (stored as
received), Verification, and Query/Retrieve (Patient and Study Root: FIND, MOVE, GET). The
handlers live in ``store``, ``find`` and ``retrieve``; this module only wires them and tunes
the library:

* received data sets are written straight to our staging folder, not decoded;
* sent data sets stream from their files (``STORE_SEND_CHUNKED_DATASET``);
* every socket gets ``TCP_NODELAY`` (small responses otherwise wait on delayed ACKs);
* a data set left half-received when a connection drops is removed at once.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom import acse as _acse
from pynetdicom import dimse_messages as _dimse_messages

from vesalius.dicom.uids import (
    ALL_TRANSFER_SYNTAXES,
    QR_SOP_CLASSES,
    STORAGE_SOP_CLASSES,
    VERIFICATION,
)
from vesalius.dimse import find, retrieve, store
from vesalius.dimse.transport import set_nodelay
from vesalius.services.archive import Archive

log = logging.getLogger(__name__)

IMPLEMENTATION_VERSION = "VESALIUS_010"


def configure_library(staging_dir: str) -> None:
    """Process-wide pynetdicom settings for raw, streamed data sets (see module docstring)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    # pynetdicom creates the received file with NamedTemporaryFile() and no folder; give it
    # ours, so the finished file moves into storage with a rename instead of a copy.
    negotiate = _acse.negotiate_as_acceptor  # type: ignore[attr-defined]
    if not hasattr(negotiate, "__wrapped__"):
        _acse.negotiate_as_acceptor = _prefer_requestor_order(negotiate)  # type: ignore[attr-defined]
    _dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[assignment,attr-defined]
        tempfile.NamedTemporaryFile, dir=staging_dir, prefix="rx-"
    )


def _prefer_requestor_order(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap pynetdicom's acceptor negotiation so that, of the transfer syntaxes a requestor
    proposes in one presentation context, the first one we support wins (pynetdicom picks by
    the acceptor's list). A modality offering JPEG first then sends JPEG, stored as it is,
    instead of decompressing for us (PS3.8 9.3.2.2: the acceptor chooses; the requestor's order
    is its preference)."""

    def negotiate(rq_contexts: Any, ac_contexts: Any, roles: Any = None) -> Any:
        result, ac_roles = original(rq_contexts, ac_contexts, roles)
        supported = {cx.abstract_syntax: set(cx.transfer_syntax) for cx in ac_contexts}
        proposed = {cx.context_id: cx for cx in rq_contexts}
        for cx in result:
            request = proposed.get(cx.context_id)
            if cx.result != 0x00 or request is None:
                continue
            ours = supported.get(cx.abstract_syntax, set())
            for syntax in request.transfer_syntax:
                if syntax in ours:
                    cx.transfer_syntax = [syntax]
                    break
        return result, ac_roles

    negotiate.__wrapped__ = original  # type: ignore[attr-defined]
    return negotiate


def drop_partial(event: Any) -> None:
    """EVT_CONN_CLOSE / EVT_ABORTED: remove a data set file left half-received."""
    message = getattr(event.assoc.dimse, "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    try:
        handle.close()
        path = getattr(message, "_data_set_path", None)
        if path is not None:
            path.unlink(missing_ok=True)
            log.info("removed half-received data set from %s", event.assoc.requestor.ae_title)
    except OSError:
        pass


def build_ae(archive: Archive) -> AE:
    """The Application Entity with every context and limit from the settings."""
    s = archive.settings
    ae = AE(ae_title=s["dicom.ae_title"])
    ae.implementation_version_name = IMPLEMENTATION_VERSION
    ae.maximum_associations = s["dicom.max_associations"]
    ae.maximum_pdu_size = s["dicom.max_pdu"]
    ae.acse_timeout = s["dicom.acse_timeout"]
    ae.dimse_timeout = s["dicom.dimse_timeout"]
    ae.network_timeout = s["dicom.network_timeout"]
    ae.require_called_aet = s["dicom.require_called_ae"]
    if s["dicom.known_callers_only"]:
        ae.require_calling_aet = [m.ae_title for m in s.modalities.values()]
    syntaxes = list(ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION, syntaxes)
    for _, uid in STORAGE_SOP_CLASSES:
        # scp_role=True lets a C-GET requestor take the Storage SCP role (PS3.7 D.3.3.4).
        ae.add_supported_context(uid, syntaxes, scu_role=False, scp_role=True)
    for uid in QR_SOP_CLASSES:
        ae.add_supported_context(uid, syntaxes)
    return ae


def _bind(handler: Callable[..., Any], archive: Archive) -> Callable[..., Any]:
    return functools.partial(handler, archive=archive)


class DimseServer:
    """The listening DIMSE server; ``start`` returns at once, ``stop`` drains then aborts."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        configure_library(str(archive.storage.staging_dir()))
        self.ae = build_ae(archive)
        self._server: Any = None

    def handlers(self) -> list[Any]:
        bound = [
            (event, _bind(handler, self.archive))
            for module in (store, find, retrieve)
            for event, handler in module.HANDLERS
        ]
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_CONN_CLOSE, drop_partial),
            (evt.EVT_ABORTED, drop_partial),
            *bound,
        ]

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        s = self.archive.settings
        self._server = self.ae.start_server(
            (s["dicom.host"], s["dicom.port"]), block=False, evt_handlers=self.handlers()
        )
        log.info("DIMSE %s listening on %s:%d", s["dicom.ae_title"], s["dicom.host"], self.port)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every running association has ended; False on timeout."""
        if self._server is None:
            return True
        deadline = time.monotonic() + timeout
        for assoc in list(self._server.active_associations):
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        return not self._server.active_associations

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let running associations finish for ``grace`` seconds, then abort."""
        if self._server is None:
            return
        server, self._server = self._server, None
        active = list(server.active_associations)
        server.shutdown()
        negotiating = [a for a in active if not a.is_established]  # e.g. a bare port probe
        for assoc in negotiating:
            log.info("closing an unnegotiated connection at shutdown")
            assoc.abort()
            # Its thread waits on the A-ASSOCIATE-RQ for up to the ACSE timeout; wake it.
            assoc.dul.to_user_queue.put(None)
        active = [a for a in active if a not in negotiating]
        deadline = time.monotonic() + grace
        for assoc in active:
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        for assoc in active:
            if assoc.is_alive():
                log.warning("aborting association with %s at shutdown", assoc.requestor.ae_title)
                assoc.abort()
        for thread in threading.enumerate():
            if thread in active:
                thread.join(timeout=2)
