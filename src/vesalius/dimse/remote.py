"""Query and retrieve from a remote AE, the DIMSE part of ``services/remote.py``.

:class:`RemoteFind` is the service's finder: a Study Root C-FIND (PS3.4 C.4.1) answered within
a deadline, cancelled (C-CANCEL, PS3.7 9.3.2.3) once more matches came than the caller wants.
:func:`retrieve_handler` runs ``retrieve`` jobs: a C-MOVE with our own AE title as the Move
Destination (PS3.4 C.4.2; the peer sends to our C-STORE SCP, which ingests as for any sender),
or a C-GET whose C-STORE sub-operations come back on our association and are ingested as they
arrive, written straight into the spool (PS3.4 C.4.3, SCP/SCU Role Selection PS3.7 D.3.3.4).
Before a C-GET, :func:`sop_classes` asks the peer which SOP classes it will send, so those are
proposed first (the common storage classes otherwise, and in the room left).
Progress comes from the pending responses' sub-operation counts (PS3.4 C.4.2.1.4); a cancel
sends C-CANCEL and waits for the peer's final answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vesalius.dicom.uids import EXPLICIT_VR_LE, is_valid_uid
from vesalius.dimse import commands
from vesalius.dimse.association import Association, Message, decode_data_set, encode_data_set
from vesalius.dimse.config import DimseConfig
from vesalius.dimse.scu.find import qr_context, send_request
from vesalius.dimse.scu.keys import build_identifier
from vesalius.dimse.scu.link import ScuOptions, Status, associate, describe_peer, known_peer
from vesalius.dimse.scu.retrieve import RetrieveResponse, get_contexts
from vesalius.dimse.store import store_received
from vesalius.errors import NotFoundError, PeerError, QueryError, VesaliusError
from vesalius.identity import Identity
from vesalius.services.archive import Archive
from vesalius.services.jobs import (
    Handler,
    JobCancelled,
    JobContext,
    JobError,
    JobFailed,
    JobInterrupted,
)
from vesalius.services.peers import Peer
from vesalius.services.remote import Match, RemoteMatches

log = logging.getLogger(__name__)

#: Move Destination Unknown (PS3.4 C.4.2.1.5).
DESTINATION_UNKNOWN = 0xA801
#: Attributes of an identifier that are not answers (Specific Character Set, Q/R Level).
_NOT_ANSWERS = {0x00080005, 0x00080052}
_NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}
#: At most this many instances are listed to learn a C-GET's SOP Classes (else: the common set).
MAX_CLASS_MATCHES = 20_000


def scu_options(config: DimseConfig, timeout: float | None = None) -> ScuOptions:
    """How we call peers: our AE title, PDU size and timers (``timeout`` caps them all)."""

    def capped(value: float) -> float:
        return value if timeout is None else min(value, timeout)

    return ScuOptions(
        config.ae_title,
        config.max_pdu,
        capped(config.acse_timeout),
        capped(config.dimse_timeout),
        capped(config.network_timeout),
        False,
        config.client_tls,
    )


def cancel(link: Association, context: int, message_id: int) -> None:
    """Send C-CANCEL-RQ for the request ``message_id`` (PS3.7 9.3.2.3)."""
    request = commands.encode(
        [
            (commands.COMMAND_FIELD, commands.C_CANCEL_RQ),
            (commands.RESPONDED_TO, message_id),
            (commands.DATA_SET_TYPE, commands.NO_DATA_SET),
        ]
    )
    link.send(context, request)


# -- query ----------------------------------------------------------------------------------


def flat(identifier: Dataset) -> Match:
    """A C-FIND answer as an object keyed by keyword: text values (a person name as its
    DICOM text), numbers for IS and binary numbers, a list for several values; sequences
    and bulk values left out."""
    answer: Match = {}
    for element in identifier:
        if element.tag in _NOT_ANSWERS or element.VR in ("SQ", "OB", "OW", "UN"):
            continue
        keyword = element.keyword or f"{element.tag.group:04X}{element.tag.element:04X}"
        answer[keyword] = _value(element)
    return answer


def _value(element: DataElement) -> Any:
    value = element.value
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = [_one(element.VR, v) for v in value]
        return items if len(items) != 1 else items[0]
    return _one(element.VR, value)


def _one(vr: str, value: Any) -> Any:
    if vr in _NUMBER_VRS or vr == "IS":
        try:
            return int(value) if vr != "FL" and vr != "FD" else float(value)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bytes):
        return None
    return str(value)


def find(
    peer: Peer, options: ScuOptions, identifier: Dataset, limit: int, timeout: float
) -> tuple[list[Dataset], bool]:
    """A Study Root C-FIND on ``peer``, answered within ``timeout`` seconds in all: the
    matches, and whether more came than ``limit`` (then it is cancelled, C-CANCEL, PS3.7
    9.3.2.3)."""
    deadline = time.monotonic() + timeout
    found: list[Dataset] = []
    truncated = False
    with associate(known_peer(peer), options, [qr_context("find", "study")]) as link:
        message_id, context, syntax = send_request(link, "find", "study", identifier)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(
                    f"{describe_peer(known_peer(peer))}: no complete answer within {timeout:g} s"
                )
            message = link.receive(timeout=left)
            answer = message.command
            if answer.field != commands.C_FIND_RSP or answer.message_id_responded != message_id:
                raise PeerError(f"unexpected {answer.name} during a C-FIND")
            status = Status.of("C-FIND", answer)
            if status.pending:
                if message.data and not truncated:
                    if len(found) >= limit:
                        truncated = True
                        cancel(link, context, message_id)
                    else:
                        found.append(decode_data_set(message.data, syntax))
                continue
            if status.category not in ("Success", "Cancel", "Warning"):
                raise PeerError(f"{peer.ae_title} answered the C-FIND with {status}")
            return found, truncated


class RemoteFind:
    """The finder of :class:`~vesalius.services.remote.RemoteService`: a Study Root C-FIND
    as this AE, answered within ``timeout`` seconds in all (association included)."""

    def __init__(self, config: DimseConfig, timeout: float) -> None:
        self.config = config
        self.timeout = timeout

    def __call__(self, peer: Peer, level: str, keys: Sequence[str], limit: int) -> RemoteMatches:
        try:
            identifier = build_identifier(level, keys)
            encode_data_set(identifier, EXPLICIT_VR_LE)
        except QueryError:
            raise
        except Exception as exc:  # a value its VR cannot hold: the caller's mistake
            raise QueryError(f"the query cannot be encoded: {exc}") from None
        options = scu_options(self.config, self.timeout)
        found, truncated = find(peer, options, identifier, limit, self.timeout)
        return RemoteMatches([flat(match) for match in found], truncated)


def sop_classes(
    peer: Peer, options: ScuOptions, study_uid: str, series_uid: str = "", timeout: float = 30
) -> list[str]:
    """The SOP Classes a C-GET of the study (or series) will bring, as the peer says: its
    SOP Classes in Study (0008,0062; PS3.4 C.6.2.1.2, optional for an SCP), else the SOP
    Class UID (0008,0016) of each instance from an IMAGE-level C-FIND. Empty when the peer
    says neither (or more than :data:`MAX_CLASS_MATCHES` instances match: then the common
    classes serve)."""
    if not series_uid:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        identifier.SOPClassesInStudy = ""
        studies, _ = find(peer, options, identifier, 1, timeout)
        listed = [
            str(uid)
            for match in studies
            for uid in _values(match.get("SOPClassesInStudy"))
            if is_valid_uid(str(uid))
        ]
        if listed:
            return list(dict.fromkeys(listed))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = study_uid
    if series_uid:
        identifier.SeriesInstanceUID = series_uid
    identifier.SOPInstanceUID = ""
    identifier.SOPClassUID = ""
    images, truncated = find(peer, options, identifier, MAX_CLASS_MATCHES, timeout)
    if truncated:
        return []
    classes = [str(match.get("SOPClassUID", "")) for match in images]
    return list(dict.fromkeys(uid for uid in classes if is_valid_uid(uid)))


def _values(element: Any) -> list[Any]:
    if element is None or element == "":
        return []
    if isinstance(element, MultiValue | list | tuple):
        return list(element)
    return [element]


# -- retrieve -------------------------------------------------------------------------------


def retrieve_handler(archive: Archive, config: DimseConfig) -> Handler:
    """The handler of ``retrieve`` jobs of ``archive``, calling as ``config.ae_title``."""

    def run(context: JobContext) -> str:
        return _retrieve(archive, config, context)

    return run


def _retrieve(archive: Archive, config: DimseConfig, context: JobContext) -> str:
    assert archive.remote is not None, "the wiring builds the remote service with this handler"
    payload = context.payload
    try:
        peer = archive.remote.peer(str(payload["peer"]))
    except NotFoundError as exc:
        raise JobFailed(exc.message) from exc
    method = str(payload.get("method") or "move")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES" if payload.get("series_uid") else "STUDY"
    identifier.StudyInstanceUID = str(payload["study_uid"])
    if payload.get("series_uid"):
        identifier.SeriesInstanceUID = str(payload["series_uid"])
    service = "C-MOVE" if method == "move" else "C-GET"
    context.progress(0, 0, f"{service} from {peer.ae_title}: connecting", force=True)
    options = scu_options(config)
    target = known_peer(peer)
    try:
        if method == "move":
            with associate(target, options, [qr_context("move", "study")]) as link:
                extra: list[tuple[int, commands.Value]] = [
                    (commands.MOVE_DESTINATION, config.ae_title)
                ]
                message_id, qr, syntax = send_request(link, "move", "study", identifier, extra)
                final = _follow(link, context, service, (message_id, qr, syntax), options)
        else:
            who = Identity.ae(peer.ae_title, peer.host)
            needed = _needed_classes(peer, options, payload, context)
            contexts, roles = get_contexts("study", needed=needed)
            with associate(
                target, options, contexts, roles=roles, staging=archive.ingest.staging_file
            ) as link:
                message_id, qr, syntax = send_request(link, "get", "study", identifier)

                def on_store(message: Message, send: Sender) -> None:
                    status, comment = store_received(archive, message, who)
                    extra = [(commands.ERROR_COMMENT, comment or None)]
                    answer = commands.response(
                        message.command, commands.C_STORE_RSP, status, extra=extra
                    )
                    send(message.context.id, answer)

                final = _follow(link, context, service, (message_id, qr, syntax), options, on_store)
    except (JobCancelled, JobInterrupted, JobError):
        raise
    except VesaliusError as exc:
        raise JobError(exc.message) from exc
    return _outcome(final, service, peer, config)


def _needed_classes(
    peer: Peer, options: ScuOptions, payload: dict[str, Any], context: JobContext
) -> list[str]:
    """What :func:`sop_classes` learns of the C-GET's SOP Classes; empty (the common set)
    when the peer does not say or the query fails."""
    context.progress(0, 0, f"C-GET from {peer.ae_title}: asking which SOP classes", force=True)
    try:
        needed = sop_classes(
            peer,
            options,
            str(payload["study_uid"]),
            str(payload.get("series_uid") or ""),
            timeout=options.dimse_timeout,
        )
    except VesaliusError as exc:
        log.info("C-GET from %s: the SOP classes not learnt (%s)", peer.ae_title, exc.message)
        return []
    log.info("C-GET from %s: %d SOP class(es) to accept", peer.ae_title, len(needed))
    return needed


#: Sends a command on the association (one sender at a time): (context id, command set).
Sender = Callable[[int, bytes], None]


class _Watcher:
    """Beside a C-MOVE/C-GET: sends its C-CANCEL-RQ (PS3.7 9.3.2.3, 9.3.3.3) once the job is
    cancelled, seen at a progress report or by this watcher while the peer is silent (the
    job's heartbeat learns of a cancel request); and writes the latest progress when the peer
    goes quiet (progress reports are written at most twice a second). Sends on the
    association are serialized."""

    def __init__(self, link: Association, context: JobContext, request: tuple[int, int]) -> None:
        self.link = link
        self.context = context
        self.message_id, self.qr = request
        self.sent = False
        self._latest: tuple[int, int, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="retrieve-watch", daemon=True)

    def __enter__(self) -> _Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def send(self, context_id: int, command: bytes) -> None:
        with self._lock:
            self.link.send(context_id, command)

    def request(self) -> None:
        """Send the C-CANCEL-RQ (once)."""
        with self._lock:
            if self.sent or self.link.ended:
                return
            self.sent = True
            cancel(self.link, self.qr, self.message_id)

    def progress(self, done: int, total: int, message: str) -> None:
        """Report progress (throttled by the job); the watcher writes what was held back."""
        self._latest = (done, total, message)
        self.context.progress(done, total, message)

    def _watch(self) -> None:
        shown: tuple[int, int, str] | None = None
        while not self._stop.wait(0.5):
            try:
                latest = self._latest
                if latest is not None and latest != shown:
                    shown = latest
                    self.context.progress(*latest, force=True)
                elif self.context.cancelled():
                    raise JobCancelled("cancelled on request")
            except JobCancelled:
                try:
                    self.request()
                except Exception as exc:  # the association ended meanwhile
                    log.debug("C-CANCEL: %s", exc)
                return
            except Exception as exc:  # the index briefly unavailable, the runner stopping
                log.debug("retrieve progress: %s", exc)


def _follow(
    link: Association,
    context: JobContext,
    service: str,
    request: tuple[int, int, str],
    options: ScuOptions,
    on_store: Callable[[Message, Sender], None] | None = None,
) -> RetrieveResponse:
    """Read the responses to a C-MOVE/C-GET until the final one, reporting each pending
    response's counts as the job's progress; a cancel requested meanwhile becomes a
    C-CANCEL, and the job ends cancelled once the peer answers."""
    message_id, qr, syntax = request
    field = commands.C_MOVE_RSP if service == "C-MOVE" else commands.C_GET_RSP
    with _Watcher(link, context, (message_id, qr)) as watcher:
        while True:
            message = link.receive(timeout=options.dimse_timeout)
            answer = message.command
            if answer.field == commands.C_STORE_RQ and on_store is not None:
                on_store(message, watcher.send)
                continue
            if answer.field != field or answer.message_id_responded != message_id:
                raise PeerError(f"unexpected {answer.name} during a {service}")
            found = decode_data_set(message.data, syntax) if message.data else None
            response = RetrieveResponse.of(service, answer, found)
            if response.final:
                if watcher.sent:
                    raise JobCancelled(f"cancelled on request: {_summary(response)}")
                return response
            if watcher.sent:
                continue
            try:
                watcher.progress(_done(response), response.total or 0, _summary(response))
            except JobInterrupted:
                raise  # the association is aborted; the job runs again at the next start
            except JobCancelled:
                watcher.request()


def _done(response: RetrieveResponse) -> int:
    return response.completed + response.failed + response.warning


def _summary(response: RetrieveResponse) -> str:
    total = response.total
    text = f"{response.completed + response.warning} of {total if total is not None else '?'}"
    text += " retrieved"
    if response.warning:
        text += f" ({response.warning} with warnings)"
    if response.failed:
        text += f", {response.failed} failed"
    return text


def _outcome(final: RetrieveResponse, service: str, peer: Peer, config: DimseConfig) -> str:
    """The job's result from the final response, or the exception that ends it."""
    status = final.status
    if status.code == DESTINATION_UNKNOWN:
        raise JobFailed(
            f"{peer.ae_title} does not know our AE title {config.ae_title} as a move "
            f"destination: add {config.ae_title} (this server's host and DICOM port) to its "
            "known AEs, or retrieve with C-GET"
        )
    received = final.completed + final.warning
    summary = f"{received} instance(s) retrieved by {service} from {peer.ae_title}"
    if final.warning:
        summary += f" ({final.warning} with warnings)"
    if status.category == "Failure" or final.failed:
        failed = f", {final.failed} failed" if final.failed else ""
        raise JobError(f"{summary}{failed}: {status}")
    if status.category == "Cancel":
        raise JobError(f"{peer.ae_title} cancelled the {service}: {summary}")
    if received == 0:
        raise JobFailed(f"{peer.ae_title} has nothing that matches")
    return summary
