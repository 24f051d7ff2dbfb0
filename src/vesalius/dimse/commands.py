"""DIMSE command sets (PS3.7 E.1): group 0000, always Implicit VR Little Endian.

A command set is a handful of short elements, so it is parsed and written by hand rather than
through pydicom: :class:`Command` keeps each element's raw value and converts on access, and
:func:`encode` writes elements in tag order with the Command Group Length first.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from vesalius.dimse.pdu import REASON_INVALID_PARAMETER, ProtocolError
from vesalius.telemetry import metrics

# Command Field values (PS3.7 E.1-1).
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
# The DIMSE-N services (PS3.7 10.3): storage commitment, MPPS, UPS and print use them.
N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP = 0x0100, 0x8100
N_GET_RQ, N_GET_RSP = 0x0110, 0x8110
N_SET_RQ, N_SET_RSP = 0x0120, 0x8120
N_ACTION_RQ, N_ACTION_RSP = 0x0130, 0x8130
N_CREATE_RQ, N_CREATE_RSP = 0x0140, 0x8140
N_DELETE_RQ, N_DELETE_RSP = 0x0150, 0x8150
#: Command Data Set Type (0000,0800): this value means "no data set"; anything else, one follows.
NO_DATA_SET = 0x0101
DATA_SET = 0x0000

# Tags (element numbers of group 0000).
GROUP_LENGTH = 0x0000
AFFECTED_SOP_CLASS = 0x0002
REQUESTED_SOP_CLASS = 0x0003
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
RESPONDED_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
OFFENDING_ELEMENT = 0x0901
ERROR_COMMENT = 0x0902
ERROR_ID = 0x0903
AFFECTED_SOP_INSTANCE = 0x1000
REQUESTED_SOP_INSTANCE = 0x1001
EVENT_TYPE_ID = 0x1002
ATTRIBUTE_IDENTIFIER_LIST = 0x1005
ACTION_TYPE_ID = 0x1008
REMAINING = 0x1020
COMPLETED = 0x1021
FAILED = 0x1022
WARNING = 0x1023
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_ID = 0x1031

#: Value representation of each command element we read or write (PS3.7 Table E.1-1).
VR: dict[int, str] = {
    GROUP_LENGTH: "UL",
    AFFECTED_SOP_CLASS: "UI",
    REQUESTED_SOP_CLASS: "UI",
    COMMAND_FIELD: "US",
    MESSAGE_ID: "US",
    RESPONDED_TO: "US",
    MOVE_DESTINATION: "AE",
    PRIORITY: "US",
    DATA_SET_TYPE: "US",
    STATUS: "US",
    OFFENDING_ELEMENT: "AT",
    ERROR_COMMENT: "LO",
    ERROR_ID: "US",
    AFFECTED_SOP_INSTANCE: "UI",
    REQUESTED_SOP_INSTANCE: "UI",
    EVENT_TYPE_ID: "US",
    ATTRIBUTE_IDENTIFIER_LIST: "AT",
    ACTION_TYPE_ID: "US",
    REMAINING: "US",
    COMPLETED: "US",
    FAILED: "US",
    WARNING: "US",
    MOVE_ORIGINATOR_AE: "AE",
    MOVE_ORIGINATOR_ID: "US",
}
NAMES = {
    C_STORE_RQ: "C-STORE-RQ",
    C_STORE_RSP: "C-STORE-RSP",
    C_GET_RQ: "C-GET-RQ",
    C_GET_RSP: "C-GET-RSP",
    C_FIND_RQ: "C-FIND-RQ",
    C_FIND_RSP: "C-FIND-RSP",
    C_MOVE_RQ: "C-MOVE-RQ",
    C_MOVE_RSP: "C-MOVE-RSP",
    C_ECHO_RQ: "C-ECHO-RQ",
    C_ECHO_RSP: "C-ECHO-RSP",
    C_CANCEL_RQ: "C-CANCEL-RQ",
    N_EVENT_REPORT_RQ: "N-EVENT-REPORT-RQ",
    N_EVENT_REPORT_RSP: "N-EVENT-REPORT-RSP",
    N_GET_RQ: "N-GET-RQ",
    N_GET_RSP: "N-GET-RSP",
    N_SET_RQ: "N-SET-RQ",
    N_SET_RSP: "N-SET-RSP",
    N_ACTION_RQ: "N-ACTION-RQ",
    N_ACTION_RSP: "N-ACTION-RSP",
    N_CREATE_RQ: "N-CREATE-RQ",
    N_CREATE_RSP: "N-CREATE-RSP",
    N_DELETE_RQ: "N-DELETE-RQ",
    N_DELETE_RSP: "N-DELETE-RSP",
}
#: The response field of each request (PS3.7 E.1-1: the request's with bit 15 set).
RESPONSE_FIELD = {rq: rq | 0x8000 for rq in NAMES if not rq & 0x8000 and rq != C_CANCEL_RQ}
#: Requests naming their SOP instance in Requested SOP Instance UID (0000,1001), answered in
#: Affected SOP Instance UID (0000,1000) (PS3.7 10.3).
_REQUESTED = {N_GET_RQ, N_SET_RQ, N_ACTION_RQ, N_DELETE_RQ}

_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")
_UL = struct.Struct("<L")

Value = int | str | None


@dataclass(slots=True)
class Command:
    """A decoded command set: raw values by element number of group 0000."""

    raw: dict[int, bytes] = field(default_factory=dict)

    def us(self, element: int) -> int | None:
        value = self.raw.get(element)
        if value is None or len(value) < 2:
            return None
        return int(_US.unpack_from(value)[0])

    def text(self, element: int) -> str:
        """A UI/AE/LO value without padding ('' when absent)."""
        return self.raw.get(element, b"").decode("ascii", "replace").strip("\0 ")

    @property
    def field(self) -> int:
        return self.us(COMMAND_FIELD) or 0

    @property
    def message_id(self) -> int:
        return self.us(MESSAGE_ID) or 0

    @property
    def message_id_responded(self) -> int | None:
        """Message ID Being Responded To (0000,0120) of a response."""
        return self.us(RESPONDED_TO)

    @property
    def has_data_set(self) -> bool:
        return self.us(DATA_SET_TYPE) not in (None, NO_DATA_SET)

    @property
    def name(self) -> str:
        return NAMES.get(self.field, f"command 0x{self.field:04X}")


def decode(data: bytes | bytearray) -> Command:
    """Parse a command set; a malformed one is a :class:`ProtocolError`."""
    raw: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise ProtocolError("truncated command set", REASON_INVALID_PARAMETER)
        group, element, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        if group != 0 or length == 0xFFFFFFFF or pos + length > end:
            raise ProtocolError("malformed command set", REASON_INVALID_PARAMETER)
        raw[element] = bytes(data[pos : pos + length])
        pos += length
    if COMMAND_FIELD not in raw:
        raise ProtocolError("command set without a Command Field", REASON_INVALID_PARAMETER)
    return Command(raw)


def _value(element: int, value: Value | tuple[int, ...]) -> bytes:
    vr = VR[element]
    if vr == "US":
        return _US.pack(int(value))  # type: ignore[arg-type]
    if vr == "UL":
        return _UL.pack(int(value))  # type: ignore[arg-type]
    if vr == "AT":
        tags = value if isinstance(value, tuple) else (int(value),)  # type: ignore[arg-type]
        return b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags)
    data = str(value).encode("ascii", "replace")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


def encode(elements: Iterable[tuple[int, Value | tuple[int, ...]]]) -> bytes:
    """A command set from ``(element, value)`` pairs; None values are left out."""
    body = bytearray()
    for element, value in sorted((e, v) for e, v in elements if v is not None and e):
        data = _value(element, value)
        body += _ELEMENT.pack(0, element, len(data)) + data
    return _ELEMENT.pack(0, GROUP_LENGTH, 4) + _UL.pack(len(body)) + body


def response(
    request: Command,
    field_: int,
    status: int,
    *,
    data_set: bool = False,
    extra: Iterable[tuple[int, Value | tuple[int, ...]]] = (),
) -> bytes:
    """The response command to ``request`` (PS3.7 9.3, 10.3): SOP class and instance echoed
    where the service defines them (a DIMSE-N request's Requested SOP Class/Instance come back
    as Affected ones), Message ID Being Responded To, Status, and the Event or Action Type ID
    of an N-EVENT-REPORT or N-ACTION."""
    field = request.field
    sop_class = request.text(AFFECTED_SOP_CLASS)
    instance = request.text(AFFECTED_SOP_INSTANCE)
    if field in _REQUESTED:
        sop_class = request.text(REQUESTED_SOP_CLASS) or sop_class
        instance = request.text(REQUESTED_SOP_INSTANCE) or instance
    elements: list[tuple[int, Value | tuple[int, ...]]] = [
        (COMMAND_FIELD, field_),
        (RESPONDED_TO, request.message_id),
        (DATA_SET_TYPE, DATA_SET if data_set else NO_DATA_SET),
        (STATUS, status),
        (AFFECTED_SOP_CLASS, sop_class or None),
    ]
    if field_ == C_STORE_RSP or (field_ & 0xFF00) == 0x8100:  # C-STORE and every DIMSE-N
        elements.append((AFFECTED_SOP_INSTANCE, instance or None))
    if field == N_EVENT_REPORT_RQ:
        elements.append((EVENT_TYPE_ID, request.us(EVENT_TYPE_ID)))
    if field == N_ACTION_RQ:
        elements.append((ACTION_TYPE_ID, request.us(ACTION_TYPE_ID)))
    elements.extend(extra)
    # every answer to a request goes through here: count the final ones (pending ones skip)
    metrics.dimse_response(NAMES.get(field, "other").removesuffix("-RQ"), status)
    return encode(elements)
