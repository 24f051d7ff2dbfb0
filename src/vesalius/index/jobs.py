"""The jobs table: the durable job queue, read and written in one place.

A job is ``queued`` until a runner claims it (``running``, with its ``owner`` and a heartbeat),
then ``succeeded``, ``failed`` (tried ``max_attempts`` times) or ``cancelled``; a failed attempt
goes back to ``queued`` with a later ``run_after`` (backoff). Claiming is one statement pair in
a write transaction: on PostgreSQL the candidate row is locked with ``FOR UPDATE SKIP LOCKED``,
so runners of several processes and nodes never claim the same job and never wait on each
other; on SQLite the write transaction (``BEGIN IMMEDIATE``) already serialises claimers.
A runner that dies stops its heartbeat; :func:`requeue_stale` hands its job to another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from vesalius.index.schema import deleted_blobs, jobs

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobRow:
    """One job as stored."""

    pk: int
    kind: str
    payload: dict[str, Any]
    state: JobState
    attempts: int
    max_attempts: int
    run_after: datetime
    done: int
    total: int
    message: str
    owner: str
    heartbeat_at: datetime | None
    cancel_requested: bool
    submitted_by: str
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    jobs.c.pk,
    jobs.c.kind,
    jobs.c.payload,
    jobs.c.state,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.run_after,
    jobs.c.done,
    jobs.c.total,
    jobs.c.message,
    jobs.c.owner,
    jobs.c.heartbeat_at,
    jobs.c.cancel_requested,
    jobs.c.submitted_by,
    jobs.c.created_at,
    jobs.c.updated_at,
)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored in UTC): make them aware."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(found: Sequence[Any]) -> JobRow:
    r = tuple(found)
    return JobRow(
        pk=int(r[0]),
        kind=str(r[1]),
        payload=json.loads(r[2]),
        state=r[3],
        attempts=int(r[4]),
        max_attempts=int(r[5]),
        run_after=_utc(r[6]) or datetime.now(UTC),
        done=int(r[7]),
        total=int(r[8]),
        message=str(r[9]),
        owner=str(r[10]),
        heartbeat_at=_utc(r[11]),
        cancel_requested=bool(r[12]),
        submitted_by=str(r[13]),
        created_at=_utc(r[14]) or datetime.now(UTC),
        updated_at=_utc(r[15]) or datetime.now(UTC),
    )


def now() -> datetime:
    return datetime.now(UTC)


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    max_attempts: int,
    submitted_by: str,
    run_after: datetime | None = None,
) -> int:
    """Queue a job; its primary key."""
    at = now()
    result = conn.execute(
        insert(jobs)
        .values(
            kind=kind,
            payload=json.dumps(payload, sort_keys=True),
            state="queued",
            attempts=0,
            max_attempts=max_attempts,
            run_after=run_after or at,
            submitted_by=submitted_by,
            created_at=at,
            updated_at=at,
        )
        .returning(jobs.c.pk)
    )
    return int(result.scalar_one())


def any_due(conn: Connection, kinds: Sequence[str]) -> bool:
    """Whether a queued job of ``kinds`` is due (a read, so an idle runner's look takes no
    write lock)."""
    query = select(jobs.c.pk).where(
        jobs.c.state == "queued", jobs.c.kind.in_(tuple(kinds)), jobs.c.run_after <= now()
    )
    return conn.execute(query.limit(1)).first() is not None


def any_stale(conn: Connection, older_than: float) -> bool:
    """Whether a running job's heartbeat is older than ``older_than`` seconds."""
    cutoff = now() - timedelta(seconds=older_than)
    query = select(jobs.c.pk).where(
        jobs.c.state == "running",
        or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < cutoff),
    )
    return conn.execute(query.limit(1)).first() is not None


