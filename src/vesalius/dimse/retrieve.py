"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): stored files go out as stored, streamed.

pynetdicom runs the sub-operations and their statuses (pending counts, 0xB000 with the Failed
SOP Instance UID List, 0xA702 when all fail, 0xFE00 on C-CANCEL, 0xA801 when the destination is
unknown or refuses the association). The handlers here are generators that yield the
destination (C-MOVE), the number of sub-operations, then ``(0xFF00, data set)`` per instance.

**Streaming.** pynetdicom 3.0 takes only a pydicom ``Dataset`` per sub-operation (a yielded path
is counted as a failed sub-operation) and lists failed instances by
``hasattr(ds, "SOPInstanceUID")``. So each instance is yielded as a :class:`StoredFile`, a
two-element Dataset (SOP Class and Instance UID) that also knows its file, and the sending
association's ``send_c_store`` is wrapped (:func:`stream_stored_files`) to hand pynetdicom the
file *path* instead. With ``STORE_SEND_CHUNKED_DATASET`` pynetdicom then streams the stored
data set bytes in PDU-sized chunks: bit-exact and memory-flat.

**Transfer syntax.** An instance goes in its stored transfer syntax when the peer accepted that
syntax for its SOP class (C-MOVE proposes exactly those pairs; C-GET uses the storage contexts
the requestor accepted with the SCP role, PS3.4 C.4.3.1.3). Otherwise an instance stored
uncompressed little endian is decoded and re-encoded in Explicit or Implicit VR Little Endian,
which is lossless; anything else is a failed sub-operation (no transcoding yet).

**Refusals.** pynetdicom sends a handler's own status and Error Comment only from the
``(status, data set)`` phase, so a retrieve refused for its identifier announces one
sub-operation and yields the failure status (0xA900, 0xC000) first; for C-MOVE that costs a
short association with the (known) destination.

**C-MOVE sub-associations** also propose Verification, so a destination that takes none of
the storage contexts still associates and the sub-operations fail visibly (0xA702), and get a
:class:`ReactorCheckpoint` against a race in pynetdicom's reactor pause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext

from vesalius.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    VERIFICATION,
)
from vesalius.dimse.status import CANCEL, PENDING, failure
from vesalius.dimse.store import peer_identity
from vesalius.dimse.transport import bound_send_queue, set_nodelay
from vesalius.errors import QueryError, VesaliusError
from vesalius.identity import Identity
from vesalius.services.archive import Archive
from vesalius.services.retrieve import (
    InstanceLocation,
    Model,
    RetrievePlan,
    RetrieveTally,
    keys_from_identifier,
)

log = logging.getLogger(__name__)

_MODELS: dict[str, Model] = {
    PATIENT_ROOT_MOVE: "PATIENT",
    PATIENT_ROOT_GET: "PATIENT",
    STUDY_ROOT_MOVE: "STUDY",
    STUDY_ROOT_GET: "STUDY",
}
#: What an uncompressed instance may be re-encoded in when its own syntax was not accepted.
FALLBACK_SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
#: Stored syntaxes that re-encode losslessly into those: little endian with native pixel data
#: (big endian pixel data would need byte swapping, which pydicom does not do on write).
REENCODABLE = (IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE)
#: An A-ASSOCIATE-RQ carries at most 128 presentation contexts (odd IDs 1-255, PS3.8 9.3.2.2);
#: one goes to Verification, so a destination that takes none of the storage contexts still
#: associates and each sub-operation fails visibly (0xA702, Failed SOP Instance UID List)
#: instead of the whole C-MOVE ending as "destination unknown" (0xA801).
MAX_CONTEXTS = 127
#: Offered when a C-MOVE is refused before any sub-operation: contexts (Implicit VR LE, which
#: every SCP supports) that a storage SCP is likely to accept, so the refusal can be sent.
_REFUSAL_CONTEXTS = (
    VERIFICATION,
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
)


class StoredFile(Dataset):
    """A stored instance to send from its file (see the module docstring for why a Dataset).

    It holds only (0008,0016) and (0008,0018), so pynetdicom can name it in the Failed SOP
    Instance UID List, plus plain attributes the wrapped ``send_c_store`` reads.
    """

    def __init__(self, path: Path, instance: InstanceLocation, tally: RetrieveTally) -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self.stored_path = path
        self.stored_syntax = instance.transfer_syntax_uid
        self.tally = tally


