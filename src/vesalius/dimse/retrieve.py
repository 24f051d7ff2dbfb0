"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): stored files go out as stored, streamed.

Each matched instance is one C-STORE sub-operation: over a new association to the move
destination (C-MOVE), or back over the requesting association on the storage contexts the
requestor accepted with the SCP role (C-GET, PS3.4 C.4.3.1.3). The data set is sent straight
from its stored file (a reader from the retrieve service, whatever store holds it), PDU by
PDU, bit-exact and memory-flat; from a local file, each PDU is one read of its descriptor. A
Pending response with the sub-operation counts follows each one; the final response carries
Success, 0xB000 (some failed or warned) or 0xA702 (all failed) with the Failed SOP Instance UID
List, or 0xFE00 after a C-CANCEL-RQ (checked between sub-operations). An unknown or
unreachable destination is 0xA801; a refused identifier gets its failure status and Error
Comment (0xA900, 0xC000).

**Transfer syntax.** An instance goes in its stored transfer syntax when the peer accepted that
syntax for its SOP class (C-MOVE proposes those pairs first). Otherwise it is converted to
Explicit or Implicit VR Little Endian by the converter WADO-RS uses (``dicom/transcode.py``):
re-encoded when stored uncompressed (a deflated one inflated as a stream), decompressed when
stored compressed and a decoder is installed, as a peer that accepts only uncompressed syntaxes
needs (a default DCMTK storescp or getscu). The stored file never changes. An instance that
cannot be converted is a failed sub-operation.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO, cast

from pydicom.dataset import Dataset

from vesalius.dicom.inflate import inflated_size, open_inflated
from vesalius.dicom.source import Source
from vesalius.dicom.structure import dataset_offset_in
from vesalius.dicom.transcode import can_transcode, transcoded_data_set
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
from vesalius.dimse import commands
from vesalius.dimse.association import (
    Aborted,
    Association,
    Message,
    Released,
    decode_data_set,
    encode_data_set,
)
from vesalius.dimse.config import DimseConfig, ScpContext
from vesalius.dimse.contexts import PresentationContext, build_context
from vesalius.dimse.identifiers import keys_from_identifier
from vesalius.dimse.requestor import connect
from vesalius.dimse.status import CANCEL, PENDING, SUCCESS, failure_status
from vesalius.dimse.store import peer_identity
from vesalius.errors import PeerError, QueryError, VesaliusError
from vesalius.services.peers import Peer
from vesalius.services.retrieve import (
    InstanceLocation,
    Model,
    RetrieveKeys,
    RetrievePlan,
    RetrieveTally,
)
from vesalius.tls import ClientTls

log = logging.getLogger(__name__)

MODELS: dict[str, Model] = {
    PATIENT_ROOT_MOVE: "PATIENT",
    PATIENT_ROOT_GET: "PATIENT",
    STUDY_ROOT_MOVE: "STUDY",
    STUDY_ROOT_GET: "STUDY",
}
#: What an instance is converted to when the peer accepted no context in its stored syntax:
#: every peer must accept Implicit VR Little Endian (PS3.5 10.1), most prefer Explicit. Native
#: syntaxes re-encode losslessly; compressed ones are decompressed (``dicom/transcode.py``, the
#: converter WADO-RS uses too; the stored file never changes).
FALLBACK_SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
#: Largest image decompressed or re-encoded in memory for one sub-operation (its decoded
#: pixel data, Rows x Columns x Samples x Bits x Frames); larger fails that sub-operation.
MAX_DECODED = 256 << 20
#: An A-ASSOCIATE-RQ carries at most 128 presentation contexts (odd IDs 1-255, PS3.8 9.3.2.2);
#: one goes to Verification, so a destination that takes none of the storage contexts still
#: associates and each sub-operation fails visibly (0xA702 with the Failed SOP Instance UID List).
MAX_CONTEXTS = 127
MOVE_DESTINATION_UNKNOWN = 0xA801
ALL_FAILED = 0xA702
SOME_FAILED = 0xB000


def move_contexts(instances: list[InstanceLocation]) -> list[PresentationContext]:
    """Presentation contexts for a C-MOVE sub-association: Verification, then one per
    (SOP class, stored syntax) plus the little endian fallbacks for uncompressed instances.

    Past 127 pairs, one context per SOP class lists all its syntaxes (the peer then picks one).
    """
    wanted: dict[str, list[str]] = {}
    for instance in instances:
        syntaxes = wanted.setdefault(instance.sop_class_uid, [])
        extra = _fallbacks(instance.transfer_syntax_uid)
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


