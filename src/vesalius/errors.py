"""The one exception tree of Vesalius.

Every failure the services raise is a :class:`VesaliusError`. Each kind knows the DIMSE status
(PS3.7 Annex C, PS3.4 B.2.3 / C.4) and the HTTP status it becomes, so the protocol adapters turn
exceptions into answers in one place and never guess::

    VesaliusError                      0xC000 / 500
    ├── ConfigError                    (start-up only)
    ├── InvalidDataError               0xC000 / 400  cannot understand
    │   ├── InvalidUIDError            0xC000 / 400  a UID breaks PS3.5 9.1
    │   └── DataSetMismatchError       0xA900 / 400  data set does not match SOP class / command
    ├── UnsupportedError               0xC000 / 415  SOP class or syntax not supported here
    │   └── SOPClassNotSupportedError  0x0122 / 415  not a storage SOP class we know
    ├── NotAcceptableError             0xC000 / 406  no representation the client accepts
    ├── TooLargeError                  0xA700 / 413  request body over the configured limit
    ├── DuplicateInstanceError         0x0111 / 409  policy "reject" and the instance exists
    ├── OutOfResourcesError            0xA700 / 507  disk full, storage unwritable
    ├── ForbiddenError                 0x0124 / 403  the policy refuses this identity
    ├── NotFoundError                  0xC000 / 404
    │   └── UnknownDestinationError    0xA801 / 404  C-MOVE destination not configured
    ├── QueryError                     0xC000 / 400  identifier cannot be matched
    ├── PeerError                      0xC000 / 502  a remote AE refused, failed or is unreachable
    └── CancelledError                 0xFE00 / 499  C-CANCEL received
"""

from __future__ import annotations


class VesaliusError(Exception):
    """Base of every error Vesalius raises on purpose."""

    dimse_status: int = 0xC000
    http_status: int = 500

    #: (SOP Class UID, SOP Instance UID) of the instance refused, when known (for the
    #: Failed SOP Sequence of a STOW-RS response, PS3.18 10.5.3).
    instance: tuple[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def error_comment(self) -> str:
        """The text for (0000,0902) Error Comment: at most 64 characters (VR LO)."""
        return self.message[:64]


class ConfigError(VesaliusError):
    """A setting is missing, malformed or contradictory."""


class InvalidDataError(VesaliusError):
    """The data set cannot be parsed or lacks what the standard requires."""

    dimse_status = 0xC000
    http_status = 400


class InvalidUIDError(InvalidDataError):
    """A UID that is not a valid PS3.5 9.1 UID (digits and dots, at most 64 characters)."""


class DataSetMismatchError(InvalidDataError):
    """The data set does not match the SOP class or the command (PS3.4 B.2.3, 0xA900)."""

    dimse_status = 0xA900


class UnsupportedError(VesaliusError):
    """A SOP class, transfer syntax or option this archive does not support."""

    dimse_status = 0xC000
    http_status = 415


class SOPClassNotSupportedError(UnsupportedError):
    """A data set of a SOP class this archive does not store (PS3.7 C.5.2, 0x0122)."""

    dimse_status = 0x0122


class NotAcceptableError(VesaliusError):
    """None of the media types or transfer syntaxes the client accepts can be produced
    (PS3.18 8.7.3, HTTP 406)."""

    dimse_status = 0xC000
    http_status = 406


class TooLargeError(VesaliusError):
    """A request body, or what it expands to, is over the configured limit (HTTP 413)."""

    dimse_status = 0xA700
    http_status = 413


class DuplicateInstanceError(VesaliusError):
    """The SOP instance already exists and the duplicate policy is ``reject`` (0x0111)."""

    dimse_status = 0x0111
    http_status = 409


class OutOfResourcesError(VesaliusError):
    """Storage is full or cannot be written (PS3.4 B.2.3, 0xA700)."""

    dimse_status = 0xA700
    http_status = 507


class ForbiddenError(VesaliusError):
    """The authorization policy refuses the caller this action (PS3.7 C.5.2.1, 0x0124
    Refused: Not Authorized; HTTP 403)."""

    dimse_status = 0x0124
    http_status = 403


class NotFoundError(VesaliusError):
    """What was asked for is not in the archive."""

    dimse_status = 0xC000
    http_status = 404


class UnknownDestinationError(NotFoundError):
    """A C-MOVE destination AE title that is not configured (PS3.4 C.4.2.1.4, 0xA801)."""

    dimse_status = 0xA801


class QueryError(VesaliusError):
    """A query identifier that cannot be processed (PS3.4 C.4.1.1.4, 0xC000-range)."""

    dimse_status = 0xC000
    http_status = 400


class PeerError(VesaliusError):
    """A remote AE could not be reached, refused the association or failed an operation."""

    http_status = 502


class CancelledError(VesaliusError):
    """The peer cancelled the operation (C-CANCEL, PS3.7 9.3.2.3)."""

    dimse_status = 0xFE00
    http_status = 499
