"""Association negotiation (PS3.8 7.1, 9.3.2-9.3.4; PS3.7 Annex D.3.3).

The A-ASSOCIATE PDUs and their nested items are decoded and encoded with pynetdicom's PDU
classes, and presentation contexts are matched with its ``negotiate_as_acceptor`` (including
SCP/SCU role selection); this module holds the decisions: which requests are rejected and why,
which transfer syntax wins (the requestor's first choice that we support, PS3.8 9.3.2.2), and
which extended negotiation items are answered.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from vesalius.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from vesalius.dimse.pdu import ASSOCIATE_AC, ASSOCIATE_RQ, REASON_INVALID_PARAMETER, ProtocolError

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 Table 9-21.
RJ_NO_REASON = (0x01, 0x01, 0x01)
RJ_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
RJ_CALLING_AE = (0x01, 0x01, 0x03)
RJ_CALLED_AE = (0x01, 0x01, 0x07)
RJ_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
RJ_CONGESTION = (0x02, 0x03, 0x01)
RJ_LIMIT = (0x02, 0x03, 0x02)

_HEADER = struct.Struct(">BxL")


class Rejected(Exception):
    """The association request is refused with ``(result, source, reason)``."""

    def __init__(self, reason: tuple[int, int, int], message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Context:
    """An accepted presentation context, from our side: may we act as SCU / SCP on it."""

    id: int
    abstract_syntax: str
    transfer_syntax: str
    as_scu: bool
    as_scp: bool


@dataclass(slots=True)
class Negotiated:
    """What an association agreed on."""

    calling_ae: str
    called_ae: str
    contexts: dict[int, Context]
    #: Largest P-DATA-TF variable field the peer accepts (0 = no limit).
    peer_max_pdu: int
    #: SOP Class Extended Negotiation bytes we accepted, by SOP class (PS3.7 D.3.3.5).
    extended: dict[str, bytes] = field(default_factory=dict)
    peer_implementation: str = ""
    peer_version: str = ""
    #: The requestor's user identity, when it sent one (PS3.7 D.3.3.7); not yet verified.
    user_identity: bytes = b""


@dataclass(frozen=True)
class AcceptorPolicy:
    """What this AE accepts: its title, checks, and supported contexts."""

    ae_title: str
    max_pdu: int
    supported: Sequence[PresentationContext]
    require_called_ae: bool = True
    #: Whether a calling AE title is known; None: every caller is accepted.
    calling_known: Callable[[str], bool] | None = None
    #: SOP class -> function from the requested extended bytes to the accepted ones.
    extended: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)


def ae_title_problem(raw: bytes) -> str:
    """Why ``raw`` (16 bytes of an A-ASSOCIATE-RQ) is not an AE title, or "" when it is one:
    VR AE allows the default repertoire without backslash or control characters, and not
    only spaces (PS3.5 6.2; PS3.8 9.3.2)."""
    if any(byte < 0x20 or byte > 0x7E or byte == 0x5C for byte in raw.rstrip(b"\0")):
        return "holds characters an AE title may not"
    if not raw.strip(b" \0"):
        return "is empty"
    return ""


def full_pdu(kind: int, body: bytes | bytearray) -> bytes:
    return _HEADER.pack(kind, len(body)) + bytes(body)


def decode_request(body: bytes | bytearray) -> A_ASSOCIATE:
    """The A-ASSOCIATE-RQ as a primitive; a malformed one is a :class:`ProtocolError`."""
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(full_pdu(ASSOCIATE_RQ, body))
        return pdu.to_primitive()
    except Exception as exc:
        raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {exc}", REASON_INVALID_PARAMETER) from exc


def _items(primitive: A_ASSOCIATE, kind: type) -> list[object]:
    return [item for item in primitive.user_information if isinstance(item, kind)]


def _own_user_info(max_pdu: int) -> list[object]:
    """Our Maximum Length, Implementation Class UID and Version Name items (PS3.7 D.3.3.1-2)."""
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    return [length, implementation, version]


def accept(
    body: bytes | bytearray, policy: AcceptorPolicy, over_limit: bool
) -> tuple[bytes, Negotiated]:
    """Negotiate an A-ASSOCIATE-RQ: the A-ASSOCIATE-AC PDU to send and what was agreed.

    Raises :class:`Rejected` with the A-ASSOCIATE-RJ reason when the request is refused:
    protocol version, application context, called/calling AE title, association limit.
    """
    if len(body) < 2 or not (body[1] & 1):
        raise Rejected(RJ_PROTOCOL_VERSION, "protocol version not supported")
    if len(body) < 68:
        raise ProtocolError(
            "A-ASSOCIATE-RQ shorter than its fixed fields", REASON_INVALID_PARAMETER
        )
    for name, raw, reason in (
        ("called", bytes(body[4:20]), RJ_CALLED_AE),
        ("calling", bytes(body[20:36]), RJ_CALLING_AE),
    ):
        problem = ae_title_problem(raw)
        if problem:
            raise Rejected(reason, f"{name} AE title {raw!r} {problem}")
    rq = decode_request(body)
    calling = str(rq.calling_ae_title).strip()
    called = str(rq.called_ae_title).strip()
    if str(rq.application_context_name) != APPLICATION_CONTEXT:
        raise Rejected(RJ_APPLICATION_CONTEXT, "unknown application context")
    if policy.require_called_ae and called != policy.ae_title.strip():
        raise Rejected(RJ_CALLED_AE, f"called AE title {called!r} is not ours")
    if policy.calling_known is not None and not policy.calling_known(calling):
        raise Rejected(RJ_CALLING_AE, f"calling AE title {calling!r} is not known")
    if over_limit:
        raise Rejected(RJ_LIMIT, "too many associations")

    roles = {
        UID(str(item.sop_class_uid)): (item.scu_role, item.scp_role)  # type: ignore[attr-defined]
        for item in _items(rq, SCP_SCU_RoleSelectionNegotiation)
    }
    proposed = rq.presentation_context_definition_list
    results, role_replies = negotiate_as_acceptor(proposed, list(policy.supported), roles)
    _prefer_requestor_order(results, proposed, policy.supported)

    max_pdu = 0
    for item in _items(rq, MaximumLengthNotification):
        max_pdu = int(item.maximum_length_received or 0)  # type: ignore[attr-defined]
    agreed = Negotiated(
        calling_ae=calling,
        called_ae=called,
        contexts={
            int(cx.context_id): Context(
                int(cx.context_id),
                str(cx.abstract_syntax),
                str(cx.transfer_syntax[0]),
                bool(cx.as_scu),
                bool(cx.as_scp),
            )
            for cx in results
            if cx.result == 0x00 and cx.context_id is not None
        },
        peer_max_pdu=max_pdu,
    )
    for item in _items(rq, ImplementationClassUIDNotification):
        agreed.peer_implementation = str(item.implementation_class_uid or "")  # type: ignore[attr-defined]
    for item in _items(rq, ImplementationVersionNameNotification):
        agreed.peer_version = str(item.implementation_version_name or "")  # type: ignore[attr-defined]
    for item in _items(rq, UserIdentityNegotiation):
        agreed.user_identity = bytes(item.primary_field or b"")  # type: ignore[attr-defined]

    ac = A_ASSOCIATE()
    ac.application_context_name = UID(APPLICATION_CONTEXT)
    ac.calling_ae_title = rq.calling_ae_title
    ac.called_ae_title = rq.called_ae_title
    ac.result = 0x00
    ac.result_source = 0x01
    ac.presentation_context_definition_results_list = results
    info = _own_user_info(policy.max_pdu)
    if _items(rq, AsynchronousOperationsWindowNegotiation):
        window = AsynchronousOperationsWindowNegotiation()  # we perform one at a time
        window.maximum_number_operations_invoked = 1
        window.maximum_number_operations_performed = 1
        info.append(window)
    info.extend(role_replies)
    for item in _items(rq, SOPClassExtendedNegotiation):
        sop = str(item.sop_class_uid)  # type: ignore[attr-defined]
        answer = policy.extended.get(sop)
        asked = bytes(item.service_class_application_information or b"")  # type: ignore[attr-defined]
        if answer is None or not asked:
            continue
        accepted = answer(asked)
        agreed.extended[sop] = accepted
        reply = SOPClassExtendedNegotiation()
        reply.sop_class_uid = UID(sop)
        reply.service_class_application_information = accepted
        info.append(reply)
    ac.user_information = info  # type: ignore[assignment]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(ac)
    return pdu.encode(), agreed


def _prefer_requestor_order(
    results: list[PresentationContext],
    proposed: list[PresentationContext],
    supported: Sequence[PresentationContext],
) -> None:
    """Of the transfer syntaxes proposed in one context, the first one we support wins
    (pynetdicom picks by our list). A modality offering JPEG first then sends JPEG, stored
    as it is, rather than decompressing for us (PS3.8 9.3.2.2: the acceptor chooses; the
    requestor's order is its preference)."""
    ours = {str(cx.abstract_syntax): {str(s) for s in cx.transfer_syntax} for cx in supported}
    by_id = {cx.context_id: cx for cx in proposed}
    for cx in results:
        request = by_id.get(cx.context_id)
        if cx.result != 0x00 or request is None:
            continue
        syntaxes = ours.get(str(cx.abstract_syntax), set())
        for syntax in request.transfer_syntax:
            if str(syntax) in syntaxes:
                cx.transfer_syntax = [syntax]
                break


# -- requestor side --------------------------------------------------------------------------


def request(
    calling_ae: str,
    called_ae: str,
    contexts: Sequence[PresentationContext],
    max_pdu: int,
    roles: Sequence[tuple[str, bool, bool]] = (),
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` (ids assigned 1, 3, 5, ...); ``roles``
    are SCP/SCU Role Selection items ``(sop class, scu, scp)``."""
    rq = A_ASSOCIATE()
    rq.application_context_name = UID(APPLICATION_CONTEXT)
    rq.calling_ae_title = calling_ae
    rq.called_ae_title = called_ae
    for number, cx in enumerate(contexts):
        cx.context_id = 2 * number + 1
    rq.presentation_context_definition_list = list(contexts)
    info = _own_user_info(max_pdu)
    for sop, scu, scp in roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = UID(sop)
        role.scu_role = scu
        role.scp_role = scp
        info.append(role)
    rq.user_information = info  # type: ignore[assignment]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(rq)
    return pdu.encode()


def accepted(
    body: bytes | bytearray, proposed: Sequence[PresentationContext], calling_ae: str
) -> Negotiated:
    """What an A-ASSOCIATE-AC agreed to, from the requestor's side."""
    pdu = A_ASSOCIATE_AC()
    try:
        pdu.decode(full_pdu(ASSOCIATE_AC, body))
        ac = pdu.to_primitive()
    except Exception as exc:
        raise ProtocolError(f"malformed A-ASSOCIATE-AC: {exc}", REASON_INVALID_PARAMETER) from exc
    by_id = {cx.context_id: cx for cx in proposed}
    roles = {
        str(item.sop_class_uid): (bool(item.scu_role), bool(item.scp_role))  # type: ignore[attr-defined]
        for item in _items(ac, SCP_SCU_RoleSelectionNegotiation)
    }
    contexts: dict[int, Context] = {}
    for cx in ac.presentation_context_definition_results_list:
        mine = by_id.get(cx.context_id)
        if cx.result != 0x00 or mine is None or not cx.transfer_syntax:
            continue
        sop = str(mine.abstract_syntax)
        scu, scp = roles.get(sop, (True, False))
        contexts[int(cx.context_id or 0)] = Context(
            int(cx.context_id or 0), sop, str(cx.transfer_syntax[0]), scu, scp
        )
    max_pdu = 0
    for item in _items(ac, MaximumLengthNotification):
        max_pdu = int(item.maximum_length_received or 0)  # type: ignore[attr-defined]
    return Negotiated(
        calling_ae=calling_ae,
        called_ae=str(ac.called_ae_title).strip(),
        contexts=contexts,
        peer_max_pdu=max_pdu,
    )
