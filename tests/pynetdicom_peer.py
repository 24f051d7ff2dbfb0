"""pynetdicom as a test peer: its process-wide settings for streaming data sets to and from
files (its chunked modes), as a real SCU or SCP of that kind would run."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from pynetdicom import _config
from pynetdicom import dimse_messages as _dimse_messages


def configure_streaming(receive_dir: Path) -> None:
    """Send data sets from their files and receive them into files in ``receive_dir``."""
    receive_dir.mkdir(parents=True, exist_ok=True)
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    _dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[attr-defined]
        tempfile.NamedTemporaryFile, dir=str(receive_dir), prefix="rx-"
    )