def _fallbacks(stored: str) -> tuple[str, ...]:
    """The syntaxes an instance stored in ``stored`` can also be sent in."""
    return tuple(s for s in FALLBACK_SYNTAXES if s != stored and can_transcode(stored, s))


@contextmanager
def _reencoded(source: Source, stored: str, syntax: str) -> Iterator[bytes | tuple[BinaryIO, int]]:
    """The instance's data set in ``syntax``. A deflated one in Explicit VR Little Endian is its
    inflated bytes as a stream, with their size: inflated twice (once to count, once to send),
    so memory stays flat whatever the size. Anything else goes through the one converter of
    ``dicom/transcode.py`` in memory, within :data:`MAX_DECODED`."""
    if stored == DEFLATED_EXPLICIT_VR_LE and syntax == EXPLICIT_VR_LE:
        size = inflated_size(source)
        with open_inflated(source) as (_, stream):
            yield cast(BinaryIO, stream), size
        return
    yield transcoded_data_set(source, syntax, max_decoded=MAX_DECODED, max_inflated=MAX_DECODED)


@contextmanager
def _direct(reader: BinaryIO, offset: int) -> Iterator[BinaryIO]:
    """``reader`` at ``offset``, read straight from its file descriptor where it has one (one
    system call per PDU, no copy through a buffer), else as it is."""
    try:
        fd = reader.fileno()
    except (OSError, ValueError):  # not a local file (io.UnsupportedOperation is both)
        reader.seek(offset)
        yield reader
        return
    with io.FileIO(fd, "rb", closefd=False) as raw:
        raw.seek(offset)
        yield cast(BinaryIO, raw)


class SubOperations:
    """Sends C-STORE sub-operations over ``link`` and tallies them (PS3.4 C.4.2.1.4); each
    instance's file is opened by ``opener`` (the retrieve service's ``open``)."""

    def __init__(
        self,
        link: Association,
        tally: RetrieveTally,
        opener: Callable[[InstanceLocation], AbstractContextManager[BinaryIO]],
        *,
        originator: tuple[str, int] | None = None,
        cancel_id: int | None = None,
    ) -> None:
        self.link = link
        self.tally = tally
        self.opener = opener
        self.originator = originator
        #: For C-GET: the request's Message ID, whose C-CANCEL may arrive between responses.
        self.cancel_id = cancel_id
        self.cancelled = False
        self.failed_uids: list[str] = []

    def _context(self, instance: InstanceLocation) -> tuple[int, str] | None:
        accepted = [
            (cx.id, cx.transfer_syntax)
            for cx in self.link.contexts.values()
            if cx.abstract_syntax == instance.sop_class_uid and cx.as_scu
        ]
        for cx_id, syntax in accepted:
            if syntax == instance.transfer_syntax_uid:
                return cx_id, syntax
        for fallback in _fallbacks(instance.transfer_syntax_uid):
            for cx_id, syntax in accepted:
                if syntax == fallback:
                    return cx_id, syntax
        return None

    def send(self, instance: InstanceLocation) -> None:
        """One sub-operation; its outcome goes into the tally (a failure, a missing file
        included, is not raised, except that the association ending stops the retrieve)."""
        status: int | None = None
        try:
            with self.opener(instance) as reader:
                status = self._store(instance, reader)
        except (Aborted, Released):
            self._failed(instance)
            raise
        except Exception as exc:
            log.warning("a sub-operation failed: %s", exc)  # UIDs only at debug
            log.debug("the failed sub-operation was for %s", instance.sop_instance_uid)
        self.tally.record(status, instance.size)
        if status is None or not (status == 0 or 0xB000 <= status <= 0xBFFF or status == 0x0107):
            self.failed_uids.append(instance.sop_instance_uid)

    def _failed(self, instance: InstanceLocation) -> None:
        self.tally.record(None)
        self.failed_uids.append(instance.sop_instance_uid)

    def _store(self, instance: InstanceLocation, reader: BinaryIO) -> int | None:
        chosen = self._context(instance)
        if chosen is None:
            raise ValueError(
                f"peer accepted no context for {instance.sop_class_uid} in "
                f"{instance.transfer_syntax_uid} nor one it can be converted to"
            )
        cx_id, syntax = chosen
        message_id = self.link.next_message_id()
        elements: list[tuple[int, commands.Value]] = [
            (commands.COMMAND_FIELD, commands.C_STORE_RQ),
            (commands.MESSAGE_ID, message_id),
            (commands.PRIORITY, 0),
            (commands.DATA_SET_TYPE, commands.DATA_SET),
            (commands.AFFECTED_SOP_CLASS, instance.sop_class_uid),
            (commands.AFFECTED_SOP_INSTANCE, instance.sop_instance_uid),
        ]
        if self.originator is not None:
            elements += [
                (commands.MOVE_ORIGINATOR_AE, self.originator[0]),
                (commands.MOVE_ORIGINATOR_ID, self.originator[1]),
            ]
        command = commands.encode(elements)
        if syntax == instance.transfer_syntax_uid:
            reader.seek(0)
            offset = dataset_offset_in(reader)
            size = reader.seek(0, 2) - offset
            with _direct(reader, offset) as handle:
                self.link.send(cx_id, command, file=(handle, size))
        else:
            with _reencoded(reader, instance.transfer_syntax_uid, syntax) as payload:
                if isinstance(payload, bytes):
                    self.link.send(cx_id, command, payload)
                else:
                    self.link.send(cx_id, command, file=payload)
        return self._response(message_id)

    def _response(self, message_id: int) -> int | None:
        while True:
            message = self.link.receive(timeout=self.link.dimse_timeout)
            field = message.command.field
            responded = message.command.us(commands.RESPONDED_TO)
            if field == commands.C_STORE_RSP and responded == message_id:
                return message.command.us(commands.STATUS)
            if field == commands.C_CANCEL_RQ and responded == self.cancel_id:
                self.cancelled = True
                continue
            raise PeerError(f"unexpected {message.command.name} instead of the C-STORE-RSP")

    def check_cancel(self, assoc: Association, message_id: int) -> bool:
        if not self.cancelled:
            self.cancelled = assoc.cancel_requested(message_id)
        return self.cancelled


