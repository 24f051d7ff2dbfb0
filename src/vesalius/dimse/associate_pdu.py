"""A-ASSOCIATE-RQ, -AC and -RJ PDUs and their items: encoding and decoding (PS3.8 9.3.2-9.3.4,
Annex D; user information sub-items PS3.7 D.3.3).

Decoding takes the PDU body (after the 6-byte header) and raises :class:`ProtocolError` with
the offending item named; nothing a peer sends makes it fail otherwise. Sub-items of the User
Information item that are not defined are skipped (PS3.7 D.3.3: extensions); unknown items
elsewhere, item lengths that overrun their parent, even or repeated context ids, and UIDs that
are not UIDs (PS3.5 9.1) are errors.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from vesalius.dimse.contexts import ACCEPTANCE, PresentationContext
from vesalius.dimse.pdu import (
    ASSOCIATE_AC,
    ASSOCIATE_RJ,
    ASSOCIATE_RQ,
    REASON_INVALID_PARAMETER,
    ProtocolError,
)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# Item types (PS3.8 Table 9-12 ff., PS3.7 D.3.3).
APPLICATION_CONTEXT_ITEM = 0x10
CONTEXT_RQ_ITEM = 0x20
CONTEXT_AC_ITEM = 0x21
ABSTRACT_SYNTAX_ITEM = 0x30
TRANSFER_SYNTAX_ITEM = 0x40
USER_INFORMATION_ITEM = 0x50
MAXIMUM_LENGTH = 0x51
IMPLEMENTATION_CLASS_UID = 0x52
ASYNC_OPERATIONS_WINDOW = 0x53
ROLE_SELECTION = 0x54
IMPLEMENTATION_VERSION_NAME = 0x55
SOP_CLASS_EXTENDED = 0x56
SOP_CLASS_COMMON_EXTENDED = 0x57
USER_IDENTITY_RQ = 0x58
USER_IDENTITY_AC = 0x59

_HEADER = struct.Struct(">BxL")
_ITEM = struct.Struct(">BxH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")
_FIXED = struct.Struct(">HH16s16s32x")  # protocol version, reserved, called, calling, reserved
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """SCP/SCU Role Selection (PS3.7 D.3.3.4): may the requestor act as SCU / SCP."""

    sop_class: str
    scu: bool
    scp: bool


@dataclass(frozen=True, slots=True)
class ExtendedNegotiation:
    """SOP Class Extended Negotiation (PS3.7 D.3.3.5): service-class-specific bytes."""

    sop_class: str
    info: bytes


@dataclass(frozen=True, slots=True)
class CommonExtendedNegotiation:
    """SOP Class Common Extended Negotiation (PS3.7 D.3.3.6), requestor only."""

    sop_class: str
    service_class: str
    related: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """User Identity Negotiation, requestor side (PS3.7 D.3.3.7.1): type 1 username, 2
    username and passcode, 3 Kerberos, 4 SAML, 5 JWT."""

    kind: int
    positive_response: bool
    primary: bytes
    secondary: bytes = b""


@dataclass(slots=True)
class UserInformation:
    """The User Information item (PS3.8 9.3.2.3, 9.3.3.3; PS3.7 D.3.3)."""

    #: Maximum Length Received (PS3.8 D.1); None when the item is absent, 0 for no limit.
    max_length: int | None = None
    implementation_class_uid: str = ""
    implementation_version: str = ""
    #: (maximum operations invoked, performed), PS3.7 D.3.3.3.
    async_window: tuple[int, int] | None = None
    roles: list[RoleSelection] = field(default_factory=list)
    extended: list[ExtendedNegotiation] = field(default_factory=list)
    common_extended: list[CommonExtendedNegotiation] = field(default_factory=list)
    #: Requestor's User Identity (in an A-ASSOCIATE-RQ).
    user_identity: UserIdentity | None = None
    #: Acceptor's User Identity server response (in an A-ASSOCIATE-AC).
    identity_response: bytes | None = None


@dataclass(slots=True)
class AssociateRequest:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2); contexts carry id, abstract and transfer syntaxes."""

    called_ae: str
    calling_ae: str
    contexts: list[PresentationContext]
    user_info: UserInformation
    application_context: str = APPLICATION_CONTEXT
    protocol_version: int = 1


@dataclass(slots=True)
class AssociateAccept:
    """An A-ASSOCIATE-AC (PS3.8 9.3.3); contexts carry id, result and one transfer syntax
    (the abstract syntax is not sent: it is the proposal's)."""

    called_ae: str
    calling_ae: str
    contexts: list[PresentationContext]
    user_info: UserInformation
    application_context: str = APPLICATION_CONTEXT
    protocol_version: int = 1