class ReactorCheckpoint:
    """A drop-in for pynetdicom's ``Association._reactor_checkpoint`` that knows when the
    association's reactor thread is parked.

    pynetdicom 3.0 pauses a requestor's reactor before a ``send_*`` by clearing a
    ``threading.Event`` and polling a flag the reactor raises just *before* it waits. A reactor
    that has just passed the still-set event shows the flag too, then takes the C-STORE
    response off the queue ("Received unexpected C-STORE service message"), and the sender
    waits out the DIMSE timeout; every later sub-operation of that C-MOVE then fails. Seen
    here about once in 6,000 sub-operations to a fast storescp. :meth:`pause` returns only
    once the reactor is blocked in :meth:`wait`, so the response goes to the sender.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._flag = True
        self._parked = 0

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if self._flag:
                return True
            self._parked += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._flag, timeout)
            finally:
                self._parked -= 1

    def pause(self, running: Callable[[], bool]) -> None:
        """Clear, then wait until the reactor is parked (or its thread has ended)."""
        with self._cond:
            self._flag = False
            while not self._parked and running():
                self._cond.wait(0.05)  # woken by wait(); the timeout only rechecks running()


def _reencoded(path: Path, transfer_syntax: str) -> Dataset:
    """The instance decoded, ready for pynetdicom to encode in ``transfer_syntax``.

    A fresh Dataset over the same elements has no "original encoding", so pydicom converts
    every element on write instead of copying raw bytes in the stored encoding.
    """
    ds = Dataset(dcmread(path))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    return ds


def _payload(assoc: Any, item: StoredFile) -> str | Dataset | None:
    """What to give pynetdicom for ``item`` on ``assoc``: its path, a data set to re-encode,
    or None when the peer accepted no usable presentation context."""
    accepted = [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == item.SOPClassUID and cx.as_scu
    ]
    if item.stored_syntax in accepted:
        return str(item.stored_path)
    if item.stored_syntax in REENCODABLE:
        for syntax in FALLBACK_SYNTAXES:
            if syntax in accepted:
                return _reencoded(item.stored_path, syntax)
    return None


def stream_stored_files(assoc: Any) -> None:
    """Wrap ``assoc.send_c_store`` so it sends a :class:`StoredFile` from its file and counts
    the outcome in the retrieve's tally. Other data sets pass through; calling twice is a no-op.
    """
    if getattr(assoc, "_vesalius_streams_files", False):
        return
    original = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(dataset, StoredFile):
            return original(dataset, *args, **kwargs)
        try:
            payload = _payload(assoc, dataset)
            if payload is None:
                raise ValueError(
                    f"peer accepted no context for {dataset.SOPClassUID} in "
                    f"{dataset.stored_syntax} (instance {dataset.SOPInstanceUID}); "
                    "transcoding is not supported"
                )
            checkpoint = getattr(assoc, "_reactor_checkpoint", None)
            if isinstance(checkpoint, ReactorCheckpoint):
                checkpoint.pause(assoc.is_alive)
            rsp = original(payload, *args, **kwargs)
        except Exception:
            dataset.tally.record(None)
            raise
        status = rsp.get("Status")
        dataset.tally.record(None if status is None else int(status))
        return rsp

    assoc.send_c_store = send_c_store
    assoc._vesalius_streams_files = True


def _on_established(event: Any) -> None:
    """EVT_ESTABLISHED of a C-MOVE's sub-association, before its reactor thread starts: send
    stored files from their files, pausing the reactor reliably (:class:`ReactorCheckpoint`).

    (A C-GET needs no such care: its sub-operations run in the reactor thread itself.)
    """
    event.assoc._reactor_checkpoint = ReactorCheckpoint()
    stream_stored_files(event.assoc)
    bound_send_queue(event.assoc)


def move_contexts(instances: list[InstanceLocation]) -> list[PresentationContext]:
    """Presentation contexts for a C-MOVE sub-association: Verification, then one per
    (SOP class, stored syntax) plus the little endian fallbacks for uncompressed instances.

    Past 127 pairs, one context per SOP class lists all its syntaxes (the peer then picks one).
    """
    wanted: dict[str, list[str]] = {}
    for instance in instances:
        syntaxes = wanted.setdefault(instance.sop_class_uid, [])
        extra = FALLBACK_SYNTAXES if instance.transfer_syntax_uid in REENCODABLE else ()
        for syntax in (instance.transfer_syntax_uid, *extra):
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    pairs = [(sop, syntax) for sop, syntaxes in wanted.items() for syntax in syntaxes]
    verification = build_context(VERIFICATION)
    if len(pairs) <= MAX_CONTEXTS:
        return [verification, *(build_context(sop, [syntax]) for sop, syntax in pairs)]
    if len(wanted) > MAX_CONTEXTS:
        log.warning("C-MOVE spans %d SOP classes; only %d fit", len(wanted), MAX_CONTEXTS)
    grouped = list(wanted.items())[:MAX_CONTEXTS]
    return [verification, *(build_context(sop, syntaxes) for sop, syntaxes in grouped)]


def _plan(
    event: Any, archive: Archive, who: Identity, operation: str, destination: str = ""
) -> RetrievePlan:
    """Resolve the request's identifier; every failure becomes a :class:`VesaliusError`."""
    model = _MODELS[str(event.request.AffectedSOPClassUID)]
    try:
        keys = keys_from_identifier(event.identifier, model)
    except VesaliusError:
        raise
    except Exception as exc:  # pydicom decodes the identifier lazily and may fail anywhere
        raise QueryError(f"cannot decode the identifier: {type(exc).__name__}") from exc
    return archive.retrieve.plan(keys, who, operation, destination)


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, VesaliusError) else type(exc).__name__


