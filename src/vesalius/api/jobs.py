"""Jobs: list, progress, cancel, retry (the durable job queue of ``services/jobs.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.paging import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, encode_cursor
from vesalius.api.problems import PROBLEM_RESPONSES
from vesalius.errors import InvalidDataError
from vesalius.services.jobs import FINISHED, JobConflictError, JobRow

router = APIRouter()

JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: PROBLEM_RESPONSES[400] | {"description": "Not in a state that allows it"}
}


class Job(BaseModel):
    """A job of the queue: long work (send, delete, retrieve, …) with its progress."""

    id: int
    kind: str = Field(description="What it does: ``send``, ``delete``, ``retrieve``, …")
    state: JobStateName = Field(
        description="``queued`` (waiting, or waiting to retry), ``running``, then "
        "``succeeded``, ``failed`` or ``cancelled``."
    )
    done: int = Field(description="Steps done (instances sent, deleted…).")
    total: int = Field(description="Steps in all (0: not known yet).")
    message: str = Field(description="Its last word: progress, the result, or why it failed.")
    attempts: int
    max_attempts: int
    cancel_requested: bool
    submitted_by: str = Field(description="Who submitted it (``user:NAME@HOST``).")
    created_at: datetime
    updated_at: datetime
    payload: dict[str, Any] = Field(description="What the job works on (its kind's fields).")
    needs: str = Field(
        default="admin",
        description="The action cancelling or retrying it needs (``send``, ``delete``…).",
    )


def job_model(row: JobRow, needs: str = "admin") -> Job:
    """The API's view of a stored job (also the ``job`` event's data, ``api/events.py``)."""
    return Job(
        id=row.pk,
        kind=row.kind,
        state=row.state,
        done=row.done,
        total=row.total,
        message=row.message,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        cancel_requested=row.cancel_requested,
        submitted_by=row.submitted_by.partition(" [")[0],
        created_at=row.created_at,
        updated_at=row.updated_at,
        payload=row.payload,
        needs=needs,
    )


JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The job's id.")]


@router.get(
    "/jobs",
    response_model=Page[Job],
    summary="List jobs",
    description="The jobs the caller may see (an administrator: all; others: their own), "
    "newest first, by state and kind; paged by cursor.",
)
def list_jobs(
    archive: ArchiveDep,
    who: Who,
    state: Annotated[
        list[JobStateName] | None, Query(description="Only jobs in these states (repeatable).")
    ] = None,
    kind: Annotated[str, Query(max_length=32, description="Only jobs of this kind.")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[Job]:
    position = decode_cursor(cursor)
    before = None
    if position is not None:
        before = position.get("before")
        if not isinstance(before, int) or isinstance(before, bool) or not 0 < before < 2**63:
            raise InvalidDataError("cursor: not a cursor this server gave")
    rows, total = archive.jobs.page(
        who, states=tuple(state or ()), kind=kind, limit=limit + 1, before=before
    )
    more = len(rows) > limit
    rows = rows[:limit]
    following = encode_cursor({"before": rows[-1].pk}) if more and rows else None
    items = [job_model(r, archive.jobs.action_for(r.kind)) for r in rows]
    return Page[Job](items=items, total=total, next=following)


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    summary="Get a job",
    description="A job and its progress (404 if there is none the caller may see).",
)
def get_job(archive: ArchiveDep, who: Who, job_id: JobId) -> Job:
    job = archive.jobs.view(job_id, who)
    return job_model(job, archive.jobs.action_for(job.kind))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running one stops at its next step "
    "(``cancel_requested`` until then). 409 for a job already finished.",
    responses=_CONFLICT,
)
def cancel_job(archive: ArchiveDep, who: Who, job_id: JobId) -> Job:
    job = archive.jobs.view(job_id, who)
    if job.state in FINISHED:
        raise JobConflictError(f"job {job_id} already {job.state}")
    archive.jobs.cancel(job_id, who)
    job = archive.jobs.view(job_id, who)
    return job_model(job, archive.jobs.action_for(job.kind))


@router.post(
    "/jobs/{job_id}/retry",
    response_model=Job,
    summary="Retry a job",
    description="Queue a failed or cancelled job again, with fresh attempts; it starts over. "
    "409 for a job in another state.",
    responses=_CONFLICT,
)
def retry_job(archive: ArchiveDep, who: Who, job_id: JobId) -> Job:
    job = archive.jobs.retry(job_id, who)
    return job_model(job, archive.jobs.action_for(job.kind))