@dataclass(frozen=True, slots=True)
class AssociateReject:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent / 2 transient, source, reason."""

    result: int
    source: int
    reason: int


# -- encoding ----------------------------------------------------------------------------------


def _item(kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{kind:02X} of {len(value)} bytes is longer than 65535")
    return _ITEM.pack(kind, len(value)) + value


def _uid(value: str) -> bytes:
    return value.encode("ascii")


def _ae(title: str) -> bytes:
    raw = title.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"AE title {title!r} is longer than 16 characters")
    return raw.ljust(16, b" ")


def _short(value: bytes) -> bytes:
    """A field preceded by its 2-byte length."""
    return _U16.pack(len(value)) + value


def _encode_user_info(info: UserInformation) -> bytes:
    """Sub-items in item-type order, as DCMTK sends them."""
    parts: list[bytes] = []
    if info.max_length is not None:
        parts.append(_item(MAXIMUM_LENGTH, _U32.pack(info.max_length)))
    if info.implementation_class_uid:
        parts.append(_item(IMPLEMENTATION_CLASS_UID, _uid(info.implementation_class_uid)))
    if info.async_window is not None:
        parts.append(_item(ASYNC_OPERATIONS_WINDOW, struct.pack(">HH", *info.async_window)))
    for role in info.roles:
        value = _short(_uid(role.sop_class)) + bytes((role.scu, role.scp))
        parts.append(_item(ROLE_SELECTION, value))
    if info.implementation_version:
        parts.append(_item(IMPLEMENTATION_VERSION_NAME, info.implementation_version.encode()))
    for ext in info.extended:
        parts.append(_item(SOP_CLASS_EXTENDED, _short(_uid(ext.sop_class)) + ext.info))
    for common in info.common_extended:
        related = b"".join(_short(_uid(uid)) for uid in common.related)
        value = _short(_uid(common.sop_class)) + _short(_uid(common.service_class))
        parts.append(_item(SOP_CLASS_COMMON_EXTENDED, value + _short(related)))
    if info.user_identity is not None:
        who = info.user_identity
        value = bytes((who.kind, who.positive_response)) + _short(who.primary)
        parts.append(_item(USER_IDENTITY_RQ, value + _short(who.secondary)))
    if info.identity_response is not None:
        parts.append(_item(USER_IDENTITY_AC, _short(info.identity_response)))
    return _item(USER_INFORMATION_ITEM, b"".join(parts))


def _fixed(version: int, called: str, calling: str, application_context: str) -> bytes:
    return _FIXED.pack(version, 0, _ae(called), _ae(calling)) + _item(
        APPLICATION_CONTEXT_ITEM, _uid(application_context)
    )


def encode_request(rq: AssociateRequest) -> bytes:
    """The whole A-ASSOCIATE-RQ PDU."""
    parts = [_fixed(rq.protocol_version, rq.called_ae, rq.calling_ae, rq.application_context)]
    for cx in rq.contexts:
        if cx.context_id is None:
            raise ValueError("a proposed presentation context needs an id")
        value = bytes((cx.context_id, 0, 0, 0)) + _item(
            ABSTRACT_SYNTAX_ITEM, _uid(cx.abstract_syntax)
        )
        value += b"".join(_item(TRANSFER_SYNTAX_ITEM, _uid(ts)) for ts in cx.transfer_syntax)
        parts.append(_item(CONTEXT_RQ_ITEM, value))
    parts.append(_encode_user_info(rq.user_info))
    body = b"".join(parts)
    return _HEADER.pack(ASSOCIATE_RQ, len(body)) + body


def encode_accept(ac: AssociateAccept) -> bytes:
    """The whole A-ASSOCIATE-AC PDU."""
    parts = [_fixed(ac.protocol_version, ac.called_ae, ac.calling_ae, ac.application_context)]
    for cx in ac.contexts:
        if cx.context_id is None or cx.result is None:
            raise ValueError("an answered presentation context needs an id and a result")
        syntax = b"".join(_item(TRANSFER_SYNTAX_ITEM, _uid(ts)) for ts in cx.transfer_syntax[:1])
        parts.append(_item(CONTEXT_AC_ITEM, bytes((cx.context_id, 0, cx.result, 0)) + syntax))
    parts.append(_encode_user_info(ac.user_info))
    body = b"".join(parts)
    return _HEADER.pack(ASSOCIATE_AC, len(body)) + body


def encode_reject(rj: AssociateReject) -> bytes:
    """The whole A-ASSOCIATE-RJ PDU."""
    return _HEADER.pack(ASSOCIATE_RJ, 4) + bytes((0, rj.result, rj.source, rj.reason))


# -- decoding ----------------------------------------------------------------------------------


def _malformed(what: str, message: str) -> ProtocolError:
    return ProtocolError(f"malformed {what}: {message}", REASON_INVALID_PARAMETER)


def _items(data: bytes | memoryview, what: str) -> Iterator[tuple[int, memoryview]]:
    """``(item type, value)`` of the items that fill ``data`` exactly (PS3.8 9.3.1)."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < 4:
            raise _malformed(what, f"{end - pos} stray bytes at the end")
        kind, length = _ITEM.unpack_from(view, pos)
        if pos + 4 + length > end:
            raise _malformed(what, f"item 0x{kind:02X} of {length} bytes overruns its parent")
        yield kind, view[pos + 4 : pos + 4 + length]
        pos += 4 + length


