"""Presentation contexts (PS3.8 7.1.1.13, 9.3.2.2) and how the acceptor answers them, with
SCP/SCU Role Selection (PS3.7 D.3.3.4).

A context is proposed with one abstract syntax and one or more transfer syntaxes; the acceptor
answers each with a result (PS3.8 Table 9-18) and, when it accepts, one transfer syntax.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vesalius.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
)

#: Presentation context results (PS3.8 Table 9-18).
ACCEPTANCE = 0x00
USER_REJECTION = 0x01
NO_REASON = 0x02
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04

#: What a context proposes when no transfer syntax is named: the uncompressed ones.
DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    IMPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
)


@dataclass(slots=True)
class PresentationContext:
    """One presentation context: proposed (``result`` None) or answered.

    ``scu_role``/``scp_role`` are, on a proposal or in what we support, the SCP/SCU Role
    Selection we ask for or allow (None: not negotiated); ``as_scu``/``as_scp`` are, on an
    answer, the roles we may take on it.
    """

    abstract_syntax: str
    transfer_syntax: list[str] = field(default_factory=list)
    context_id: int | None = None
    result: int | None = None
    scu_role: bool | None = None
    scp_role: bool | None = None
    as_scu: bool = False
    as_scp: bool = False


def build_context(
    abstract_syntax: str, transfer_syntax: Iterable[str] | str | None = None
) -> PresentationContext:
    """A context proposing ``abstract_syntax`` in ``transfer_syntax`` (one UID or several,
    duplicates dropped; default :data:`DEFAULT_TRANSFER_SYNTAXES`)."""
    if transfer_syntax is None:
        syntaxes: Iterable[str] = DEFAULT_TRANSFER_SYNTAXES
    elif isinstance(transfer_syntax, str):
        syntaxes = (transfer_syntax,)
    else:
        syntaxes = transfer_syntax
    return PresentationContext(str(abstract_syntax), list(dict.fromkeys(map(str, syntaxes))))


@dataclass(frozen=True, slots=True)
class RoleReply:
    """An SCP/SCU Role Selection sub-item in the A-ASSOCIATE-AC (PS3.7 D.3.3.4)."""

    sop_class: str
    scu: bool
    scp: bool


Roles = tuple[bool | None, bool | None]

#: The outcome of role selection, as (requestor is SCU, requestor is SCP, we are SCU, we are
#: SCP), by the requestor's proposal and then our (SCU, SCP) support (PS3.7 D.3.3.4; the same
#: table as pynetdicom's, tests/test_associate_pdu.py): a role is taken only when the requestor
#: proposed it and the acceptor allows it; combinations the standard does not define fall back
#: to the default roles or reject the context, as there.
_DEFAULT = (True, False, False, True)
_BOTH = (True, True, True, True)
_REJECTED = (False, False, False, False)
_INVERTED = (False, True, True, False)


_ROLE_TABLE: dict[Roles, dict[tuple[bool, bool], tuple[bool, bool, bool, bool]]] = {
    (True, True): {
        (True, True): _BOTH,
        (True, False): _DEFAULT,
        (False, False): _REJECTED,
        (False, True): _INVERTED,
    },
    (True, False): {
        (True, True): _DEFAULT,
        (True, False): _DEFAULT,
        (False, False): _REJECTED,
        (False, True): _REJECTED,
    },
    (False, True): {
        (True, True): _INVERTED,
        (True, False): _REJECTED,
        (False, False): _REJECTED,
        (False, True): _INVERTED,
    },
    (False, False): {
        (True, True): _REJECTED,
        (True, False): _REJECTED,
        (False, False): _REJECTED,
        (False, True): _REJECTED,
    },
}


def _role_outcome(proposed: Roles, ours: tuple[bool, bool]) -> tuple[bool, bool, bool, bool]:
    return _ROLE_TABLE.get(proposed, {}).get(ours, _DEFAULT)


def negotiate_as_acceptor(
    proposed: Sequence[PresentationContext],
    supported: Sequence[PresentationContext],
    roles: Mapping[str, Roles] | None = None,
) -> tuple[list[PresentationContext], list[RoleReply]]:
    """Answer each proposed context (PS3.8 9.3.3.2), sorted by context id, and the SCP/SCU Role
    Selection replies (PS3.7 D.3.3.4), sorted by SOP class.

    A context is accepted when its abstract syntax is supported and one of its transfer
    syntaxes is: the requestor's first choice among ours wins (PS3.8 9.3.2.2 leaves the choice
    to the acceptor; the requestor's order is its preference, so a modality offering JPEG first
    sends JPEG, stored as it is). Roles follow the requestor's Role Selection item for the
    abstract syntax when we declare both roles for it; a context in which neither side may
    act is rejected (result 1). Without roles declared on our side the defaults apply (the
    requestor is SCU) and no reply item is sent.
    """
    roles = roles or {}
    ours = {cx.abstract_syntax: cx for cx in supported}
    answers: list[PresentationContext] = []
    replies: dict[str, RoleReply] = {}
    for request in proposed:
        answer = PresentationContext(request.abstract_syntax, context_id=request.context_id)
        mine = ours.get(request.abstract_syntax)
        if mine is None:
            answer.result = ABSTRACT_SYNTAX_NOT_SUPPORTED
            answer.transfer_syntax = request.transfer_syntax[:1]
            answers.append(answer)
            continue
        chosen = next((ts for ts in request.transfer_syntax if ts in mine.transfer_syntax), None)
        if chosen is None:
            answer.result = TRANSFER_SYNTAXES_NOT_SUPPORTED
            answer.transfer_syntax = request.transfer_syntax[:1]
            answers.append(answer)
            continue
        answer.transfer_syntax = [chosen]
        answer.result = ACCEPTANCE
        asked = roles.get(request.abstract_syntax)
        if mine.scu_role is None or mine.scp_role is None:
            answer.as_scu, answer.as_scp = False, True
            asked = None  # no reply item when we do not negotiate roles for it
        else:
            outcome = _role_outcome(asked or (None, None), (mine.scu_role, mine.scp_role))
            answer.as_scu, answer.as_scp = outcome[2], outcome[3]
        if not (answer.as_scu or answer.as_scp):
            answer.result = USER_REJECTION
        elif asked is not None:
            replies[request.abstract_syntax] = RoleReply(
                request.abstract_syntax,
                False if asked[0] is False else bool(mine.scu_role),
                False if asked[1] is False else bool(mine.scp_role),
            )
        answers.append(answer)
    answers.sort(key=lambda cx: cx.context_id or 0)
    return answers, [replies[sop] for sop in sorted(replies)]
