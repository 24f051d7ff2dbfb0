"""The durable audit trail: every event as a record in the index, chained by hash (PS3.15
A.5 messages; docs/security.md, "Audit trail").

:class:`TrailSink` subscribes to the services' events. Ingest is the hot path, so nothing is
written on the request's thread: an event goes into a bounded queue, and a writer thread renders
its A.5 message and appends it to the chain, many records a transaction. The instances one
association or HTTP request stores into one study are gathered into one "DICOM Instances
Transferred" (or "Import") record with their counts by SOP Class, written when the association
or request ends, or once it has stored nothing more for ``interval`` seconds (or ``10 *
interval`` after its first instance). Closing the sink (a clean shutdown) writes everything
still pending. Each record written is handed to ``forward`` too (the syslog sender,
``telemetry/syslog.py``).

:class:`AuditService` answers ``vesalius audit`` (who accessed which patient's data) and
``vesalius audit verify``; reading the trail is itself audited (A.5.3.2 Audit Log Used).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from vesalius import logcontext
from vesalius.identity import Identity
from vesalius.index.audit_trail import AuditFilter as AuditFilter
from vesalius.index.audit_trail import AuditRecord as AuditRecord
from vesalius.index.audit_trail import Verification as Verification
from vesalius.index.audit_trail import append, matching, search, verify
from vesalius.index.catalog import Catalog
from vesalius.services.audit_messages import AuditSource, message_of, render
from vesalius.services.events import Event
from vesalius.services.oversight import Oversight

log = logging.getLogger(__name__)

#: A record's second destination (the syslog sender); it must not block or raise.
Forward = Callable[[AuditRecord], None]
#: The event gathered per association or request and study, and the kind it becomes.
GATHERED = "instance-stored"
GATHERED_AS = "instances-stored"
_BATCH = 500
#: Seconds the writer waits after a record for more to write with it.
_LINGER = 0.2


def _urgent(item: object) -> bool:
    """A flush or the close: write what is there at once."""
    return item is None or isinstance(item, threading.Event)


#: Wakes the writer: an association or request ended, its instances are due.
_WAKE = object()


def to_record(event: Event, source: AuditSource) -> AuditRecord:
    """The record of ``event``: its A.5 message rendered, the patients and studies it names."""
    xml = render(event, source)
    code = message_of(event)
    details = dict(event.details)
    return AuditRecord(
        time=event.time.astimezone(UTC).isoformat(),
        kind=event.kind,
        message=code.meaning if code else "",
        outcome=event.outcome,
        who=event.who.name,
        host=event.who.host,
        patients=_named(details, "patient_ids", "patient_id"),
        studies=_named(details, "study_uids", "study_uid"),
        details={"identity": str(event.who), "method": event.who.method, **details},
        xml=xml.decode("utf-8") if xml else "",
    )


def _named(details: dict[str, Any], many: str, one: str) -> tuple[str, ...]:
    values = details.get(many)
    if values is None:
        values = [details.get(one)]
    if isinstance(values, str):
        values = [values]
    return tuple(sorted({str(v) for v in values if v}))


@dataclass
class _Gathered:
    """Instances one association or request stored into one study, so far."""

    first: Event
    started: float
    last: float
    classes: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    patients: set[str] = field(default_factory=set)
    size: int = 0

    def add(self, event: Event, now: float) -> None:
        details = event.details
        self.classes[str(details.get("sop_class_uid") or "")] += 1
        self.outcomes[event.outcome] += 1
        if details.get("patient_id"):
            self.patients.add(str(details["patient_id"]))
        self.size += int(details.get("size") or 0)
        self.last = now

    def event(self) -> Event:
        exchange = self.first.details.get("exchange") or {}
        return Event(
            GATHERED_AS,
            self.first.who,
            "success",
            {
                "patient_ids": sorted(self.patients),
                "study_uid": self.first.details.get("study_uid", ""),
                "sop_classes": {k: v for k, v in sorted(self.classes.items()) if k},
                "instances": sum(self.classes.values()),
                "outcomes": dict(sorted(self.outcomes.items())),
                "bytes": self.size,
                **exchange,
            },
            self.first.time,
        )


class TrailSink:
    """Writes every event to the chain in the index, off the caller's thread (see the
    module's docstring). An event bus subscriber."""

    def __init__(
        self,
        catalog: Catalog,
        source: AuditSource,
        *,
        forward: Forward | None = None,
        interval: float = 1.0,
        max_queue: int = 10_000,
    ) -> None:
        self.catalog = catalog
        self.source = source
        self.forward = forward
        self.interval = interval
        self._queue: queue.Queue[Event | threading.Event | object | None] = queue.Queue(max_queue)
        self._gathered: dict[tuple[Any, ...], _Gathered] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self._thread.start()
        logcontext.on_end(self.ended)

    def __call__(self, event: Event) -> None:
        self.write(event)

    def write(self, event: Event) -> None:
        """Take ``event`` (never blocks on the database; waits only while the queue is full,
        so that nothing is dropped)."""
        if self._closed:  # after the archive closed: nowhere left to write it durably
            log.warning("audit: a %s event after the audit trail closed", event.kind)
            return
        if event.kind == GATHERED:
            self._gather(event)
        else:
            self._queue.put(event)

    def _gather(self, event: Event) -> None:
        exchange = logcontext.current()
        key = (exchange, event.who, event.details.get("study_uid", ""))
        now = time.monotonic()
        with self._lock:
            gathered = self._gathered.get(key)
            if gathered is None:
                first = event
                if exchange is not None:
                    details = {**event.details, "exchange": {exchange[0]: exchange[1]}}
                    first = Event(event.kind, event.who, event.outcome, details, event.time)
                gathered = self._gathered[key] = _Gathered(first, now, now)
            gathered.add(event, now)

    def ended(self, exchange: tuple[str, str]) -> None:
        """An association or HTTP request ended: what it stored is written now."""
        with self._lock:
            ended = [g for key, g in self._gathered.items() if key[0] == exchange]
            for gathered in ended:
                gathered.last = gathered.started = float("-inf")
        if ended:
            with suppress(queue.Full):
                self._queue.put_nowait(_WAKE)

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything taken so far, gathered instances included; whether it was done
        within ``timeout`` seconds (tests, and commands before they read the trail)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        """Write what is pending and stop the writer (a clean shutdown loses nothing)."""
        if self._closed:
            return
        self._closed = True
        logcontext.forget(self.ended)
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            items: list[Event | threading.Event | object | None] = []
            try:
                items.append(self._queue.get(timeout=self.interval))
                # Records of a busy server are written together: one transaction and one
                # many-row insert for up to _LINGER seconds of them, not one per request (a
                # QIDO-RS paid 1.5 ms for its own transaction, in a thread beside it).
                until = time.monotonic() + _LINGER
                while len(items) < _BATCH and not _urgent(items[-1]):
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    items.append(self._queue.get(timeout=left))
            except queue.Empty:
                pass
            everything = any(item is None or isinstance(item, threading.Event) for item in items)
            events = [item for item in items if isinstance(item, Event)]
            events.extend(self._due(everything))
            if events:
                self._write(events)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is None for item in items):
                return

    def _due(self, everything: bool) -> list[Event]:
        """The gathered instances whose association or request has gone quiet."""
        now = time.monotonic()
        with self._lock:
            keys = [
                key
                for key, g in self._gathered.items()
                if everything
                or now - g.last >= self.interval
                or now - g.started >= 10 * self.interval
            ]
            return [self._gathered.pop(key).event() for key in keys]

    def _write(self, events: Sequence[Event]) -> None:
        records = []
        for event in events:
            try:
                records.append(to_record(event, self.source))
            except Exception:  # a message that cannot be rendered is logged, not lost silently
                log.exception("audit: cannot render the %s event", event.kind)
        attempt = 0
        while True:
            try:
                with self.catalog.write() as conn:
                    append(conn, records)
                break
            except Exception as exc:
                attempt += 1
                if attempt >= 5 and self._closed:
                    log.error("audit: %d record(s) not written to the index: %s", len(records), exc)
                    return
                log.warning("audit: cannot write to the index (%s); trying again", exc)
                time.sleep(min(attempt, 5))
        if self.forward is not None:
            for record in records:
                if record.xml:
                    self.forward(record)


