"""Jobs: long work (delete a study, send a study to a peer, and later compress, route, verify)
that outlives the request that asked for it. DESIGN.md, "Events and jobs".

The queue is a table of the index database (``index/jobs.py``), so it needs no broker, survives
a restart, and every node of a PostgreSQL deployment shares it. Libraries were weighed and none
fits: procrastinate, PgQueuer and pg-boss-likes are PostgreSQL-only, huey and RQ want Redis (or
keep SQLite only), Celery and Dramatiq want a broker; what we need is small (claim, heartbeat,
retry with backoff, cancel), and the index database is already the one thing every node shares.

A **handler** does one kind of job: it receives a :class:`JobContext` (the job, its submitter,
progress and cancel), and returns a short result or raises. :class:`JobError` (and any other
exception) fails the attempt: the job is queued again after ``retry_after`` seconds, doubling
each time (at most an hour), until ``max_attempts``; :class:`JobFailed` fails the job at once,
:class:`JobCancelled` ends it cancelled.
Handlers must be safe to run again from the start (a retried or taken-back job starts over).

A :class:`JobRunner` thread claims and runs jobs; the wiring starts one in each process that
may run them (every process on PostgreSQL; the main process only on SQLite). While a job runs a
ticker keeps its heartbeat fresh; a runner that dies stops beating, and after
``jobs.stale_after`` seconds another runner takes the job back (:meth:`JobService.requeue_stale`).
"""

from __future__ import annotations

import builtins
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from vesalius import logcontext
from vesalius.errors import NotFoundError, VesaliusError
from vesalius.identity import Identity, Method
from vesalius.index import jobs as table
from vesalius.index.catalog import Catalog
from vesalius.index.jobs import FINISHED, JobRow, JobState
from vesalius.index.lookup import RetrieveKeys
from vesalius.services.oversight import Oversight
from vesalius.services.policy import Action, Resource

log = logging.getLogger(__name__)

__all__ = [
    "FINISHED",
    "Handler",
    "JobCancelled",
    "JobConflictError",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobInterrupted",
    "JobRow",
    "JobRunner",
    "JobService",
    "JobState",
    "keys_payload",
    "payload_keys",
]

#: Longest wait between two attempts of a failing job.
MAX_BACKOFF = 3600.0
#: Seconds between progress writes of a busy job (each is an index write).
PROGRESS_EVERY = 0.5


class JobError(VesaliusError):
    """An attempt at a job failed; it is retried (with backoff) until ``max_attempts``."""


class JobFailed(JobError):
    """The job cannot succeed however often it is tried (what it names is gone, its peer is
    not known): it ends failed at once."""


class JobCancelled(VesaliusError):
    """The job was cancelled while it ran."""


class JobConflictError(VesaliusError):
    """The job is not in a state the request applies to (retry a running job, cancel a
    finished one)."""

    http_status = 409


