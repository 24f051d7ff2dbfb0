"""C-FIND as service user (PS3.4 C.4.1): ``vesalius find``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset

from vesalius.dicom.uids import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)
from vesalius.dimse import commands
from vesalius.dimse.association import Association, decode_data_set, encode_data_set
from vesalius.dimse.contexts import PresentationContext, build_context
from vesalius.dimse.scu.link import ScuOptions, Status, associate, context_for
from vesalius.errors import PeerError
from vesalius.settings import Modality

Model = Literal["patient", "study"]
Operation = Literal["find", "move", "get"]
_QR_MODELS: dict[str, dict[str, str]] = {
    "patient": {"find": PATIENT_ROOT_FIND, "move": PATIENT_ROOT_MOVE, "get": PATIENT_ROOT_GET},
    "study": {"find": STUDY_ROOT_FIND, "move": STUDY_ROOT_MOVE, "get": STUDY_ROOT_GET},
}
UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


def qr_sop_class(operation: Operation, model: Model) -> str:
    return _QR_MODELS[model][operation]


def qr_context(operation: Operation, model: Model) -> PresentationContext:
    """The Query/Retrieve presentation context for an operation and information model."""
    return build_context(qr_sop_class(operation, model), list(UNCOMPRESSED))


def send_request(
    link: Association,
    operation: Operation,
    model: Model,
    identifier: Dataset,
    extra: list[tuple[int, commands.Value]] | None = None,
) -> tuple[int, int, str]:
    """Send a C-FIND/C-MOVE/C-GET-RQ with ``identifier``: its Message ID, the context it went
    on and that context's transfer syntax (for decoding the responses' data sets)."""
    sop_class = qr_sop_class(operation, model)
    context = context_for(link, sop_class)
    if context is None:
        raise PeerError(f"the peer did not accept {operation.upper()} in this model")
    syntax = link.contexts[context].transfer_syntax
    field = {"find": commands.C_FIND_RQ, "move": commands.C_MOVE_RQ, "get": commands.C_GET_RQ}
    message_id = link.next_message_id()
    request = commands.encode(
        [
            (commands.COMMAND_FIELD, field[operation]),
            (commands.MESSAGE_ID, message_id),
            (commands.PRIORITY, 0),
            (commands.DATA_SET_TYPE, commands.DATA_SET),
            (commands.AFFECTED_SOP_CLASS, sop_class),
            *(extra or []),
        ]
    )
    link.send(context, request, encode_data_set(identifier, syntax))
    return message_id, context, syntax


@dataclass(frozen=True)
class FindResponse:
    """One C-FIND response: a match (Pending, with identifier) or the final status."""

    status: Status
    identifier: Dataset | None

    @property
    def final(self) -> bool:
        return not self.status.pending


def find(
    peer: Modality, options: ScuOptions, identifier: Dataset, model: Model
) -> Iterator[FindResponse]:
    """C-FIND: yield each match, then the final response."""
    with associate(peer, options, [qr_context("find", model)]) as link:
        message_id, _, syntax = send_request(link, "find", model, identifier)
        while True:
            message = link.receive(timeout=options.dimse_timeout)
            answer = message.command
            if answer.field != commands.C_FIND_RSP or answer.message_id_responded != message_id:
                raise PeerError(f"unexpected {answer.name} during a C-FIND")
            found = decode_data_set(message.data, syntax) if message.data else None
            response = FindResponse(Status.of("C-FIND", answer), found)
            yield response
            if response.final:
                return
