"""The durable job queue (``services/jobs.py``, ``index/jobs.py``) on SQLite and PostgreSQL:
claiming, progress, retries with backoff, cancel, runners that die, shutdown hand-back, and two
processes claiming from one PostgreSQL database without ever running a job twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conftest import scratch_database, wait_until
from vesalius.identity import Identity
from vesalius.index import jobs as table
from vesalius.index.catalog import Catalog
from vesalius.index.schema import metadata
from vesalius.services.audit import Auditor, MemorySink
from vesalius.services.events import EventBus
from vesalius.services.jobs import (
    JobCancelled,
    JobContext,
    JobError,
    JobFailed,
    JobRunner,
    JobService,
)
from vesalius.services.oversight import Oversight
from vesalius.services.policy import AllowAll

WHO = Identity("user", "tester", "localhost")


class Queue:
    def __init__(self, url: str, **options: float) -> None:
        self.catalog = Catalog.open(url)
        self.audit = MemorySink()
        bus = EventBus()
        bus.subscribe(Auditor([self.audit]))
        self.service = JobService(
            self.catalog,
            oversight=Oversight(AllowAll(), bus),
            max_attempts=int(options.get("max_attempts", 3)),
            retry_after=options.get("retry_after", 30.0),
            stale_after=options.get("stale_after", 60.0),
        )

    def events(self, kind: str) -> list[dict[str, object]]:
        return [dict(e.details, outcome=e.outcome) for e in self.audit.events if e.kind == kind]


@pytest.fixture
def queue(database_url: str) -> Iterator[Queue]:
    q = Queue(database_url)
    yield q
    q.catalog.close()


def test_schema_matches_the_migrations(database_url: str) -> None:
    """What the migrations build is what ``index/schema.py`` declares (tables, columns,
    indexes), on both databases."""
    catalog = Catalog.open(database_url)
    try:
        with catalog.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        catalog.close()
    # PostgreSQL alone gets text_pattern_ops twins of the indexes that LIKE 'abc%' uses.
    extra = [d for d in diff if d[0] == "remove_index" and str(d[1].name).endswith("_pattern")]
    assert [d for d in diff if d not in extra] == []


def test_a_job_runs_reports_progress_and_succeeds(queue: Queue) -> None:
    seen: list[tuple[int, int]] = []

    def count(context: JobContext) -> str:
        for n in range(5):
            context.progress(n, 5, force=True)
            with queue.catalog.read() as conn:
                row = table.get(conn, context.job.pk)
            assert row is not None and row.state == "running"
            seen.append((row.done, row.total))
        context.progress(5, 5)
        return f"counted to {context.payload['to']} for {context.who}"

    queue.service.register("count", count, "admin")
    job = queue.service.submit("count", {"to": 5}, WHO)
    assert job.state == "queued" and job.submitted_by == "user:tester@localhost"
    ended = queue.service.run_next()
    assert ended is not None
    assert (ended.state, ended.done, ended.total, ended.attempts) == ("succeeded", 5, 5, 1)
    assert ended.message == "counted to 5 for user:tester@localhost"
    assert seen == [(n, 5) for n in range(5)]
    assert queue.service.run_next() is None  # nothing else due
    assert queue.events("job-submitted")[0]["kind"] == "count"


def test_a_failing_job_backs_off_then_fails(queue: Queue) -> None:
    attempts: list[int] = []

    def flaky(context: JobContext) -> str:
        attempts.append(context.job.attempts)
        raise JobError(f"peer down (attempt {context.job.attempts})")

    queue.service.register("flaky", flaky, "send")
    job = queue.service.submit("flaky", {}, WHO)
    delays = []
    for _ in range(2):
        before = datetime.now(UTC)
        ended = queue.service.run_next() or queue.service.run_job(job.pk)
        assert ended is not None and ended.state == "queued"
        delays.append((ended.run_after - before).total_seconds())
        assert queue.service.run_next() is None  # not due yet: backing off
    assert 29 < delays[0] < 32 and 59 < delays[1] < 62  # retry_after, then doubled
    ended = queue.service.run_job(job.pk)  # the runner may take it early on request
    assert ended is not None and ended.state == "failed"
    assert ended.message == "peer down (attempt 3)" and attempts == [1, 2, 3]
    assert queue.events("job-failed")[0]["job"] == job.pk

    again = queue.service.retry(job.pk, WHO)
    assert (again.state, again.attempts) == ("queued", 0)


def test_a_job_that_cannot_succeed_fails_at_once(queue: Queue) -> None:
    def gone(context: JobContext) -> str:
        raise JobFailed("nothing stored matches")

    queue.service.register("gone", gone, "send")
    job = queue.service.submit("gone", {}, WHO)
    ended = queue.service.run_next()
    assert ended is not None and (ended.state, ended.attempts) == ("failed", 1)
    with pytest.raises(Exception, match="only failed or cancelled"):
        queue.service.retry(queue.service.submit("gone", {}, WHO).pk, WHO)
    assert job.pk


def test_cancel_a_queued_job_and_a_running_one(queue: Queue) -> None:
    started = threading.Event()

    def endless(context: JobContext) -> str:
        started.set()
        n = 0
        while True:
            n += 1
            context.progress(n, 10**9, force=True)
            time.sleep(0.02)

    queue.service.register("endless", endless, "admin")
    waiting = queue.service.submit("endless", {}, WHO)
    assert queue.service.cancel(waiting.pk, WHO) == "cancelled"
    assert queue.service.run_next() is None

    job = queue.service.submit("endless", {}, WHO)
    result: list[object] = []
    runner = threading.Thread(target=lambda: result.append(queue.service.run_next()))
    runner.start()
    assert started.wait(10)
    assert queue.service.cancel(job.pk, WHO) == "running"  # asked; it stops at its next step
    runner.join(10)
    assert not runner.is_alive()
    ended = queue.service.get(job.pk, WHO)
    assert ended.state == "cancelled" and ended.message == "cancelled on request"
    assert ended.done > 0


def test_the_job_of_a_runner_that_died_is_taken_back(database_url: str) -> None:
    q = Queue(database_url, stale_after=0.5, max_attempts=2)
    try:
        q.service.register("noop", lambda context: "done", "admin")
        job = q.service.submit("noop", {}, WHO)
        with q.catalog.write() as conn:  # a runner claims it, then dies without a word
            assert table.claim(conn, "dead-host:1:1", ["noop"]) is not None
        assert q.service.requeue_stale() == []  # its heartbeat is fresh
        time.sleep(0.7)
        assert q.service.requeue_stale() == [job.pk]
        ended = q.service.run_next()
        assert ended is not None and (ended.state, ended.attempts) == ("succeeded", 2)

        # A job that kills its runner every time stops being retried.
        doomed = q.service.submit("noop", {}, WHO)
        for _ in range(2):
            with q.catalog.write() as conn:
                assert table.claim(conn, "dead-host:1:1", ["noop"], pk=doomed.pk) is not None
            time.sleep(0.7)
            q.service.requeue_stale()
        row = q.service.get(doomed.pk, WHO)
        assert row.state == "failed" and "runner stopped" in row.message
    finally:
        q.catalog.close()


def test_a_late_runner_does_not_overwrite_the_job_taken_from_it(queue: Queue) -> None:
    queue.service.register("noop", lambda context: "done", "admin")
    job = queue.service.submit("noop", {}, WHO)
    with queue.catalog.write() as conn:
        assert table.claim(conn, "slow:1:1", ["noop"]) is not None
        table.requeue_stale(conn, -1)  # taken back (as after a stall)
        assert table.claim(conn, "fast:2:2", ["noop"]) is not None
        assert table.heartbeat(conn, job.pk, "slow:1:1") is None  # the slow one learns
        assert not table.finish(conn, job.pk, "slow:1:1", "succeeded", "late")
        assert table.finish(conn, job.pk, "fast:2:2", "succeeded", "on time")
        row = table.get(conn, job.pk)
    assert row is not None and row.message == "on time"


def test_shutdown_hands_the_running_job_back(queue: Queue) -> None:
    started = threading.Event()

    def long(context: JobContext) -> str:
        started.set()
        for n in range(100):
            context.progress(n, 100, force=True)
            time.sleep(0.02)
        return "finished"

    queue.service.register("long", long, "admin")
    job = queue.service.submit("long", {}, WHO)
    runner = JobRunner(queue.service, poll_interval=0.05)
    runner.start()
    assert started.wait(10)
    runner.stop()
    row = queue.service.get(job.pk, WHO)
    assert (row.state, row.attempts) == ("queued", 0)
    assert "server stopped" in row.message
    queue.service.stopping.clear()
    assert queue.service.run_job(job.pk) is not None
    assert queue.service.get(job.pk, WHO).state == "succeeded"


def test_handler_errors_do_not_escape_the_runner(queue: Queue) -> None:
    def broken(context: JobContext) -> str:
        raise RuntimeError("bug")

    queue.service.register("broken", broken, "admin")
    job = queue.service.submit("broken", {}, WHO)
    runner = JobRunner(queue.service, poll_interval=0.05)
    runner.start()
    try:
        wait_until(lambda: queue.service.get(job.pk, WHO).attempts == 1, 10, "an attempt")
    finally:
        runner.stop()
    row = queue.service.get(job.pk, WHO)
    assert row.state == "queued" and row.message == "RuntimeError: bug"


def test_cancelled_inside_a_handler_is_not_a_failure(queue: Queue) -> None:
    def quits(context: JobContext) -> str:
        raise JobCancelled("the peer asked to stop")

    queue.service.register("quits", quits, "admin")
    queue.service.submit("quits", {}, WHO)
    ended = queue.service.run_next()
    assert ended is not None and ended.state == "cancelled"


# -- two processes, one PostgreSQL -------------------------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import os, sys, time
    from vesalius.index.catalog import Catalog
    from vesalius.services.jobs import JobService
    from vesalius.services.oversight import Oversight
    from vesalius.services.events import EventBus

    url, log_path, go = sys.argv[1], sys.argv[2], sys.argv[3]
    catalog = Catalog.open(url)
    service = JobService(catalog, oversight=Oversight(events=EventBus()))

    def probe(context):
        with open(log_path, "a") as log:
            log.write(f"{context.job.pk} {os.getpid()}\\n")
        time.sleep(0.02)
        return "ok"

    service.register("probe", probe, "admin")
    while not os.path.exists(go):
        time.sleep(0.01)
    idle = time.monotonic()
    while time.monotonic() - idle < 1.5:
        if service.run_next() is not None:
            idle = time.monotonic()
    catalog.close()
    """
)


def test_two_processes_claim_from_one_postgresql_without_doubles(tmp_path: Path) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        q = Queue(url)
        try:
            q.service.register("probe", lambda context: "ok", "admin")
            submitted = [q.service.submit("probe", {"n": n}, WHO).pk for n in range(120)]
            log, go = tmp_path / "claims.log", tmp_path / "go"
            procs = [
                subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(log), str(go)])
                for _ in range(2)
            ]
            time.sleep(1.0)  # both ready and polling for the start signal
            go.touch()
            for proc in procs:
                assert proc.wait(120) == 0
            claims = [line.split() for line in log.read_text().splitlines()]
            ran = [int(pk) for pk, _ in claims]
            assert sorted(ran) == sorted(submitted)  # every job ran exactly once
            by_process = {pid for _, pid in claims}
            assert len(by_process) == 2  # and both processes took a share
            states = {q.service.get(pk, WHO).state for pk in submitted}
            assert states == {"succeeded"}
        finally:
            q.catalog.close()