def claim(
    conn: Connection, owner: str, kinds: Sequence[str], *, pk: int | None = None
) -> JobRow | None:
    """Claim the next queued job of ``kinds`` that is due (or job ``pk`` if queued, due or
    not) for ``owner``; None when there is none. Call inside a write transaction."""
    at = now()
    query = select(jobs.c.pk).where(jobs.c.state == "queued", jobs.c.kind.in_(tuple(kinds)))
    if pk is None:
        query = query.where(jobs.c.run_after <= at).order_by(jobs.c.run_after, jobs.c.pk)
    else:
        query = query.where(jobs.c.pk == pk)
    query = query.limit(1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    found = conn.execute(query).scalar()
    if found is None:
        return None
    changed = conn.execute(
        update(jobs)
        .where(jobs.c.pk == found, jobs.c.state == "queued")
        .values(
            state="running",
            owner=owner,
            attempts=jobs.c.attempts + 1,
            heartbeat_at=at,
            message="",
            updated_at=at,
        )
    )
    if not changed.rowcount:
        return None
    return get(conn, int(found))


def _owned(pk: int, owner: str) -> ColumnElement[bool]:
    return and_(jobs.c.pk == pk, jobs.c.owner == owner, jobs.c.state == "running")


def heartbeat(
    conn: Connection,
    pk: int,
    owner: str,
    *,
    done: int | None = None,
    total: int | None = None,
    message: str | None = None,
) -> bool | None:
    """Note that ``owner`` still runs job ``pk`` (and its progress). Returns whether a cancel
    was requested, or None when the job is no longer this owner's (it was taken back)."""
    values: dict[str, Any] = {"heartbeat_at": now()}
    if done is not None:
        values["done"] = done
    if total is not None:
        values["total"] = total
    if message is not None:
        values["message"] = message
    values["updated_at"] = values["heartbeat_at"]
    changed = conn.execute(update(jobs).where(_owned(pk, owner)).values(values))
    if not changed.rowcount:
        return None
    flag = conn.execute(select(jobs.c.cancel_requested).where(jobs.c.pk == pk)).scalar()
    return bool(flag)


def finish(conn: Connection, pk: int, owner: str, state: JobState, message: str) -> bool:
    """End ``owner``'s run of job ``pk`` in ``state``; False if it was no longer theirs."""
    changed = conn.execute(
        update(jobs)
        .where(_owned(pk, owner))
        .values(state=state, message=message, heartbeat_at=None, updated_at=now())
    )
    return bool(changed.rowcount)


def release(conn: Connection, pk: int, owner: str, message: str) -> bool:
    """Give job ``pk`` back to the queue without spending an attempt (its runner is shutting
    down); False if it was no longer ``owner``'s."""
    changed = conn.execute(
        update(jobs)
        .where(_owned(pk, owner))
        .values(
            state="queued",
            owner="",
            attempts=jobs.c.attempts - 1,
            heartbeat_at=None,
            message=message,
            run_after=now(),
            updated_at=now(),
        )
    )
    return bool(changed.rowcount)


def retry_later(conn: Connection, pk: int, owner: str, message: str, delay: float) -> JobState:
    """After a failed attempt: queue job ``pk`` again in ``delay`` seconds, or leave it
    ``failed`` when its attempts are used up. The state it is left in."""
    row = get(conn, pk)
    if row is None or row.owner != owner or row.state != "running":
        return row.state if row is not None else "failed"
    state: JobState = "failed" if row.attempts >= row.max_attempts else "queued"
    conn.execute(
        update(jobs)
        .where(_owned(pk, owner))
        .values(
            state=state,
            message=message,
            heartbeat_at=None,
            run_after=now() + timedelta(seconds=delay),
            updated_at=now(),
        )
    )
    return state


def requeue_stale(conn: Connection, older_than: float) -> list[int]:
    """Take back running jobs whose heartbeat is older than ``older_than`` seconds (their
    runner died): queued again, or failed when their attempts are used up (a job that kills
    its runner each time must not loop forever). The jobs taken back."""
    cutoff = now() - timedelta(seconds=older_than)
    stale = conn.execute(
        select(jobs.c.pk, jobs.c.attempts, jobs.c.max_attempts).where(
            jobs.c.state == "running",
            or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < cutoff),
        )
    ).all()
    for pk, attempts, max_attempts in stale:
        spent = attempts >= max_attempts
        conn.execute(
            update(jobs)
            .where(jobs.c.pk == pk, jobs.c.state == "running")
            .values(
                state="failed" if spent else "queued",
                owner="",
                heartbeat_at=None,
                message="its runner stopped (the process ended); "
                + ("no attempts left" if spent else "queued again"),
                run_after=now(),
                updated_at=now(),
            )
        )
    return [int(pk) for pk, _, _ in stale]


