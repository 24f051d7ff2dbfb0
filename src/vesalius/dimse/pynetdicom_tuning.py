"""pynetdicom settings for the command-line SCU (``vesalius send/find/move/get``).

The server has its own association layer (:mod:`vesalius.dimse.association`); the SCU commands
still drive pynetdicom, tuned here to stream data sets from and to files.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from typing import Any

from pynetdicom import _config
from pynetdicom import dimse_messages as _dimse_messages

from vesalius.dicom.uids import IMPLEMENTATION_VERSION

log = logging.getLogger(__name__)

__all__ = ["IMPLEMENTATION_VERSION", "configure_library", "drop_partial"]


def configure_library(staging_dir: str) -> None:
    """Process-wide pynetdicom settings: received data sets are written to files in
    ``staging_dir`` (not decoded), sent ones stream from their files."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    # pynetdicom creates the received file with NamedTemporaryFile() and no folder; give it
    # ours, so the finished file moves into place with a rename instead of a copy.
    _dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[assignment,attr-defined]
        tempfile.NamedTemporaryFile, dir=staging_dir, prefix="rx-"
    )


def drop_partial(event: Any) -> None:
    """EVT_CONN_CLOSE / EVT_ABORTED: remove a data set file left half-received."""
    message = getattr(event.assoc.dimse, "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    try:
        handle.close()
        path = getattr(message, "_data_set_path", None)
        if path is not None:
            path.unlink(missing_ok=True)
            log.info("removed half-received data set from %s", event.assoc.requestor.ae_title)
    except OSError:
        pass