def _text(value: bytes | memoryview, what: str) -> str:
    raw = bytes(value)
    try:
        return raw.decode("ascii").rstrip("\0 ")
    except UnicodeDecodeError:
        raise _malformed(what, f"{raw[:64]!r} is not ASCII") from None


@functools.lru_cache(maxsize=4096)
def _valid_uid(raw: bytes) -> str | None:
    """``raw`` as a UID (PS3.5 9.1, trailing NUL or space padding removed), None if it is not
    one; cached, since a request names the same few transfer syntaxes again and again."""
    try:
        text = raw.decode("ascii").rstrip("\0 ")
    except UnicodeDecodeError:
        return None
    return text if len(text) <= 64 and _UID.fullmatch(text) else None


def _decode_uid(value: bytes | memoryview, what: str) -> str:
    uid = _valid_uid(bytes(value))
    if uid is None:
        text = _text(value, what)  # raises when not ASCII
        raise _malformed(what, f"{text[:80]!r} is not a UID")
    return uid


def _take_short(value: memoryview, pos: int, what: str) -> tuple[bytes, int]:
    """A 2-byte length and the field it measures, from ``pos``: (field, position after)."""
    if pos + 2 > len(value):
        raise _malformed(what, "truncated")
    (length,) = _U16.unpack_from(value, pos)
    if pos + 2 + length > len(value):
        raise _malformed(what, f"a field of {length} bytes overruns the item")
    return bytes(value[pos + 2 : pos + 2 + length]), pos + 2 + length


def _decode_user_info(data: memoryview) -> UserInformation:
    info = UserInformation()
    for kind, value in _items(data, "User Information item"):
        if kind == MAXIMUM_LENGTH:
            if len(value) != 4:
                raise _malformed("Maximum Length sub-item", f"{len(value)} bytes, not 4")
            (info.max_length,) = _U32.unpack(value)
        elif kind == IMPLEMENTATION_CLASS_UID:
            info.implementation_class_uid = _decode_uid(value, "Implementation Class UID")
        elif kind == IMPLEMENTATION_VERSION_NAME:
            info.implementation_version = _text(value, "Implementation Version Name")
        elif kind == ASYNC_OPERATIONS_WINDOW:
            if len(value) != 4:
                raise _malformed("Asynchronous Operations Window", f"{len(value)} bytes, not 4")
            invoked, performed = struct.unpack(">HH", value)
            info.async_window = (invoked, performed)
        elif kind == ROLE_SELECTION:
            what = "SCP/SCU Role Selection sub-item"
            uid, pos = _take_short(value, 0, what)
            if len(value) != pos + 2:
                raise _malformed(what, "roles missing or trailing bytes")
            info.roles.append(
                RoleSelection(_decode_uid(uid, what), bool(value[pos]), bool(value[pos + 1]))
            )
        elif kind == SOP_CLASS_EXTENDED:
            what = "SOP Class Extended Negotiation sub-item"
            uid, pos = _take_short(value, 0, what)
            info.extended.append(ExtendedNegotiation(_decode_uid(uid, what), bytes(value[pos:])))
        elif kind == SOP_CLASS_COMMON_EXTENDED:
            info.common_extended.append(_decode_common_extended(value))
        elif kind == USER_IDENTITY_RQ:
            what = "User Identity sub-item"
            if len(value) < 2:
                raise _malformed(what, "truncated")
            primary, pos = _take_short(value, 2, what)
            secondary, pos = _take_short(value, pos, what)
            if pos != len(value):
                raise _malformed(what, "trailing bytes")
            info.user_identity = UserIdentity(value[0], bool(value[1]), primary, secondary)
        elif kind == USER_IDENTITY_AC:
            response, pos = _take_short(value, 0, "User Identity response sub-item")
            info.identity_response = response
        # other sub-item types: not defined, skipped
    return info


