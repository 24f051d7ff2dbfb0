"""What a DIMSE status code means: its category (PS3.7 C.1) and, per service, its name
(PS3.7 C, PS3.4 B.2.3 storage, C.4.1.1.4 find, C.4.2.1.5 move, C.4.3.1.4 get)."""

from __future__ import annotations

SUCCESS = "Success"
WARNING = "Warning"
FAILURE = "Failure"
CANCEL = "Cancel"
PENDING = "Pending"
UNKNOWN = "Unknown"

#: General statuses (PS3.7 C.2-C.5): (category, meaning).
GENERAL: dict[int, tuple[str, str]] = {
    0x0000: (SUCCESS, ""),
    0x0105: (FAILURE, "No Such Attribute"),
    0x0106: (FAILURE, "Invalid Attribute Value"),
    0x0107: (WARNING, "Attribute List Error"),
    0x0110: (FAILURE, "Processing Failure"),
    0x0111: (FAILURE, "Duplication SOP Instance"),
    0x0112: (FAILURE, "No Such SOP Instance"),
    0x0113: (FAILURE, "No Such Event Type"),
    0x0114: (FAILURE, "No Such Argument"),
    0x0115: (FAILURE, "Invalid Argument Value"),
    0x0116: (WARNING, "Attribute Value Out of Range"),
    0x0117: (FAILURE, "Invalid Object Instance"),
    0x0118: (FAILURE, "No Such SOP Class"),
    0x0119: (FAILURE, "Class-Instance Conflict"),
    0x0120: (FAILURE, "Missing Attribute"),
    0x0121: (FAILURE, "Missing Attribute Value"),
    0x0122: (FAILURE, "Refused: SOP Class Not Supported"),
    0x0123: (FAILURE, "No Such Action"),
    0x0124: (FAILURE, "Refused: Not Authorised"),
    0x0210: (FAILURE, "Duplicate Invocation"),
    0x0211: (FAILURE, "Unrecognised Operation"),
    0x0212: (FAILURE, "Mistyped Argument"),
    0x0213: (FAILURE, "Resource Limitation"),
    0xFE00: (CANCEL, ""),
}

_SUB_OPERATIONS = {
    0xA701: (FAILURE, "Refused: Out of resources, unable to calculate number of matches"),
    0xA702: (FAILURE, "Refused: Out of resources, unable to perform sub-operations"),
    0xA900: (FAILURE, "Identifier does not match SOP class"),
    0xAA00: (FAILURE, "None of the frames requested were found in the SOP instance"),
    0xAA01: (FAILURE, "Unable to create new object for this SOP class"),
    0xAA02: (FAILURE, "Unable to extract frames"),
    0xAA03: (FAILURE, "Time-based request received for a non-time-based original SOP Instance"),
    0xAA04: (FAILURE, "Invalid request"),
    0xFF00: (PENDING, "Sub-operations are continuing"),
}

#: Service-specific statuses; a code in none of these has the general meaning. Ranges are
#: (first, last, category, meaning).
_SPECIFIC: dict[str, dict[int, tuple[str, str]]] = {
    "C-ECHO": {},
    "C-STORE": {
        0xB000: (WARNING, "Coercion of Data Elements"),
        0xB006: (WARNING, "Element Discarded"),
        0xB007: (WARNING, "Data Set Does Not Match SOP Class"),
    },
    "C-FIND": {
        0xA700: (FAILURE, "Refused: Out of Resources"),
        0xA710: (FAILURE, "Invalid Prior Record Key"),
        0xA900: (FAILURE, "Identifier Does Not Match SOP Class"),
        0xB001: (
            WARNING,
            "Matching reached response limit, subsequent request may return additional matches",
        ),
        0xFF00: (PENDING, "Matches are continuing, current match supplied"),
        0xFF01: (PENDING, "Matches are continuing, warning"),
    },
    "C-MOVE": {
        **_SUB_OPERATIONS,
        0xA801: (FAILURE, "Move destination unknown"),
        0xB000: (WARNING, "Sub-operations completed, one or more failures"),
    },
    "C-GET": {
        **_SUB_OPERATIONS,
        0xB000: (WARNING, "Sub-operations complete, one or more failures or warnings"),
    },
}
_RANGES: dict[str, tuple[tuple[int, int, str, str], ...]] = {
    "C-STORE": (
        (0xA700, 0xA7FF, FAILURE, "Refused: Out of Resources"),
        (0xA900, 0xA9FF, FAILURE, "Data Set Does Not Match SOP Class"),
        (0xC000, 0xCFFF, FAILURE, "Cannot Understand"),
    ),
    "C-FIND": ((0xC000, 0xCFFF, FAILURE, "Unable to Process"),),
    "C-MOVE": ((0xC000, 0xCFFF, FAILURE, "Unable to Process"),),
    "C-GET": ((0xC000, 0xCFFF, FAILURE, "Unable to Process"),),
}


def category(code: int) -> str:
    """Success, Warning, Failure, Cancel, Pending or Unknown, from the code alone (PS3.7 C.1:
    0000 success; FF00/FF01 pending; FE00 cancel; Axxx, Cxxx and the general failures
    failure; Bxxx, 0001, 0107 and 0116 warning)."""
    if code < 0:
        raise ValueError(f"a status code is not negative: {code}")
    if code == 0x0000:
        return SUCCESS
    if code in (0xFF00, 0xFF01):
        return PENDING
    if code == 0xFE00:
        return CANCEL
    general = GENERAL.get(code)
    if general is not None:
        return general[0]
    if 0xA000 <= code <= 0xAFFF or 0xC000 <= code <= 0xCFFF:
        return FAILURE
    if 0xB000 <= code <= 0xBFFF or code == 0x0001:
        return WARNING
    return UNKNOWN


def meaning(service: str, code: int) -> str:
    """The name of ``code`` in ``service`` (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET), or ""."""
    specific = _SPECIFIC.get(service, {}).get(code)
    if specific is not None:
        return specific[1]
    for first, last, _, name in _RANGES.get(service, ()):
        if first <= code <= last:
            return name
    return GENERAL.get(code, ("", ""))[1]
