"""Live updates for the web UI (``GET /api/v1/events``, server-sent events): jobs' progress and
state, and studies stored, deleted or corrected.

One hub per process, one thread while anyone listens, whatever the number of listeners:

- **jobs** run in any process of any node, so the hub reads the jobs table once a second,
  only the rows updated since its last look (an index on ``jobs.updated_at``), and passes on
  those whose state or progress changed (a heartbeat alone is not news).
- **studies stored**: the in-process event bus (``services/events.py``) tells of instances
  stored here; its subscriber only notes the study under a lock (it runs in the DIMSE or HTTP
  thread that did the work, and must not wait), and the hub's thread sends each study noted at
  most once a second. Instances stored by another process or node (a DIMSE worker, the next
  node) are found the same way as jobs: the hub reads which studies received instances since
  its last look (the ``instances.received_at`` index), and sends those whose latest arrival it
  has not sent yet. (Ingest, the hot path, writes nothing more for this.)
- **studies deleted or corrected**, here or anywhere: the deletion and corrections services
  note each study in the change feed (``index/changes.py``, table ``study_changes``) in the
  transaction that makes the change; the hub reads the rows noted since its last look (the
  ``changed_at`` index) and sends those it has not sent yet. A row carries the study's access
  labels as they were, so a deleted study reaches exactly the listeners that could see it.
  :meth:`LiveEvents.prune` (the job runners' housekeeping) removes rows older than
  :data:`KEEP`.

Each listener gets only what its identity may see: a job it may see (:meth:`JobService.visible`),
a study it may query (the policy, access labels included). The hand-off to a listener is its
``deliver`` callable, called from the hub's thread (the REST API's is thread-safe: it puts the
event on its event loop with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from vesalius.errors import VesaliusError
from vesalius.identity import Identity
from vesalius.index import changes as feed
from vesalius.index.catalog import Catalog
from vesalius.index.labels import study_label_sets
from vesalius.index.statistics import studies_received_since
from vesalius.services.events import Event, EventBus
from vesalius.services.jobs import JobRow, JobService
from vesalius.services.oversight import Oversight

log = logging.getLogger(__name__)

#: The bus events that change a study, and the change each is (deletions and corrections come
#: from the change feed, wherever they were made).
STUDY_CHANGES = {"instance-stored": "stored"}
#: Outcomes that changed something (an instance stored anew or replaced).
CHANGED = frozenset({"success", "created", "replaced"})
#: How long the change feed keeps its rows (a hub reads back :data:`OVERLAP` only; the rest
#: is for whoever looks into the index).
KEEP = timedelta(days=1)
#: How far back each look at the jobs table reaches before the last one: rows committed late
#: by a slow writer, or stamped by a node whose clock is a little behind, are not missed.
OVERLAP = timedelta(seconds=5)


@dataclass(frozen=True)
class LiveEvent:
    """One update: ``kind`` ``job`` (``job`` set) or ``study`` (``data``)."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    job: JobRow | None = None


@dataclass(eq=False)
class Listener:
    """One open stream: who listens, and how events reach it."""

    who: Identity
    deliver: Callable[[LiveEvent], None]
    sees_all: bool = False


def _snapshot(job: JobRow) -> tuple[Any, ...]:
    return (job.state, job.done, job.total, job.message, job.attempts)


