"""UIDs: validation (PS3.5 9.1), transfer syntaxes (PS3.5 A, PS3.6 Table A-1), SOP classes."""

from __future__ import annotations

import re

from pydicom.uid import AllTransferSyntaxes

from vesalius.dicom.storage_classes import STORAGE_CLASSES
from vesalius.errors import InvalidUIDError

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"

#: Transfer syntaxes whose pixel data is native (not encapsulated).
UNCOMPRESSED_SYNTAXES: tuple[str, ...] = (
    IMPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
)

#: Every transfer syntax the standard defines that we accept on C-STORE, stored as received:
#: pydicom's list plus JPIP, JPEG XL and Deflated Image Frame Compression.
ALL_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            EXPLICIT_VR_LE,
            IMPLICIT_VR_LE,
            *[str(ts) for ts in AllTransferSyntaxes],
            "1.2.840.10008.1.2.4.94",  # JPIP Referenced
            "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
            "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
            "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
            "1.2.840.10008.1.2.4.112",  # JPEG XL
            "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
        ]
    )
)

#: Storage SOP classes (PS3.4 B.5) as (keyword, uid): the generated table of
#: ``dicom/storage_classes.py``.
STORAGE_SOP_CLASSES: tuple[tuple[str, str], ...] = STORAGE_CLASSES
STORAGE_SOP_CLASS_UIDS: frozenset[str] = frozenset(uid for _, uid in STORAGE_SOP_CLASSES)

VERIFICATION = "1.2.840.10008.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
#: Query/Retrieve information models (PS3.4 C.6): Patient Root and Study Root.
QR_SOP_CLASSES: tuple[str, ...] = (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_GET,
)

#: fullmatch, not ``^…$``: ``$`` also matches before a final newline, so "1.2.3\n" passed.
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)+")


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` has UID syntax (PS3.5 9.1): at most 64 characters, numeric
    components separated by dots, at least two of them (``<org root>.<suffix>``).

    Components with a leading zero are tolerated, as much real-world data has them; a lone
    number such as ``1`` is not a UID.
    """
    return 0 < len(value) <= 64 and bool(_UID_RE.fullmatch(value))


def check_uid(value: object, keyword: str) -> str:
    """Return ``value`` as a UID string, or raise :class:`InvalidUIDError` naming ``keyword``.

    A value decoded as a number (the element was sent with a numeric VR such as US or IS) is
    refused: a UID is a string of VR UI (PS3.5 6.2)."""
    if isinstance(value, (int, float)):
        raise InvalidUIDError(f"{keyword} is encoded as a number, not as a UID")
    text = str(value or "").strip("\0 ")
    if not text:
        raise InvalidUIDError(f"{keyword} is missing")
    if not is_valid_uid(text):
        raise InvalidUIDError(f"{keyword} is not a valid UID")
    return text


def is_uncompressed(transfer_syntax: str) -> bool:
    """Whether pixel data in this transfer syntax is native, so it can be re-encoded losslessly."""
    return transfer_syntax in UNCOMPRESSED_SYNTAXES


#: Transfer syntaxes whose pixel data is lossy (or may be): never decompressed to a default
#: syntax on retrieval, since that would hide the loss (PS3.18 8.7.3.5.2).
LOSSY_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2
        "1.2.840.10008.1.2.4.94",  # JPIP Referenced
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),  # MPEG-2, MPEG-4, HEVC
        "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
        "1.2.840.10008.1.2.4.112",  # JPEG XL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)

#: Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID (PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.46465073508809206256044372835308152928"
#: Implementation Version Name sent with it (at most 16 characters).
IMPLEMENTATION_VERSION = "VESALIUS_020"
