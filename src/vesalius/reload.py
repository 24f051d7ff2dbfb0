"""Reload on SIGHUP (wiring): re-read the settings file ``serve`` was started with and apply
what can change while serving; the rest is logged as needing a restart.

Live: the peers (``[modalities]``, written to the peers table every process reads), the log
level, and the TLS certificates (``tls.certificate``, ``tls.private_key``,
``tls.ca_certificates``: loaded again by every process, ``vesalius/tls.py``). Everything else
(ports, ``data_dir``, ``database_url``, ``dicom.workers``, timeouts, ...) is compared with the
running value and logged as "X changed: restart needed". A file that does not load (bad TOML,
a bad value) is logged as an error and the running settings stay.

The main process reloads, then passes SIGHUP on to its workers, which re-read the same file
for the log level and the certificates only (the peers are in the shared index, and the main
process logs the rest).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from vesalius import logs, tls
from vesalius.errors import VesaliusError
from vesalius.settings import SETTINGS, Modality, Settings, load_settings
from vesalius.wiring import tls_files

log = logging.getLogger(__name__)

#: Settings applied while serving (besides ``[modalities]``).
LIVE = frozenset({"log_level", "tls.certificate", "tls.private_key", "tls.ca_certificates"})


@dataclass(frozen=True)
class SettingsSource:
    """Where the running settings came from: the file and the command-line overrides (the
    environment is read again too, but a running process's environment does not change)."""

    config_file: Path | None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Settings:
        return load_settings(self.config_file, overrides=self.overrides)


def apply_log_level(level: str) -> None:
    """Set this process's log level (``vesalius/logs.py``; the audit trail is not affected)."""
    logs.set_level(level)


def reload_certificates(settings: Settings) -> None:
    """Load the certificate and key named by ``settings`` into this process's running
    ``ssl.SSLContext`` objects (``load_cert_chain``), so new connections use them; a pair that
    does not load is logged and the running one stays (``vesalius/tls.py``)."""
    files = tls_files(settings)
    if files is not None and files.certificate:
        tls.reload_all(files)


class Reloader:
    """Applies a re-read settings file to a running process.

    ``started``: the settings the process started with (for the restart-needed comparison);
    ``seed_peers``: writes ``[modalities]`` to the peers table (main process only; None in a
    worker, which only follows the log level and logs nothing else).
    """

    def __init__(
        self,
        source: SettingsSource,
        started: Settings,
        seed_peers: Callable[[Mapping[str, Modality]], None] | None = None,
    ) -> None:
        self.source = source
        self.started = started
        self.running = started
        self.seed_peers = seed_peers

    @property
    def main_process(self) -> bool:
        return self.seed_peers is not None

    def reload(self) -> bool:
        """Re-read and apply; False (running settings kept) when the file does not load."""
        where = self.source.config_file or "the environment"
        try:
            new = self.source.load()  # checked as a whole, log_level's choices included
        except VesaliusError as exc:
            if self.main_process:
                log.error("reload: %s; the running settings stay", exc.message)
            return False
        if new["log_level"] != self.running["log_level"]:
            apply_log_level(new["log_level"])
            if self.main_process:
                log.warning("reload: log_level is now %s", new["log_level"])
            log.debug("reload: this process logs at %s now", new["log_level"])
        reload_certificates(new)
        if self.main_process:
            assert self.seed_peers is not None
            if dict(new.modalities) != dict(self.running.modalities):
                self.seed_peers(new.modalities)
                log.warning("reload: peers now as in [modalities] (%d)", len(new.modalities))
            for key in restart_needed(self.started, new):
                log.warning("reload: %s changed: restart needed", key)
            log.info("reload: settings re-read from %s", where)
        self.running = new
        return True


def restart_needed(started: Settings, new: Settings) -> list[str]:
    """Keys whose value differs from the running one and that only a restart applies."""
    return [
        s.key for s in SETTINGS if s.key not in LIVE and new.values[s.key] != started.values[s.key]
    ]


def on_sighup(reloader: Reloader, then: Callable[[], None] | None = None) -> None:
    """Reload on each SIGHUP, in a thread of its own (the handler only wakes it, so the HTTP
    loop of the main thread is never held up by the file or the database); ``then`` runs after
    each reload (the main process passes SIGHUP on to its workers). Call from the main thread.
    """
    wanted = threading.Event()

    def loop() -> None:
        while True:
            wanted.wait()
            wanted.clear()
            try:
                reloader.reload()
            except Exception:  # e.g. the index unreachable while seeding the peers
                log.exception("reload failed; the running settings stay")
            if then is not None:
                try:
                    then()
                except Exception:
                    log.exception("reload: cannot tell the workers")

    def handler(_sig: int, _frame: FrameType | None) -> None:
        wanted.set()

    threading.Thread(target=loop, name="reload", daemon=True).start()
    signal.signal(signal.SIGHUP, handler)