class JobInterrupted(VesaliusError):
    """The runner is shutting down: the job goes back to the queue, no attempt spent."""


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its handler and the action its submitter must be allowed."""

    handler: Handler
    action: Action


class JobContext:
    """What a handler gets: the job, who submitted it, and a way to report progress and see a
    cancel request (both through the heartbeat)."""

    def __init__(self, service: JobService, job: JobRow, owner: str) -> None:
        self.service = service
        self.job = job
        self.owner = owner
        self.who = _identity(job.submitted_by)
        self._cancelled = False
        self._last = 0.0

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    def progress(self, done: int, total: int, message: str = "", *, force: bool = False) -> None:
        """Report ``done`` of ``total`` (written at most every half second unless ``force``);
        raises :class:`JobCancelled` if a cancel was requested."""
        moment = time.monotonic()
        if force or moment - self._last >= PROGRESS_EVERY or done >= total:
            self._last = moment
            self._beat(done=done, total=total, message=message or None)
        if self._cancelled:
            raise JobCancelled("cancelled on request")
        if self.service.stopping.is_set():
            raise JobInterrupted("interrupted: the server stopped; it runs again at the next start")

    def cancelled(self) -> bool:
        """Whether a cancel was requested (as of the last heartbeat or progress report)."""
        return self._cancelled

    def _beat(self, **progress: Any) -> None:
        with self.service.catalog.write() as conn:
            flag = table.heartbeat(conn, self.job.pk, self.owner, **progress)
        if flag is None:
            # Taken back (our heartbeat was late) and maybe running elsewhere: stop here.
            raise JobCancelled("the job was taken back by another runner")
        self._cancelled = self._cancelled or flag


Handler = Callable[[JobContext], str]


def submitter(who: Identity) -> str:
    """How a job records who submitted it: ``kind:name@host``, then what the policy reads
    when the job runs (``[roles=a,b;groups=g;method=token]``), so a job runs with the rights
    of its submitter, neither refused nor escalated (:func:`_identity` reads it back)."""
    extras = []
    if who.roles:
        extras.append("roles=" + ",".join(sorted(who.roles)))
    if who.groups:
        extras.append("groups=" + ",".join(sorted(who.groups)))
    if who.method != "none":
        extras.append(f"method={who.method}")
    return f"{who} [{';'.join(extras)}]" if extras else str(who)


def _identity(text: str) -> Identity:
    """The identity a job was submitted by, from :func:`submitter`'s form."""
    bracket = ""
    if text.endswith("]") and " [" in text:
        text, _, bracket = text.rpartition(" [")
    fields = dict(
        part.split("=", 1) for part in bracket.removesuffix("]").split(";") if "=" in part
    )
    kind, _, rest = text.partition(":")
    name, _, host = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if kind not in ("ae", "user", "system"):
        return Identity.system()
    roles = frozenset(r for r in fields.get("roles", "").split(",") if r)
    groups = frozenset(g for g in fields.get("groups", "").split(",") if g)
    method = fields.get("method", "none")
    if method not in get_args(Method):
        method = "none"
    return Identity(kind, name, host, roles, groups, method)  # type: ignore[arg-type]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class JobService:
    """Submit, list, cancel and retry jobs, and run them (:meth:`run_next`, :meth:`run_job`)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        oversight: Oversight,
        max_attempts: int = 5,
        retry_after: float = 10.0,
        stale_after: float = 60.0,
    ) -> None:
        self.catalog = catalog
        self.oversight = oversight
        self.max_attempts = max_attempts
        self.retry_after = retry_after
        self.stale_after = stale_after
        self.kinds: dict[str, JobKind] = {}
        #: Set when the process shuts down: running handlers stop at their next progress report.
        self.stopping = threading.Event()
        #: The jobs this process's runners are running now: pk → owner.
        self._running: dict[int, str] = {}

    def register(self, kind: str, handler: Handler, action: Action) -> None:
        """Make ``kind`` runnable; submitting it needs ``action``."""
        self.kinds[kind] = JobKind(handler, action)

    # -- the door ---------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        who: Identity,
        resource: Resource | None = None,
    ) -> JobRow:
        """Queue a job of ``kind`` for ``who`` (after the policy check of the kind's action
        on ``resource``)."""
        known = self.kinds.get(kind)
        if known is None:
            raise NotFoundError(f"no such kind of job: {kind!r}")
        if resource is None:
            self.oversight.check(who, known.action)
        else:
            self.oversight.check(who, known.action, resource)
        with self.catalog.write() as conn:
            pk = table.enqueue(
                conn, kind, payload, max_attempts=self.max_attempts, submitted_by=submitter(who)
            )
            job = table.get(conn, pk)
        assert job is not None
        self.oversight.record("job-submitted", who, job=pk, kind=kind, **_brief(payload))
        return job

    def get(self, pk: int, who: Identity) -> JobRow:
        self.oversight.check(who, "read")
        with self.catalog.read() as conn:
            job = table.get(conn, pk)
        if job is None:
            raise NotFoundError(f"no job {pk}")
        return job

    def _action(self, job: JobRow) -> Action:
        return self.action_for(job.kind)

    def action_for(self, kind: str) -> Action:
        """What submitting, cancelling or retrying a job of ``kind`` needs (``admin`` for a
        kind this process does not know)."""
        known = self.kinds.get(kind)
        return known.action if known is not None else "admin"

    def list(
        self, who: Identity, *, states: tuple[str, ...] = (), kind: str = "", limit: int = 100
    ) -> builtins.list[JobRow]:
        self.oversight.check(who, "read")
        with self.catalog.read() as conn:
            return table.list_jobs(conn, states=states, kind=kind, limit=limit)

    # -- what an identity may see (the REST API, the live updates) ---------------------------

    def sees_all(self, who: Identity) -> bool:
        """Whether ``who`` sees every job (an administrator, the system); others see the jobs
        they submitted. Asked of the policy without an audit record (it filters, not refuses)."""
        try:
            self.oversight.policy.check(who, "admin")
        except VesaliusError:
            return False
        return True

    def may_read(self, who: Identity) -> bool:
        """Whether ``who`` may look at jobs at all (the ``read`` action), unaudited."""
        try:
            self.oversight.policy.check(who, "read")
        except VesaliusError:
            return False
        return True

    def visible(self, who: Identity, job: JobRow, *, sees_all: bool | None = None) -> bool:
        """Whether ``who`` may see ``job`` (see :meth:`sees_all`)."""
        if sees_all if sees_all is not None else self.sees_all(who):
            return True
        owner = _identity(job.submitted_by)
        return (owner.kind, owner.name) == (who.kind, who.name)

    def page(
        self,
        who: Identity,
        *,
        states: tuple[str, ...] = (),
        kind: str = "",
        limit: int = 50,
        before: int | None = None,
    ) -> tuple[builtins.list[JobRow], int]:
        """One page of the jobs ``who`` may see, newest first, older than job ``before``;
        and how many there are in all."""
        self.oversight.check(who, "read")
        submitter = None if self.sees_all(who) else f"{who.kind}:{who.name}"
        with self.catalog.read() as conn:
            rows = table.list_jobs(
                conn, states=states, kind=kind, limit=limit, before=before, submitter=submitter
            )
            total = table.count_jobs(conn, states=states, kind=kind, submitter=submitter)
        return rows, total

    def view(self, pk: int, who: Identity) -> JobRow:
        """Job ``pk`` if ``who`` may see it (else :class:`NotFoundError`, as for none)."""
        job = self.get(pk, who)
        if not self.visible(who, job):
            raise NotFoundError(f"no job {pk}")
        return job

    def changed_since(self, since: datetime) -> builtins.list[JobRow]:
        """Jobs updated at or after ``since``, for the live updates (which filter them per
        identity with :meth:`visible`)."""
        with self.catalog.read() as conn:
            return table.changed_since(conn, since)

    def cancel(self, pk: int, who: Identity) -> JobState:
        """Cancel a queued job now, a running one at its next step; its state after."""
        job = self.view(pk, who)
        self.oversight.check(
            who, self.kinds[job.kind].action if job.kind in self.kinds else "admin"
        )
        with self.catalog.write() as conn:
            state = table.request_cancel(conn, pk)
        if state is None:
            raise NotFoundError(f"no job {pk}")
        self.oversight.record("job-cancel-requested", who, job=pk, kind=job.kind, state=state)
        return state

    def retry(self, pk: int, who: Identity) -> JobRow:
        """Queue a failed or cancelled job again with fresh attempts."""
        job = self.view(pk, who)
        self.oversight.check(
            who, self.kinds[job.kind].action if job.kind in self.kinds else "admin"
        )
        with self.catalog.write() as conn:
            if not table.requeue(conn, pk):
                raise JobConflictError(
                    f"job {pk} is {job.state}: only failed or cancelled jobs retry"
                )
            again = table.get(conn, pk)
        assert again is not None
        self.oversight.record("job-retried", who, job=pk, kind=job.kind)
        return again

    def wait(
        self,
        pk: int,
        who: Identity,
        *,
        poll: float = 0.2,
        timeout: float | None = None,
        on_progress: Callable[[JobRow], None] | None = None,
    ) -> JobRow:
        """Wait for job ``pk`` to finish (``timeout``: give up and return it as it is)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(pk, who)
            if on_progress is not None:
                on_progress(job)
            if job.state in FINISHED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                return job
            time.sleep(poll)

    # -- running ----------------------------------------------------------------------------

    def requeue_stale(self) -> builtins.list[int]:
        """Take back the jobs of runners that stopped beating (see the module's text)."""
        with self.catalog.read() as conn:
            if not table.any_stale(conn, self.stale_after):
                return []
        with self.catalog.write() as conn:
            taken = table.requeue_stale(conn, self.stale_after)
        for pk in taken:
            log.warning("job %d: its runner stopped; taken back", pk)
        return taken

    def run_next(self, owner: str | None = None) -> JobRow | None:
        """Claim and run the next due job; the job as it ended, or None if none was due."""
        owner = owner or _owner()
        with self.catalog.read() as conn:
            if not table.any_due(conn, tuple(self.kinds)):
                return None
        with self.catalog.write() as conn:
            job = table.claim(conn, owner, tuple(self.kinds))
        return None if job is None else self._run(job, owner)

    def run_job(self, pk: int, owner: str | None = None) -> JobRow | None:
        """Claim job ``pk`` if it is queued (due or not) and run it here; None when another
        runner has it or it is already finished."""
        owner = owner or _owner()
        with self.catalog.write() as conn:
            job = table.claim(conn, owner, tuple(self.kinds), pk=pk)
        return None if job is None else self._run(job, owner)

    def _run(self, job: JobRow, owner: str) -> JobRow:
        with logcontext.bound(logcontext.JOB, str(job.pk)):  # on every line the job logs
            return self._run_job(job, owner)

    def _run_job(self, job: JobRow, owner: str) -> JobRow:
        context = JobContext(self, job, owner)
        kind = self.kinds[job.kind]
        log.info("job %d (%s) attempt %d by %s", job.pk, job.kind, job.attempts, owner)
        ticker = _Ticker(context, max(0.2, self.stale_after / 4))
        ticker.start()
        self._running[job.pk] = owner
        try:
            result = kind.handler(context)
        except JobCancelled as exc:
            self._end(job, owner, "cancelled", exc.message)
            self.oversight.record(
                "job-cancelled", context.who, "success", job=job.pk, kind=job.kind
            )
        except JobFailed as exc:
            self._end(job, owner, "failed", exc.message)
            self.oversight.record(
                "job-failed", context.who, "failure", job=job.pk, kind=job.kind, reason=exc.message
            )
        except JobInterrupted as exc:
            with self.catalog.write() as conn:
                table.release(conn, job.pk, owner, exc.message)
            log.info("job %d (%s) handed back: %s", job.pk, job.kind, exc.message)
        except Exception as exc:
            reason = (
                exc.message if isinstance(exc, VesaliusError) else f"{type(exc).__name__}: {exc}"
            )
            if not isinstance(exc, VesaliusError):
                log.exception("job %d (%s) failed", job.pk, job.kind)
            delay = min(MAX_BACKOFF, self.retry_after * 2 ** max(0, job.attempts - 1))
            with self.catalog.write() as conn:
                state = table.retry_later(conn, job.pk, owner, reason, delay)
            log.warning(
                "job %d (%s) attempt %d failed: %s (%s)",
                job.pk,
                job.kind,
                job.attempts,
                reason,
                f"retry in {delay:.0f} s" if state == "queued" else state,
            )
            if state == "failed":
                self.oversight.record(
                    "job-failed", context.who, "failure", job=job.pk, kind=job.kind, reason=reason
                )
        else:
            self._end(job, owner, "succeeded", result)
            self.oversight.record("job-succeeded", context.who, job=job.pk, kind=job.kind)
        finally:
            self._running.pop(job.pk, None)
            ticker.stop()
        with self.catalog.read() as conn:
            ended = table.get(conn, job.pk)
        return ended or job

    def release_running(self, message: str) -> int:
        """Hand the jobs still running here back to the queue (shutdown, when a handler did
        not reach a progress report within the grace period); how many there were."""
        released = 0
        for pk, owner in list(self._running.items()):
            with self.catalog.write() as conn:
                if table.release(conn, pk, owner, message):
                    released += 1
                    log.info("job %d handed back: %s", pk, message)
        return released

    def _end(self, job: JobRow, owner: str, state: JobState, message: str) -> None:
        with self.catalog.write() as conn:
            table.finish(conn, job.pk, owner, state, message)
        log.info("job %d (%s) %s: %s", job.pk, job.kind, state, message)