def _final_status(tally: RetrieveTally) -> int:
    if tally.cancelled:
        return CANCEL
    if not tally.failed and not tally.warning:
        return SUCCESS
    if not tally.completed and not tally.warning:
        return ALL_FAILED
    return SOME_FAILED


class _Responder:
    """Sends the C-MOVE-RSP / C-GET-RSP messages of one request."""

    def __init__(self, assoc: Association, message: Message, field: int) -> None:
        self.assoc = assoc
        self.message = message
        self.field = field

    def send(
        self,
        status: int,
        tally: RetrieveTally | None = None,
        remaining: int | None = None,
        comment: str = "",
        failed: list[str] | None = None,
    ) -> None:
        extra: list[tuple[int, commands.Value]] = [(commands.ERROR_COMMENT, comment or None)]
        if tally is not None:
            extra += [
                (commands.REMAINING, remaining),
                (commands.COMPLETED, tally.completed),
                (commands.FAILED, tally.failed),
                (commands.WARNING, tally.warning),
            ]
        data = None
        if failed:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed
            data = encode_data_set(ds, self.message.context.transfer_syntax)
        rsp = commands.response(
            self.message.command, self.field, status, data_set=data is not None, extra=extra
        )
        self.assoc.send(self.message.context.id, rsp, data)

    def refuse(self, exc: Exception, what: str) -> None:
        status, comment = failure_status(exc, what)
        self.send(status, comment=comment)


def _keys(message: Message, operation: str) -> RetrieveKeys:
    """The retrieve keys of the request's identifier; every failure is a
    :class:`VesaliusError` (the identifier is the adapter's to read)."""
    sop_class = message.context.abstract_syntax
    model = MODELS.get(sop_class)
    if model is None:
        raise QueryError(f"{operation} is not supported for {sop_class}")
    try:
        identifier = decode_data_set(message.data or b"", message.context.transfer_syntax)
        return keys_from_identifier(identifier, model)
    except VesaliusError:
        raise
    except Exception as exc:
        raise QueryError(f"cannot decode the identifier: {type(exc).__name__}") from exc


def _plan(
    scp: ScpContext,
    assoc: Association,
    message: Message,
    responder: _Responder,
    operation: str,
    destination: str = "",
) -> RetrievePlan | None:
    """The retrieve plan, or None once the refusal has been answered (and audited: by the
    service for its own refusals, here for an identifier that cannot be read)."""
    who = peer_identity(assoc)
    try:
        keys = _keys(message, operation)
    except VesaliusError as exc:
        scp.archive.retrieve.refuse(who, operation, exc.message, destination)
        responder.refuse(exc, operation)
        return None
    try:
        return scp.archive.retrieve.plan(keys, who, operation, destination)
    except Exception as exc:
        responder.refuse(exc, operation)
        return None


