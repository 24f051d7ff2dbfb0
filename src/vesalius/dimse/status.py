"""Turning exceptions into DIMSE status data sets, in one place (PS3.7 C)."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from vesalius.errors import DuplicateInstanceError, InvalidDataError, QueryError, VesaliusError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
PROCESSING_FAILURE = 0x0110
UNABLE_TO_PROCESS = 0xC000


#: Refusals whose reason may quote what the peer sent (docs/operations.md, "Logs").
QUOTES_DATA = (InvalidDataError, QueryError, DuplicateInstanceError)


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A status data set with (0000,0900) Status and an optional (0000,0902) Error Comment."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def failure(exc: BaseException, what: str) -> Dataset:
    """The status for an exception raised while doing ``what``; unexpected ones are logged."""
    if isinstance(exc, QUOTES_DATA):
        # The reason may quote the peer's values (a birth date, a name): only at debug.
        log.info("%s refused (0x%04X): %s", what, exc.dimse_status, type(exc).__name__)
        log.debug("%s refused: %s", what, exc.message)
        return status_dataset(exc.dimse_status, exc.error_comment)
    if isinstance(exc, VesaliusError):
        log.info("%s refused: %s (0x%04X)", what, exc.message, exc.dimse_status)
        return status_dataset(exc.dimse_status, exc.error_comment)
    log.exception("%s failed unexpectedly", what)
    return status_dataset(UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}")


def failure_status(exc: BaseException, what: str) -> tuple[int, str]:
    """Like :func:`failure`, as ``(status, error comment)`` for a response command set."""
    ds = failure(exc, what)
    return int(ds.Status), str(ds.get("ErrorComment", ""))
