"""The one exception tree of Vesalius.

Every failure the services raise is a :class:`VesaliusError`. Each kind knows the DIMSE status
(PS3.7 Annex C, PS3.4 B.2.3 / C.4) and the HTTP status it becomes, so the protocol adapters turn
exceptions into answers in one place and never guess; and the exit status of the ``vesalius``
command it ends (sysexits(3); docs/operations.md "Start-up errors and exit statuses")::

    VesaliusError                      0xC000 / 500         exit 1
    ├── ConfigError                    (start-up only)      exit 78 EX_CONFIG
    │   └── ConfigFileError            settings file unreadable    66 EX_NOINPUT
    ├── NoArchiveError                 no archive where one is needed   66 EX_NOINPUT
    ├── DataDirError                   data folder cannot be made or written   73 EX_CANTCREAT
    ├── DatabaseUnavailableError       the index database cannot be reached    69 EX_UNAVAILABLE
    ├── SchemaError                    the index schema cannot be brought up to date  65 EX_DATAERR
    ├── ListenError                    a port cannot be listened on: in use 75 EX_TEMPFAIL,
    │                                  no permission 77 EX_NOPERM, bad address 78 EX_CONFIG
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
    ├── AuthenticationError            0x0124 / 401  no credentials, or wrong ones
    │   └── ThrottledError             0x0124 / 429  too many failed logins: wait
    ├── NotFoundError                  0xC000 / 404
    │   └── UnknownDestinationError    0xA801 / 404  C-MOVE destination not configured
    ├── QueryError                     0xC000 / 400  identifier cannot be matched
    ├── PeerError                      0xC000 / 502  a remote AE refused, failed or is unreachable
    └── CancelledError                 0xFE00 / 499  C-CANCEL received
"""

from __future__ import annotations

import errno

#: Exit status of the ``vesalius`` command when something it did not expect went wrong (a bug):
#: EX_SOFTWARE, sysexits(3).
BUG_EXIT_STATUS = 70


class VesaliusError(Exception):
    """Base of every error Vesalius raises on purpose."""

    dimse_status: int = 0xC000
    http_status: int = 500
    #: Exit status of the ``vesalius`` command this error ends (sysexits(3) for start-up errors).
    exit_status: int = 1

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
    """A setting is missing, malformed or contradictory. ``problems`` holds one line per problem
    found (settings are checked as a whole); ``message`` joins them."""

    exit_status = 78  # EX_CONFIG

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class ConfigFileError(ConfigError):
    """The settings file named by ``--config`` or ``VESALIUS_CONFIG`` cannot be read."""

    exit_status = 66  # EX_NOINPUT


class NoArchiveError(VesaliusError):
    """A command that works on stored data found no archive where the settings point."""

    exit_status = 66  # EX_NOINPUT


class DataDirError(VesaliusError):
    """The data folder (or the SQLite index in it) cannot be created or written."""

    exit_status = 73  # EX_CANTCREAT


class DatabaseUnavailableError(VesaliusError):
    """The index database cannot be reached (PostgreSQL down, wrong host, refused login)."""

    exit_status = 69  # EX_UNAVAILABLE


class SchemaError(VesaliusError):
    """The index database's schema cannot be brought up to this version's: it is newer than
    this code knows, or a migration failed."""

    exit_status = 65  # EX_DATAERR


class ListenError(VesaliusError):
    """A configured port cannot be listened on."""

    exit_status = 75  # EX_TEMPFAIL: the port is in use, try again when it is free

    @classmethod
    def from_os_error(cls, what: str, keys: str, host: str, port: int, exc: OSError) -> ListenError:
        """The error for ``bind``/``listen`` failing with ``exc`` on ``host:port``, which the
        settings ``keys`` (e.g. "dicom.host/dicom.port") name."""
        where = f"cannot listen for {what} on {host}:{port} ({keys})"
        if exc.errno == errno.EADDRINUSE:
            error = cls(
                f"{where}: the port is in use by another program: stop it or choose another port"
            )
        elif exc.errno == errno.EACCES:
            error = cls(
                f"{where}: permission denied: ports below 1024 need privileges "
                "(CAP_NET_BIND_SERVICE); choose a port from 1024 up"
            )
            error.exit_status = 77  # EX_NOPERM
        else:
            error = cls(
                f"{where}: {exc.strerror}: use an address of this machine (0.0.0.0 for all)"
            )
            error.exit_status = 78  # EX_CONFIG
        return error


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


class AuthenticationError(VesaliusError):
    """The caller is not authenticated: no credentials, or a wrong password, an unknown,
    expired or revoked token, a disabled user (HTTP 401, RFC 9110 15.5.2)."""

    dimse_status = 0x0124
    http_status = 401


class ThrottledError(AuthenticationError):
    """Too many failed logins for this user or from this address: refused without checking
    the password until ``retry_after`` seconds have passed (HTTP 429, RFC 6585 4)."""

    http_status = 429

    def __init__(self, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