def keys_payload(keys: RetrieveKeys) -> dict[str, Any]:
    """A job payload naming stored instances (to delete, to send)."""
    return {
        "level": keys.level,
        "patient_id": keys.patient_id or "",
        "study_uids": list(keys.study_uids),
        "series_uids": list(keys.series_uids),
        "sop_instance_uids": list(keys.sop_instance_uids),
    }


def payload_keys(payload: dict[str, Any]) -> RetrieveKeys:
    return RetrieveKeys(
        level=payload["level"],
        patient_id=payload.get("patient_id") or None,
        study_uids=tuple(payload.get("study_uids", ())),
        series_uids=tuple(payload.get("series_uids", ())),
        sop_instance_uids=tuple(payload.get("sop_instance_uids", ())),
    )


def _brief(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload's scalar entries, for the audit record."""
    return {k: v for k, v in payload.items() if isinstance(v, str | int | float | list)}


class _Ticker:
    """Keeps a running job's heartbeat fresh while its handler works (a single step, such as
    sending one large instance, may outlast ``stale_after``)."""

    def __init__(self, context: JobContext, every: float) -> None:
        self.context = context
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.context._beat()
            except JobCancelled:
                return  # taken back: the handler learns at its next progress report
            except Exception as exc:  # the index briefly unavailable: beat again later
                log.warning("job %d heartbeat failed: %s", self.context.job.pk, exc)


class JobRunner:
    """A thread that claims and runs jobs until stopped; it also takes back the jobs of
    runners that died and finishes pending blob deletions (:attr:`housekeeping`)."""

    def __init__(
        self,
        service: JobService,
        *,
        poll_interval: float = 1.0,
        housekeeping: Callable[[], object] | None = None,
        name: str = "job-runner",
    ) -> None:
        self.service = service
        self.poll_interval = poll_interval
        self.housekeeping = housekeeping
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        """Whether the runner's thread runs (it ends only when stopped, or with the process)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop: the job at hand (if any) is handed back to the queue at its next progress
        report; wait at most ``timeout`` seconds, and past that put it back in the queue
        here (its handler ends with the process)."""
        self.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.service.release_running(
                "interrupted: the server stopped; it runs again at the next start"
            )

    def request_stop(self) -> None:
        """Ask the runner to stop (returns at once): no new job is claimed, and the one at
        hand is handed back at its next progress report."""
        self._stop.set()
        self.service.stopping.set()

    def _loop(self) -> None:
        last_sweep = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_sweep >= self.service.stale_after / 2:
                    last_sweep = time.monotonic()
                    self.service.requeue_stale()
                    if self.housekeeping is not None:
                        self.housekeeping()
                ran = self.service.run_next()
            except Exception:
                log.exception("job runner")
                ran = None
            if ran is None:
                self._stop.wait(self.poll_interval)