class LiveEvents:
    """The hub: see the module's text."""

    def __init__(
        self,
        catalog: Catalog,
        jobs: JobService,
        oversight: Oversight,
        bus: EventBus,
        *,
        interval: float = 1.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.catalog = catalog
        self.jobs = jobs
        self.oversight = oversight
        self.interval = interval
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._studies: dict[str, str] = {}  # study UID -> its latest change, since the last send
        self._seen: dict[int, tuple[Any, ...]] = {}  # job -> what was last sent of it
        self._arrived: dict[str, datetime] = {}  # study -> its latest arrival sent
        self._noted: dict[int, datetime] = {}  # change feed row -> its time, sent
        self._since: datetime | None = None
        #: Labels of the studies about to be sent: from the index for a store, from the change
        #: feed for a deletion (no longer in the index) or a correction.
        self._labels: dict[str, frozenset[str]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        bus.subscribe(self._on_event)

    # -- listeners ---------------------------------------------------------------------------

    def listen(self, who: Identity, deliver: Callable[[LiveEvent], None]) -> Listener:
        """Start sending ``who``'s updates to ``deliver`` (``who`` must be allowed ``read``)."""
        self.oversight.check(who, "read")
        listener = Listener(who, deliver, self.jobs.sees_all(who))
        with self._lock:
            self._listeners.append(listener)
            if self._thread is None or not self._thread.is_alive():
                self._since = self._now()
                self._seen.clear()
                self._arrived.clear()
                self._noted.clear()
                self._thread = threading.Thread(target=self._loop, name="live-events", daemon=True)
                self._thread.start()
        return listener

    def leave(self, listener: Listener) -> None:
        """Stop sending to ``listener`` (the hub's thread ends with its last listener)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
        self._wake.set()

    @property
    def listening(self) -> int:
        with self._lock:
            return len(self._listeners)

    # -- the bus's side ------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        change = STUDY_CHANGES.get(event.kind)
        if change is None or event.outcome not in CHANGED or not self._listeners:
            return
        uids = event.details.get("study_uids") or [event.details.get("study_uid")]
        with self._lock:
            for uid in uids:
                if isinstance(uid, str) and uid:
                    self._studies[uid] = change

    # -- the hub's thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._listeners:
                    self._thread = None
                    return
            try:
                self._tick()
            except Exception:  # the index briefly unavailable: try again at the next tick
                log.exception("live updates")
            self._wake.wait(self.interval)
            self._wake.clear()

    def _tick(self) -> None:
        started = self._now()
        since = self._since or started
        changed = self.jobs.changed_since(since - OVERLAP)
        self._since = started
        news = []
        for job in changed:
            snapshot = _snapshot(job)
            if self._seen.get(job.pk) != snapshot:
                self._seen[job.pk] = snapshot
                news.append(job)
        if len(self._seen) > 10000:  # forget the oldest; they may be sent once more
            for pk in sorted(self._seen)[:5000]:
                del self._seen[pk]
        arrived = self._arrivals(since - OVERLAP)
        noted = self._changes(since - OVERLAP)
        with self._lock:
            studies, self._studies = self._studies, {}
            listeners = list(self._listeners)
        for uid in arrived:
            studies.setdefault(uid, "stored")
        stored = [uid for uid in studies if uid not in noted]
        if stored:
            self._learn_labels(stored)
        for uid, (change, labels) in noted.items():
            studies[uid] = change  # a deletion or correction outweighs a store the same second
            self._labels[uid] = labels
        for listener in listeners:
            for job in news:
                if self.jobs.visible(listener.who, job, sees_all=listener.sees_all):
                    listener.deliver(LiveEvent("job", job=job))
            if studies:
                for uid in self._queryable(listener.who, studies):
                    change = studies[uid]
                    listener.deliver(LiveEvent("study", {"study_uid": uid, "change": change}))

    def _arrivals(self, since: datetime) -> list[str]:
        """Studies that received instances since ``since`` in any process, not yet sent."""
        with self.catalog.read() as conn:
            found = studies_received_since(conn, since)
        news = [uid for uid, latest in found.items() if self._arrived.get(uid) != latest]
        if len(self._arrived) > 10000:
            self._arrived.clear()
        self._arrived.update(found)
        return news

    def _changes(self, since: datetime) -> dict[str, tuple[str, frozenset[str]]]:
        """Studies deleted or corrected since ``since`` in any process (the change feed), not
        yet sent: study UID -> (its latest change, its labels then)."""
        with self.catalog.read() as conn:
            rows = feed.since(conn, since)
        news: dict[str, tuple[str, frozenset[str]]] = {}
        for row in rows:
            if row.pk not in self._noted:
                self._noted[row.pk] = row.changed_at
                news[row.study_uid] = (row.change, row.labels)
        for pk in [pk for pk, at in self._noted.items() if at < since]:
            del self._noted[pk]  # read back no more
        return news

    def prune(self) -> int:
        """Remove change feed rows older than :data:`KEEP`; how many (housekeeping)."""
        with self.catalog.write() as conn:
            return feed.prune(conn, self._now() - KEEP)

    def _learn_labels(self, studies: list[str]) -> None:
        with self.catalog.read() as conn:
            found = study_label_sets(conn, studies)
        if len(self._labels) > 10000:
            self._labels.clear()
        self._labels.update(found)

    def _queryable(self, who: Identity, studies: dict[str, str]) -> list[str]:
        """The studies ``who`` may query (the ``query`` action, then access labels: a study
        with none, or with one granted to ``who``; a study whose labels are unknown, gone
        before its store was sent, only for who sees every study). Asked unaudited: a filter,
        not a refusal."""
        try:
            self.oversight.policy.check(who, "query")
        except VesaliusError:
            return []
        granted = self.oversight.visible_labels(who)
        if granted is None:
            return list(studies)
        shown = []
        for uid in studies:
            labels = self._labels.get(uid)
            if labels is not None and (not labels or labels & granted):
                shown.append(uid)
        return shown
