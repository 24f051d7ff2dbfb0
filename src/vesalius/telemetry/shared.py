"""The folder the server's processes share their metrics in (prometheus-client's
multiprocess mode).

A scrape reaches one process (the kernel hands each HTTP connection to one of them), so each
process writes its values to memory-mapped files in one folder, named in the environment
variable :data:`ENV` that spawned workers inherit, and a scrape sums the files of all
(``exposition.py``). The main process makes a new private folder at every start (so no
stale file of an earlier run is ever read; Prometheus sees counters restart, as with any
restart), removes the live gauges of a worker that dies (:func:`process_died`; its counters
stay, since what it counted happened) and removes the folder when it exits. A folder left by
a server killed with SIGKILL is never read again: the next start removes it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

#: The environment variable prometheus-client reads.
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Our folders are ``<tmp>/vesalius-metrics-<main pid>-<random>``.
PREFIX = "vesalius-metrics-"


def create() -> Path:
    """A new, empty, private (mode 0700) folder, named in :data:`ENV` for this process and
    the workers it starts, and removed when this process exits (however ``serve`` ends).
    Folders of servers that were killed (their main process is gone) are removed first."""
    remove_orphans(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    os.environ[ENV] = str(folder)
    atexit.register(remove, folder)
    return folder


def remove_orphans(parent: Path) -> None:
    """Remove our folders in ``parent`` whose main process no longer runs (it was killed
    before it could remove its own). Only folders this user owns; a reused pid keeps its
    folder, which is harmless."""
    for folder in parent.glob(f"{PREFIX}*-*"):
        pid = folder.name.removeprefix(PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # not ours to signal, or gone already: leave it


def process_died(pid: int) -> None:
    """Forget the live gauges (e.g. active associations) of a process that is gone."""
    folder = os.environ.get(ENV)
    if folder:
        mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


def remove(folder: Path) -> None:
    if os.environ.get(ENV) == str(folder):
        del os.environ[ENV]
    shutil.rmtree(folder, ignore_errors=True)