def _decode_common_extended(value: memoryview) -> CommonExtendedNegotiation:
    what = "SOP Class Common Extended Negotiation sub-item"
    sop, pos = _take_short(value, 0, what)
    service, pos = _take_short(value, pos, what)
    related_bytes, pos = _take_short(value, pos, what)
    related: list[str] = []
    view, at = memoryview(related_bytes), 0
    while at < len(view):
        uid, at = _take_short(view, at, what)
        related.append(_decode_uid(uid, what))
    return CommonExtendedNegotiation(
        _decode_uid(sop, what), _decode_uid(service, what), tuple(related)
    )


def _decode_context(kind: int, value: memoryview, what: str) -> PresentationContext:
    if len(value) < 4:
        raise _malformed(what, "presentation context item shorter than 4 bytes")
    context_id = value[0]
    if context_id % 2 == 0:
        raise _malformed(what, f"presentation context id {context_id} is not odd")
    cx = PresentationContext("", context_id=context_id)
    abstract: list[str] = []
    # An A-ASSOCIATE-AC's transfer syntax is not to be tested unless the context was accepted
    # (PS3.8 9.3.3.2): some peers leave it empty.
    check = kind == CONTEXT_RQ_ITEM or value[2] == ACCEPTANCE
    for sub, sub_value in _items(value[4:], f"presentation context {context_id}"):
        if sub == ABSTRACT_SYNTAX_ITEM and kind == CONTEXT_RQ_ITEM:
            abstract.append(_decode_uid(sub_value, f"abstract syntax of context {context_id}"))
        elif sub == TRANSFER_SYNTAX_ITEM:
            where = f"transfer syntax of context {context_id}"
            syntax = _decode_uid(sub_value, where) if check else _text(sub_value, where)
            if syntax:
                cx.transfer_syntax.append(syntax)
        else:
            raise _malformed(what, f"sub-item 0x{sub:02X} in presentation context {context_id}")
    if kind == CONTEXT_RQ_ITEM:
        if len(abstract) != 1 or not cx.transfer_syntax:
            raise _malformed(
                what,
                f"presentation context {context_id} needs one abstract syntax and at least "
                "one transfer syntax",
            )
        cx.abstract_syntax = abstract[0]
    else:
        cx.result = value[2]
        if cx.result == 0 and len(cx.transfer_syntax) != 1:
            raise _malformed(
                what, f"accepted presentation context {context_id} needs one transfer syntax"
            )
    return cx


def _decode(body: bytes | bytearray, pdu_kind: int, what: str) -> AssociateRequest:
    if len(body) < _FIXED.size:
        raise _malformed(what, f"{len(body)} bytes, shorter than its fixed fields")
    version, _, called, calling = _FIXED.unpack_from(body)
    context_kind = CONTEXT_RQ_ITEM if pdu_kind == ASSOCIATE_RQ else CONTEXT_AC_ITEM
    application = ""
    contexts: list[PresentationContext] = []
    seen: set[int] = set()
    info: UserInformation | None = None
    for kind, value in _items(memoryview(body)[_FIXED.size :], what):
        if kind == APPLICATION_CONTEXT_ITEM and not application:
            application = _text(value, "Application Context Name")
        elif kind == context_kind:
            cx = _decode_context(kind, value, what)
            if cx.context_id in seen:
                raise _malformed(what, f"presentation context id {cx.context_id} repeated")
            seen.add(cx.context_id or 0)
            contexts.append(cx)
        elif kind == USER_INFORMATION_ITEM and info is None:
            info = _decode_user_info(value)
        else:
            raise _malformed(what, f"unexpected item 0x{kind:02X}")
    if not application:
        raise _malformed(what, "no Application Context item")
    return AssociateRequest(
        _text(called, "called AE title"),
        _text(calling, "calling AE title"),
        contexts,
        info or UserInformation(),
        application,
        version,
    )


def decode_request(body: bytes | bytearray) -> AssociateRequest:
    """An A-ASSOCIATE-RQ from its body; :class:`ProtocolError` when malformed."""
    return _decode(body, ASSOCIATE_RQ, "A-ASSOCIATE-RQ")


def decode_accept(body: bytes | bytearray) -> AssociateAccept:
    """An A-ASSOCIATE-AC from its body; :class:`ProtocolError` when malformed."""
    rq = _decode(body, ASSOCIATE_AC, "A-ASSOCIATE-AC")
    return AssociateAccept(
        rq.called_ae,
        rq.calling_ae,
        rq.contexts,
        rq.user_info,
        rq.application_context,
        rq.protocol_version,
    )


def decode_reject(body: bytes | bytearray) -> AssociateReject:
    """An A-ASSOCIATE-RJ from its body; :class:`ProtocolError` when it is not 4 bytes."""
    if len(body) != 4:
        raise _malformed("A-ASSOCIATE-RJ", f"{len(body)} bytes, not 4")
    return AssociateReject(body[1], body[2], body[3])