class AuditService:
    """Reading the audit trail: listing records by patient, study, user or time, and checking
    the chain. Both need the ``audit`` permission and are themselves audited."""

    def __init__(self, catalog: Catalog, *, oversight: Oversight, trail: str) -> None:
        self.catalog = catalog
        self.oversight = oversight
        self.trail = trail
        #: The sink that writes the trail (flushed before a read, so a command sees what it did).
        self.sink: TrailSink | None = None

    def records(self, who: Identity, wanted: AuditFilter) -> list[tuple[int, AuditRecord]]:
        """The records ``wanted`` names, newest first."""
        return self.page(who, wanted, counted=False)[0]

    def page(
        self, who: Identity, wanted: AuditFilter, *, counted: bool = True
    ) -> tuple[list[tuple[int, AuditRecord]], int | None]:
        """:meth:`records`, and how many match in all (``counted``; else None): one page of
        the REST API's list. Reading is audited either way (PS3.15 A.5.3.2)."""
        self.oversight.check(who, "audit")
        self._settle()
        with self.catalog.read() as conn:
            found = list(search(conn, wanted))
            total = matching(conn, wanted) if counted else None
        asked = {k: v for k, v in vars(wanted).items() if v and k not in ("limit", "before")}
        patients = [wanted.patient] if wanted.patient else []
        studies = [wanted.study] if wanted.study else []
        self.oversight.record(
            "audit-read",
            who,
            trail=self.trail,
            criteria=asked,
            patient_ids=patients,
            study_uids=studies,
            records=len(found),
        )
        return found, total

    def verify(self, who: Identity) -> Verification:
        """Recompute the chain; the first record that breaks it, if any."""
        self.oversight.check(who, "audit")
        self._settle()
        with self.catalog.read() as conn:
            result = verify(conn)
        self.oversight.record(
            "audit-read",
            who,
            "success" if result.intact else "failure",
            trail=self.trail,
            purpose="verify",
            checked=result.checked,
            broken=result.broken_pk,
        )
        return result

    def _settle(self) -> None:
        if self.sink is not None:
            self.sink.flush()