def _sub_operations(event: Any, archive: Archive, plan: RetrievePlan) -> Iterator[Any]:
    """Yield the number of sub-operations, then ``(0xFF00, StoredFile)`` per instance, or
    ``(0xFE00, None)`` on C-CANCEL. The audit record is written when the generator ends,
    however it ends (pynetdicom drops it when the association or destination goes away)."""
    tally = RetrieveTally()
    attempted = 0
    try:
        yield len(plan.instances)
        for instance in plan.instances:
            if event.is_cancelled:
                tally.cancelled = True
                yield CANCEL, None
                return
            with archive.retrieve.local_path(instance) as path:
                yield PENDING, StoredFile(path, instance, tally)
            attempted += 1
    finally:
        archive.retrieve.finish(plan, tally, remaining=len(plan.instances) - attempted)


def handle_move(event: Any, archive: Archive) -> Iterator[Any]:
    """EVT_C_MOVE: send the matched instances to a configured AE (PS3.4 C.4.2.1)."""
    who = peer_identity(event)
    destination = str(event.move_destination or "").strip()
    modality = archive.settings.modality_by_ae(destination)
    if modality is None:
        log.info("C-MOVE from %s to unknown destination %r", who, destination)
        archive.retrieve.refuse(who, "C-MOVE", "unknown destination", destination)
        yield None, None
        return
    handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_ESTABLISHED, _on_established)]
    try:
        plan = _plan(event, archive, who, "C-MOVE", destination)
    except Exception as exc:
        archive.retrieve.refuse(who, "C-MOVE", _reason(exc), destination)
        contexts = [build_context(uid, [IMPLICIT_VR_LE]) for uid in _REFUSAL_CONTEXTS]
        refusal = {"contexts": contexts, "evt_handlers": handlers[:1]}
        yield modality.host, modality.port, refusal
        yield 1
        yield failure(exc, "C-MOVE"), None
        return
    contexts = move_contexts(plan.instances)
    yield modality.host, modality.port, {"contexts": contexts, "evt_handlers": handlers}
    if not plan.instances:
        archive.retrieve.finish(plan, RetrieveTally())
        yield 0
        return
    yield from _sub_operations(event, archive, plan)


def handle_get(event: Any, archive: Archive) -> Iterator[Any]:
    """EVT_C_GET: send the matched instances back on the same association (PS3.4 C.4.3.1)."""
    who = peer_identity(event)
    stream_stored_files(event.assoc)
    bound_send_queue(event.assoc)
    try:
        plan = _plan(event, archive, who, "C-GET")
    except Exception as exc:
        archive.retrieve.refuse(who, "C-GET", _reason(exc))
        yield 1
        yield failure(exc, "C-GET"), None
        return
    if not plan.instances:
        archive.retrieve.finish(plan, RetrieveTally())
        yield 0
        return
    yield from _sub_operations(event, archive, plan)


HANDLERS = [(evt.EVT_C_MOVE, handle_move), (evt.EVT_C_GET, handle_get)]
