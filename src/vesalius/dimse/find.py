"""C-FIND SCP for the Patient Root and Study Root models (PS3.4 C.4.1, C.6.1, C.6.2).

The identifier is decoded into a protocol-neutral query, the query service matches it, and
each match goes out as a Pending response (``0xFF00``; ``0xFF01`` when the request holds keys
the archive does not support, which come back zero-length, PS3.4 Table C.4-1). A C-CANCEL-RQ
read between matches ends it with ``0xFE00``; a refused identifier gets its failure status
with an Error Comment (0xA900 for a level outside the model or a missing higher-level unique
key, 0xC000 for a malformed value), through :mod:`vesalius.dimse.status`.

Responses are encoded in the request's Specific Character Set when it holds every returned
value, else in UTF-8 (:mod:`vesalius.dicom.charset`).

SOP Class Extended Negotiation (PS3.4 C.5.1.1.2): relational queries, combined date-time
matching and fuzzy semantic matching of person names are accepted when asked for.
"""

from __future__ import annotations

from vesalius.dicom.identifier import build_response, encode_response, requested_charset
from vesalius.dicom.model import Model
from vesalius.dicom.uids import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from vesalius.dimse import commands
from vesalius.dimse.association import Association, Message, decode_data_set, encode_data_set
from vesalius.dimse.config import ScpContext
from vesalius.dimse.identifiers import query_from_identifier
from vesalius.dimse.status import CANCEL, PENDING, SUCCESS, failure_status
from vesalius.dimse.store import peer_identity
from vesalius.errors import CancelledError, QueryError, VesaliusError

#: Pending, with a warning that optional keys were not supported (PS3.4 Table C.4-1).
PENDING_WARNING = 0xFF01
MODELS: dict[str, Model] = {PATIENT_ROOT_FIND: "PATIENT", STUDY_ROOT_FIND: "STUDY"}
#: Extended negotiation bytes we can honour: 1 relational-queries, 2 combined date-time
#: matching, 3 fuzzy semantic matching of person names (PS3.4 Table C.5-2).
SUPPORTED_OPTIONS = 3


def extended_answer(asked: bytes) -> bytes:
    """Accept each option asked for that we support (PS3.4 C.5.1.1.2)."""
    return bytes(1 if flag == 1 else 0 for flag in asked[:SUPPORTED_OPTIONS])


def negotiated(assoc: Association, sop_class: str) -> tuple[bool, bool, bool]:
    """``(relational, combined date-time, fuzzy)`` as accepted for ``sop_class``."""
    info = assoc.agreed.extended.get(sop_class, b"")
    flags = [len(info) > i and info[i] == 1 for i in range(SUPPORTED_OPTIONS)]
    return flags[0], flags[1], flags[2]


def handle_find(scp: ScpContext, assoc: Association, message: Message) -> None:
    """C-FIND-RQ: one Pending response per match, then the final status (PS3.4 C.4.1.2)."""
    request, context = message.command, message.context
    sop_class = context.abstract_syntax
    message_id = request.message_id
    cx = context.id

    def send(status: int, identifier: bytes | None = None, comment: str = "") -> None:
        extra = [(commands.ERROR_COMMENT, comment or None)]
        rsp = commands.response(
            request, commands.C_FIND_RSP, status, data_set=identifier is not None, extra=extra
        )
        assoc.send(cx, rsp, identifier)

    try:
        if sop_class not in MODELS:
            raise QueryError(f"C-FIND is not supported for {sop_class}")
        relational, combined, fuzzy = negotiated(assoc, sop_class)
        try:
            identifier = decode_data_set(message.data or b"", context.transfer_syntax)
            query = query_from_identifier(
                identifier,
                MODELS[sop_class],
                relational=relational,
                combined_datetime=combined,
                fuzzy=fuzzy,
            )
        except VesaliusError:
            raise
        except Exception as exc:
            raise QueryError(f"cannot decode the identifier: {type(exc).__name__}") from exc
        charset = requested_charset(identifier)
        result = scp.archive.query.find(
            query, peer_identity(assoc), cancelled=lambda: assoc.cancel_requested(message_id)
        )
        status = PENDING_WARNING if result.unsupported else PENDING
        syntax = context.transfer_syntax
        # Every Pending response carries the same command set: encoded once.
        pending = commands.response(request, commands.C_FIND_RSP, status, data_set=True)
        for record in result:
            data = encode_response(record, charset, syntax)
            if data is None:  # sequences, ISO 2022, other syntaxes: through pydicom
                data = encode_data_set(build_response(record, charset), syntax)
            assoc.send(cx, pending, data)
    except CancelledError:
        send(CANCEL)
        return
    except Exception as exc:
        if assoc.ended:
            raise
        send(*_failure(exc))
        return
    send(SUCCESS)


def _failure(exc: Exception) -> tuple[int, None, str]:
    status, comment = failure_status(exc, "C-FIND")
    return status, None, comment
