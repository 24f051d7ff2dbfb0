"""Association negotiation (PS3.8 7.1, 9.3.2-9.3.4; PS3.7 Annex D.3.3).

The A-ASSOCIATE PDUs are decoded and encoded by :mod:`vesalius.dimse.associate_pdu` and
presentation contexts answered by :func:`vesalius.dimse.contexts.negotiate_as_acceptor`
(including SCP/SCU role selection); this module holds the decisions: which requests are
rejected and why, and which extended negotiation items are answered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vesalius.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from vesalius.dimse.associate_pdu import (
    APPLICATION_CONTEXT,
    AssociateAccept,
    AssociateRequest,
    ExtendedNegotiation,
    RoleSelection,
    UserInformation,
    decode_accept,
    decode_request,
    encode_accept,
    encode_request,
)
from vesalius.dimse.contexts import ACCEPTANCE, PresentationContext, negotiate_as_acceptor
from vesalius.dimse.pdu import REASON_INVALID_PARAMETER, ProtocolError

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 Table 9-21.
RJ_NO_REASON = (0x01, 0x01, 0x01)
RJ_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
RJ_CALLING_AE = (0x01, 0x01, 0x03)
RJ_CALLED_AE = (0x01, 0x01, 0x07)
RJ_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
RJ_CONGESTION = (0x02, 0x03, 0x01)
RJ_LIMIT = (0x02, 0x03, 0x02)


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
    #: Why a calling AE title at an address, authenticated so (``ae-title``, or
    #: ``certificate`` over mutual TLS), is refused ("" if it is not), as the archive's policy
    #: says; None: every caller is accepted.
    calling_refusal: Callable[[str, str, str], str] | None = None
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


def _own_user_info(max_pdu: int) -> UserInformation:
    """Our Maximum Length, Implementation Class UID and Version Name items (PS3.7 D.3.3.1-2)."""
    return UserInformation(max_pdu, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION)


def accept(
    body: bytes | bytearray,
    policy: AcceptorPolicy,
    over_limit: bool,
    address: str = "",
    method: str = "ae-title",
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
    calling = rq.calling_ae.strip()
    called = rq.called_ae.strip()
    if rq.application_context != APPLICATION_CONTEXT:
        raise Rejected(RJ_APPLICATION_CONTEXT, "unknown application context")
    if policy.require_called_ae and called != policy.ae_title.strip():
        raise Rejected(RJ_CALLED_AE, f"called AE title {called!r} is not ours")
    refusal = policy.calling_refusal(calling, address, method) if policy.calling_refusal else ""
    if refusal:
        raise Rejected(RJ_CALLING_AE, refusal)
    if over_limit:
        raise Rejected(RJ_LIMIT, "too many associations")

    asked = rq.user_info
    roles: dict[str, tuple[bool | None, bool | None]] = {
        role.sop_class: (role.scu, role.scp) for role in asked.roles
    }
    results, role_replies = negotiate_as_acceptor(rq.contexts, policy.supported, roles)
    agreed = Negotiated(
        calling_ae=calling,
        called_ae=called,
        contexts={
            cx.context_id: Context(
                cx.context_id, cx.abstract_syntax, cx.transfer_syntax[0], cx.as_scu, cx.as_scp
            )
            for cx in results
            if cx.result == ACCEPTANCE and cx.context_id is not None
        },
        peer_max_pdu=asked.max_length or 0,
        peer_implementation=asked.implementation_class_uid,
        peer_version=asked.implementation_version,
        user_identity=asked.user_identity.primary if asked.user_identity else b"",
    )
    info = _own_user_info(policy.max_pdu)
    if asked.async_window is not None:
        info.async_window = (1, 1)  # we perform one operation at a time
    info.roles = [RoleSelection(r.sop_class, r.scu, r.scp) for r in role_replies]
    for item in asked.extended:
        answer = policy.extended.get(item.sop_class)
        if answer is None or not item.info:
            continue
        accepted = answer(item.info)
        agreed.extended[item.sop_class] = accepted
        info.extended.append(ExtendedNegotiation(item.sop_class, accepted))
    ac = AssociateAccept(rq.called_ae, rq.calling_ae, results, info)
    return encode_accept(ac), agreed


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
    for number, cx in enumerate(contexts):
        cx.context_id = 2 * number + 1
    info = _own_user_info(max_pdu)
    info.roles = [RoleSelection(sop, scu, scp) for sop, scu, scp in roles]
    return encode_request(AssociateRequest(called_ae, calling_ae, list(contexts), info))


def accepted(
    body: bytes | bytearray, proposed: Sequence[PresentationContext], calling_ae: str
) -> Negotiated:
    """What an A-ASSOCIATE-AC agreed to, from the requestor's side."""
    ac = decode_accept(body)
    by_id = {cx.context_id: cx for cx in proposed}
    roles = {role.sop_class: (role.scu, role.scp) for role in ac.user_info.roles}
    contexts: dict[int, Context] = {}
    for cx in ac.contexts:
        mine = by_id.get(cx.context_id)
        if cx.result != ACCEPTANCE or mine is None or not cx.transfer_syntax:
            continue
        sop = mine.abstract_syntax
        scu, scp = roles.get(sop, (True, False))
        context_id = cx.context_id or 0
        contexts[context_id] = Context(context_id, sop, cx.transfer_syntax[0], scu, scp)
    return Negotiated(
        calling_ae=calling_ae,
        called_ae=ac.called_ae.strip(),
        contexts=contexts,
        peer_max_pdu=ac.user_info.max_length or 0,
    )