def _run(
    scp: ScpContext,
    plan: RetrievePlan,
    subops: SubOperations,
    responder: _Responder,
    cancelled: Callable[[], bool],
) -> None:
    """The sub-operations with a Pending response after each, then the final response; the
    retrieve service audits the transfer however it ends."""
    archive = scp.archive
    with archive.retrieve.transfer(plan) as tally:
        subops.tally = tally
        for position, instance in enumerate(plan.instances):
            if cancelled():
                tally.cancelled = True
                break
            try:
                subops.send(instance)
            except (Aborted, Released) as exc:
                if subops.link is responder.assoc:
                    raise  # the requesting association itself ended
                log.info("C-MOVE destination association ended: %s", exc)
                for rest in plan.instances[position + 1 :]:
                    tally.record(None)
                    subops.failed_uids.append(rest.sop_instance_uid)
                break
            responder.send(PENDING, tally, remaining=tally.remaining)
        if subops.cancelled:
            tally.cancelled = True
        status = _final_status(tally)
        remaining = tally.remaining if tally.cancelled else None
        failed = subops.failed_uids if status != SUCCESS else None
        responder.send(status, tally, remaining=remaining, failed=failed)


def open_destination(
    config: DimseConfig, peer: Peer, instances: list[InstanceLocation]
) -> Association:
    """An association to ``peer`` for sending ``instances`` (C-MOVE sub-operations, the send
    job), calling as this AE with its limits and timers, over TLS to a peer marked ``tls``;
    :class:`PeerError` if it fails."""
    return connect(
        peer.host,
        peer.port,
        calling_ae=config.ae_title,
        called_ae=peer.ae_title,
        contexts=move_contexts(instances),
        max_pdu=config.max_pdu,
        acse_timeout=config.acse_timeout,
        network_timeout=config.network_timeout,
        dimse_timeout=config.dimse_timeout,
        tls=(config.client_tls or ClientTls(None)).context if peer.tls else None,
    )


def handle_move(scp: ScpContext, assoc: Association, message: Message) -> None:
    """C-MOVE-RQ: send the matched instances to a known AE (PS3.4 C.4.2.1)."""
    archive, config = scp.archive, scp.config
    responder = _Responder(assoc, message, commands.C_MOVE_RSP)
    who = peer_identity(assoc)
    destination = message.command.text(commands.MOVE_DESTINATION)
    peer = archive.peers.by_ae(destination)
    if peer is None:
        log.warning("C-MOVE from %s to unknown destination %r", who, destination)
        archive.retrieve.refuse(who, "C-MOVE", "unknown destination", destination)
        responder.send(MOVE_DESTINATION_UNKNOWN, comment=f"unknown destination {destination!r}")
        return
    plan = _plan(scp, assoc, message, responder, "C-MOVE", destination)
    if plan is None:
        return
    if not plan.instances:
        with archive.retrieve.transfer(plan):
            responder.send(SUCCESS, RetrieveTally())
        return
    try:
        link = open_destination(config, peer, plan.instances)
    except PeerError as exc:
        log.warning("C-MOVE destination %s: %s", destination, exc.message)
        with archive.retrieve.transfer(plan):  # audited: nothing sent
            responder.send(MOVE_DESTINATION_UNKNOWN, comment=exc.message)
        return
    message_id = message.command.message_id
    subops = SubOperations(
        link,
        RetrieveTally(),
        archive.retrieve.open,
        originator=(assoc.calling_ae, message_id),
    )
    try:
        _run(scp, plan, subops, responder, lambda: subops.check_cancel(assoc, message_id))
    finally:
        link.release()


def handle_get(scp: ScpContext, assoc: Association, message: Message) -> None:
    """C-GET-RQ: send the matched instances back on the same association (PS3.4 C.4.3.1)."""
    responder = _Responder(assoc, message, commands.C_GET_RSP)
    plan = _plan(scp, assoc, message, responder, "C-GET")
    if plan is None:
        return
    if not plan.instances:
        with scp.archive.retrieve.transfer(plan):
            responder.send(SUCCESS, RetrieveTally())
        return
    message_id = message.command.message_id
    subops = SubOperations(assoc, RetrieveTally(), scp.archive.retrieve.open, cancel_id=message_id)
    _run(scp, plan, subops, responder, lambda: subops.check_cancel(assoc, message_id))


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, VesaliusError) else type(exc).__name__
