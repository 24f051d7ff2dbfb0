"""C-FIND SCP for the Patient Root and Study Root models (PS3.4 C.4.1, C.6.1, C.6.2).

The handler decodes the identifier into a protocol-neutral query, lets the query service
match it, and yields one ``(0xFF00, identifier)`` per match: ``0xFF01`` instead when the
request holds keys the archive does not support (they come back zero-length, PS3.4 Table
C.4-1). A C-CANCEL seen between matches ends it with ``0xFE00``; a refused identifier gets
its failure status with an Error Comment (0xA900 for a level outside the model or a missing
higher-level unique key, 0xC000 for a malformed value), through :mod:`vesalius.dimse.status`.

Responses are encoded in the request's Specific Character Set when it holds every returned
value, else in UTF-8 (:mod:`vesalius.dicom.charset`).

SOP Class Extended Negotiation (PS3.4 C.5.1.1.2): relational queries, combined date-time
matching and fuzzy semantic matching of person names are accepted when asked for.

C-CANCEL: checked between matches, including one that arrived before the handler started
(:func:`note_cancel`); pynetdicom's DUL reads the socket only when it has nothing to send, so
the handler lets it drain every :data:`FLUSH_EVERY` responses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from vesalius.dicom.identifier import build_response, requested_charset
from vesalius.dicom.uids import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from vesalius.dimse.status import CANCEL, PENDING, failure
from vesalius.dimse.store import peer_identity
from vesalius.errors import CancelledError, QueryError
from vesalius.services.archive import Archive
from vesalius.services.query import Model, query_from_identifier

#: Pending, with a warning that optional keys were not supported (PS3.4 Table C.4-1).
PENDING_WARNING = 0xFF01
MODELS: dict[str, Model] = {PATIENT_ROOT_FIND: "PATIENT", STUDY_ROOT_FIND: "STUDY"}
#: Extended negotiation bytes we can honour: 1 relational-queries, 2 combined date-time
#: matching, 3 fuzzy semantic matching of person names (PS3.4 Table C.5-2).
SUPPORTED_OPTIONS = 3

#: Every this many responses, wait for pynetdicom to send what it has queued: its DUL reads
#: from the socket only when it has nothing left to send, so this is when a C-CANCEL gets
#: through; it also keeps a large result from piling up in memory.
FLUSH_EVERY = 16

Response = tuple[int | Dataset, Dataset | None]


def flush(assoc: Any) -> None:
    """Wait until the association's outgoing PDU queue is empty (or the association ended)."""
    queue = getattr(getattr(assoc, "dul", None), "to_provider_queue", None)
    if queue is None:
        return
    pause = threading.Event()
    while not queue.empty() and assoc.is_established:
        pause.wait(0.0005)


C_FIND_RQ, C_CANCEL_RQ = 0x0020, 0x0FFF


def _cancels(assoc: Any) -> dict[int, bool]:
    found: dict[int, bool] | None = getattr(assoc, "_vesalius_find_cancels", None)
    if found is None:
        found = {}
        assoc._vesalius_find_cancels = found
    return found


def note_cancel(event: Any, archive: Archive) -> None:
    """EVT_DIMSE_RECV: remember, per Message ID, whether a C-CANCEL followed a C-FIND-RQ.

    pynetdicom 3.0 drops a C-CANCEL that arrives before the C-FIND handler starts ("clear out
    any C-CANCEL requests received beforehand"), so an SCU that cancels at once would be
    ignored. This runs in the receiving thread in arrival order: a C-FIND-RQ resets its
    Message ID, a later C-CANCEL-RQ for it marks it, and a stale one for an earlier request
    with the same ID is forgotten.
    """
    command: Any = getattr(event.message, "command_set", None)
    field = getattr(command, "CommandField", None)
    if field == C_FIND_RQ:
        _cancels(event.assoc)[int(command.MessageID)] = False
    elif field == C_CANCEL_RQ:
        _cancels(event.assoc)[int(command.MessageIDBeingRespondedTo)] = True


def handle_extended(event: Any, archive: Archive) -> dict[str, bytes]:
    """EVT_SOP_EXTENDED: accept, for the FIND SOP classes, each option asked for that we
    support; other SOP classes get no answer (their options are then not supported)."""
    answer: dict[str, bytes] = {}
    for uid, info in (event.app_info or {}).items():
        if str(uid) in MODELS and info:
            asked = bytes(info)[:SUPPORTED_OPTIONS]
            answer[uid] = bytes(1 if flag == 1 else 0 for flag in asked)
    return answer


def negotiated(assoc: Any, sop_class: str) -> tuple[bool, bool, bool]:
    """``(relational, combined date-time, fuzzy)`` as accepted for ``sop_class``."""
    accepted = getattr(assoc.acceptor, "sop_class_extended", {}) or {}
    info = b""
    for uid, value in accepted.items():
        if str(uid) == sop_class:
            info = bytes(value or b"")
    flags = [len(info) > i and info[i] == 1 for i in range(SUPPORTED_OPTIONS)]
    return flags[0], flags[1], flags[2]


def handle_find(event: Any, archive: Archive) -> Iterator[Response]:
    """EVT_C_FIND: yield ``(pending status, identifier)`` per match (PS3.4 C.4.1.2/C.4.1.3)."""
    sop_class = str(event.request.AffectedSOPClassUID)
    try:
        relational, combined, fuzzy = negotiated(event.assoc, sop_class)
        try:
            identifier = event.identifier
        except Exception as exc:
            raise QueryError(f"cannot decode the identifier: {type(exc).__name__}") from exc
        query = query_from_identifier(
            identifier,
            MODELS[sop_class],
            relational=relational,
            combined_datetime=combined,
            fuzzy=fuzzy,
        )
        charset = requested_charset(identifier)
        cancels, message_id = _cancels(event.assoc), int(event.request.MessageID)
        result = archive.query.find(
            query,
            peer_identity(event),
            cancelled=lambda: bool(event.is_cancelled) or cancels.get(message_id, False),
        )
        status = PENDING_WARNING if result.unsupported else PENDING
        for sent, record in enumerate(result, 1):
            yield status, build_response(record, charset)
            if sent % FLUSH_EVERY == 0:
                flush(event.assoc)
    except CancelledError:
        yield CANCEL, None
    except Exception as exc:
        yield failure(exc, "C-FIND"), None


HANDLERS = [
    (evt.EVT_C_FIND, handle_find),
    (evt.EVT_SOP_EXTENDED, handle_extended),
    (evt.EVT_DIMSE_RECV, note_cancel),
]
