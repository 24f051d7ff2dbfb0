"""The search indexer: writes the study list's search terms of the studies ingest made, in
batches, off the ingest path (:mod:`vesalius.index.search`).

Ingest only notes a new study in the index's search backlog (one short row in the instance's
transaction); this thread, one per process, wakes when the event bus tells of an instance
stored, lingers a moment so that a burst of new studies is one transaction, and writes the
terms of the backlog's studies, :data:`BATCH` at a time. It also looks every ``idle`` seconds
(studies noted by another process, a command's import, a crash before a batch) and once at
start. Until their terms are written, a search matches the backlog's studies by their values,
so nothing waits on it. Several processes or nodes may run one: on PostgreSQL each batch locks
its rows and skips those another holds; SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import logging
import threading

from vesalius.index.catalog import Catalog
from vesalius.index.search import index_backlog
from vesalius.services.events import Event

log = logging.getLogger(__name__)

#: Studies written per transaction.
BATCH = 500


class SearchIndexer:
    """Writes the backlog's search terms in a thread of its own; an event bus subscriber."""

    def __init__(self, catalog: Catalog, *, linger: float = 0.5, idle: float = 30.0) -> None:
        self.catalog = catalog
        self.linger = linger
        self.idle = idle
        self._due = threading.Event()
        self._due.set()  # a first look at start: what was left from before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="search-indexer", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        if event.kind == "instance-stored":
            self._due.set()  # no more here: it runs in the thread that stored the instance

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (the backlog it leaves is written by the next start)."""
        self._stop.set()
        self._due.set()
        self._thread.join(timeout)

    def catch_up(self) -> int:
        """Write the terms of the whole backlog now; the number of studies done."""
        done = 0
        while True:
            with self.catalog.write() as conn:
                n = index_backlog(conn, BATCH)
            done += n
            if n < BATCH:
                return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self._due.wait(self.idle)
            if self._stop.wait(self.linger):
                return
            self._due.clear()
            try:
                self.catch_up()
            except Exception:  # the database away for a moment: the next look retries
                log.exception("search indexer")