def request_cancel(conn: Connection, pk: int) -> JobState | None:
    """Cancel job ``pk``: a queued one at once, a running one when its runner next looks
    (between steps). The job's state after the request; None if there is no such job."""
    row = get(conn, pk)
    if row is None:
        return None
    if row.state == "queued":
        conn.execute(
            update(jobs)
            .where(jobs.c.pk == pk, jobs.c.state == "queued")
            .values(state="cancelled", message="cancelled before it ran", updated_at=now())
        )
        return "cancelled"
    if row.state == "running":
        conn.execute(
            update(jobs).where(jobs.c.pk == pk).values(cancel_requested=1, updated_at=now())
        )
    return row.state


def requeue(conn: Connection, pk: int) -> bool:
    """Queue a failed or cancelled job again, with fresh attempts; False if it is neither."""
    changed = conn.execute(
        update(jobs)
        .where(jobs.c.pk == pk, jobs.c.state.in_(("failed", "cancelled")))
        .values(
            state="queued",
            attempts=0,
            cancel_requested=0,
            owner="",
            message="queued again",
            run_after=now(),
            updated_at=now(),
        )
    )
    return bool(changed.rowcount)


def get(conn: Connection, pk: int) -> JobRow | None:
    found = conn.execute(select(*_COLUMNS).where(jobs.c.pk == pk)).first()
    return None if found is None else _row(found)


def _filters(states: Sequence[str], kind: str, submitter: str | None) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if states:
        found.append(jobs.c.state.in_(tuple(states)))
    if kind:
        found.append(jobs.c.kind == kind)
    if submitter is not None:
        escaped = submitter.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        column = jobs.c.submitted_by
        found.append(  # services/jobs.py submitter(): "kind:name[@host][ [extras]]"
            or_(
                column == submitter,
                column.like(escaped + "@%", escape="\\"),
                column.like(escaped + " [%", escape="\\"),
            )
        )
    return found


def list_jobs(
    conn: Connection,
    *,
    states: Sequence[str] = (),
    kind: str = "",
    limit: int = 100,
    before: int | None = None,
    submitter: str | None = None,
) -> list[JobRow]:
    """The newest jobs first, optionally of some states or one kind, older than job
    ``before`` (keyset paging), submitted by ``submitter`` (``kind:name``)."""
    query = select(*_COLUMNS).where(*_filters(states, kind, submitter))
    if before is not None:
        query = query.where(jobs.c.pk < before)
    query = query.order_by(jobs.c.pk.desc()).limit(limit)
    return [_row(r) for r in conn.execute(query)]


def count_jobs(
    conn: Connection, *, states: Sequence[str] = (), kind: str = "", submitter: str | None = None
) -> int:
    """How many jobs :func:`list_jobs` would list over all its pages."""
    query = select(func.count()).select_from(jobs).where(*_filters(states, kind, submitter))
    return int(conn.execute(query).scalar_one())


def changed_since(conn: Connection, since: datetime, limit: int = 500) -> list[JobRow]:
    """The jobs updated at or after ``since`` (oldest change first), read through the index
    on ``updated_at``: what the live updates poll."""
    query = (
        select(*_COLUMNS)
        .where(jobs.c.updated_at >= since)
        .order_by(jobs.c.updated_at, jobs.c.pk)
        .limit(limit)
    )
    return [_row(r) for r in conn.execute(query)]


# -- blobs left to delete ----------------------------------------------------------------------


def note_deleted_blobs(conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
    """Note (blob key, store) pairs whose rows this transaction deletes."""
    if keys:
        at = now()
        conn.execute(
            insert(deleted_blobs),
            [{"blob_key": key, "store": store, "created_at": at} for key, store in keys],
        )


def pending_blob_deletions(conn: Connection, limit: int = 1000) -> list[tuple[int, str, str]]:
    """(note pk, blob key, store) of blobs still to remove, oldest first."""
    query = (
        select(deleted_blobs.c.pk, deleted_blobs.c.blob_key, deleted_blobs.c.store)
        .order_by(deleted_blobs.c.pk)
        .limit(limit)
    )
    return [(int(pk), str(key), str(store)) for pk, key, store in conn.execute(query)]


def clear_blob_deletions(conn: Connection, pks: Sequence[int]) -> None:
    """Forget the notes of blobs now removed."""
    if pks:
        conn.execute(delete(deleted_blobs).where(deleted_blobs.c.pk.in_(tuple(pks))))
