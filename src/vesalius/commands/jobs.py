"""``vesalius delete`` and ``vesalius jobs``: deleting stored data and minding the job queue.

Like ``vesalius import``, these open the archive of the settings (``data_dir``,
``database_url``) and may run while the server does. A deletion or a send (``vesalius send
--study``) is a job in the index database: by default the command runs it here and shows its
progress (or follows it, if a server's runner claimed it first); with ``--no-wait`` it only
queues it, and a running server's runner does it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from vesalius.commands import config_option, operator, settings_from
from vesalius.errors import VesaliusError

if TYPE_CHECKING:
    from vesalius.dicom.model import Level
    from vesalius.services.archive import Archive
    from vesalius.services.jobs import JobRow


@contextmanager
def opened(
    config: Path | None, data_dir: str | None = None, create: str | None = None
) -> Iterator[Archive]:
    """The archive of the settings, closed afterwards; errors of the work become click errors
    (exit status 1), start-up errors end the command with their own (``fatal.py``). A folder
    without an archive is refused (``startup.py``) before anything is written there, unless
    ``create`` (``startup.check_archive``). Its audit
    records (a deletion, a send) go to stderr, one JSON line each, and to the server's audit
    trail (``audit.file``, docs/operations.md "Logs")."""
    import logging

    from vesalius.logs import audit_handler
    from vesalius.services.audit import AUDIT_LOGGER
    from vesalius.startup import open_local

    settings = settings_from(config, data_dir=data_dir)
    archive = open_local(settings, create=create).archive
    audit = logging.getLogger(AUDIT_LOGGER)
    if not audit.handlers:
        try:
            trail = audit_handler(settings)
        except BaseException:
            archive.close()
            raise
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("audit: %(message)s"))
        audit.addHandler(handler)
        audit.propagate = False
        if trail is not None:
            audit.addHandler(trail)
    try:
        yield archive
    except VesaliusError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        archive.close()


def describe(job: JobRow) -> str:
    """One line: number, kind, state, progress, message."""
    progress = f" {job.done}/{job.total}" if job.total else ""
    attempts = f" attempt {job.attempts}/{job.max_attempts}" if job.attempts > 1 else ""
    message = f": {job.message}" if job.message else ""
    return f"job {job.pk} {job.kind} {job.state}{progress}{attempts}{message}"


def _backing_off(row: JobRow, submitted: JobRow) -> bool:
    """Whether an attempt (here or by a server's runner) failed and the job now waits for
    its retry."""
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(seconds=1)
    return row.state == "queued" and row.attempts > submitted.attempts and row.run_after > later


def follow(archive: Archive, job: JobRow, wait: bool) -> JobRow:
    """Run ``job`` here (or follow the runner that claimed it first) with a progress bar,
    unless ``wait`` is False; print how it ended and exit 1 unless it succeeded. An attempt
    that failed here is left queued for its retry (by a server's runner or ``vesalius jobs
    run``)."""
    import time

    from tqdm import tqdm

    who = operator()
    if not wait:
        click.echo(f"queued: {describe(job)}")
        return job
    worker = threading.Thread(target=archive.jobs.run_job, args=(job.pk,), daemon=True)
    worker.start()
    with tqdm(desc=job.kind, unit="instance", file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            while True:
                row = archive.jobs.get(job.pk, who)
                if row.total and bar.total != row.total:
                    bar.reset(total=row.total)
                bar.n = row.done
                bar.refresh()
                if row.state in ("succeeded", "failed", "cancelled"):
                    break
                if _backing_off(row, job):
                    break  # an attempt failed; the retry is the runners' to make
                time.sleep(0.2)
        except KeyboardInterrupt:
            archive.jobs.cancel(job.pk, who)
            worker.join()
            row = archive.jobs.get(job.pk, who)
    worker.join()
    click.echo(describe(row))
    if row.state == "queued":
        click.echo(
            f"job {row.pk} will be tried again after {row.run_after:%H:%M:%S} UTC by a running "
            "server or `vesalius jobs run`",
            err=True,
        )
    if row.state != "succeeded":
        sys.exit(1)
    return row


# ---------------------------------------------------------------------------------------------


@click.command()
@click.option("--patient", "patient_id", help="Delete every study of this Patient ID.")
@click.option("--study", "studies", multiple=True, help="Study Instance UID (repeatable).")
@click.option("--series", "series", multiple=True, help="Series Instance UID (repeatable).")
@click.option("--instance", "instances", multiple=True, help="SOP Instance UID (repeatable).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-wait", is_flag=True, help="Queue the deletion and return at once.")
@config_option
@click.option("--data-dir", help="Override data_dir.")
def delete(
    patient_id: str | None,
    studies: tuple[str, ...],
    series: tuple[str, ...],
    instances: tuple[str, ...],
    yes: bool,
    no_wait: bool,
    config: Path | None,
    data_dir: str | None,
) -> None:
    """Delete stored instances: a patient, studies, series or instances (index rows and
    files, audited). The narrowest level given is deleted; wider ones narrow it."""
    from vesalius.services.retrieve import RetrieveKeys

    if instances:
        level = "IMAGE"
    elif series:
        level = "SERIES"
    elif studies:
        level = "STUDY"
    elif patient_id:
        level = "PATIENT"
    else:
        raise click.UsageError("name what to delete: --patient, --study, --series or --instance")
    keys = RetrieveKeys(
        cast("Level", level),
        patient_id=patient_id or None,
        study_uids=studies,
        series_uids=series,
        sop_instance_uids=instances,
    )
    with opened(config, data_dir) as archive:
        found = archive.deletion.matches(keys, operator())
        if not found:
            raise click.ClickException("nothing stored matches")
        patients = len({i.patient_id for i in found})
        studies_n = len({i.study_uid for i in found})
        what = f"{len(found)} instance(s) of {studies_n} study(ies), {patients} patient(s)"
        if not yes and not click.confirm(f"Delete {what}?", err=True):
            raise click.Abort()
        job = archive.deletion.submit(keys, operator())
        follow(archive, job, not no_wait)


# ---------------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """The job queue: list, show, cancel, retry, or run jobs here."""


def _as_dict(job: JobRow) -> dict[str, Any]:
    return {
        "id": job.pk,
        "kind": job.kind,
        "state": job.state,
        "done": job.done,
        "total": job.total,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "message": job.message,
        "payload": job.payload,
        "owner": job.owner,
        "submitted_by": job.submitted_by,
        "created": job.created_at.isoformat(),
        "updated": job.updated_at.isoformat(),
        "run_after": job.run_after.isoformat(),
    }


@jobs.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]),
    help="Only jobs in this state (repeatable).",
)
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def list_command(states: tuple[str, ...], limit: int, as_json: bool, config: Path | None) -> None:
    """The newest jobs first."""
    with opened(config) as archive:
        for job in archive.jobs.list(operator(), states=states, limit=limit):
            click.echo(json.dumps(_as_dict(job)) if as_json else describe(job))


@jobs.command()
@click.argument("job_id", type=int)
@config_option
def show(job_id: int, config: Path | None) -> None:
    """One job in full, as JSON."""
    with opened(config) as archive:
        click.echo(json.dumps(_as_dict(archive.jobs.get(job_id, operator())), indent=2))


@jobs.command()
@click.argument("job_id", type=int)
@config_option
def cancel(job_id: int, config: Path | None) -> None:
    """Cancel a job: a queued one at once, a running one between two of its steps."""
    with opened(config) as archive:
        state = archive.jobs.cancel(job_id, operator())
        click.echo(f"job {job_id}: {'cancelled' if state == 'cancelled' else 'cancel requested'}")


@jobs.command()
@click.argument("job_id", type=int)
@click.option("--no-wait", is_flag=True, help="Queue it again and return at once.")
@config_option
def retry(job_id: int, no_wait: bool, config: Path | None) -> None:
    """Run a failed or cancelled job again, with fresh attempts."""
    with opened(config) as archive:
        follow(archive, archive.jobs.retry(job_id, operator()), not no_wait)


@jobs.command()
@click.option("--until-empty", is_flag=True, help="Stop when no job is due (else run on).")
@config_option
def run(until_empty: bool, config: Path | None) -> None:
    """Run queued jobs in this process (a server runs them itself)."""
    import time

    with opened(config) as archive:
        archive.jobs.requeue_stale()
        archive.deletion.sweep()
        while True:
            ran = archive.jobs.run_next()
            if ran is not None:
                click.echo(describe(ran))
                continue
            if until_empty:
                return
            time.sleep(1.0)
