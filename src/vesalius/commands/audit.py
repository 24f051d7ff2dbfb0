"""``vesalius audit``: who accessed which patient's data, when, from where and how; and
``vesalius audit verify``, which checks the audit trail's hash chain (docs/security.md,
"Audit trail"). Both open the archive of the settings, say which, and may run while the
server does; reading the trail is itself audited (PS3.15 A.5.3.2 Audit Log Used).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vesalius.commands import config_option, operator, settings_from

if TYPE_CHECKING:
    from vesalius.services.audit_trail import AuditRecord

COLUMNS = ("time", "event", "outcome", "who", "from", "how", "patients", "studies")


def _since(value: str) -> str:
    """``--since`` as the trail's times are written (ISO 8601 in UTC); a date or a time
    without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _how(record: AuditRecord) -> str:
    """The operation or protocol of a record, as far as its details say."""
    details = record.details
    how = str(details.get("operation") or "")
    if not how and record.kind == "query":
        how = f"query {details.get('level', '')}".strip()
    method = str(details.get("method") or "")
    parts = [p for p in (record.message or record.kind, how) if p]
    if method and method not in ("none",):
        parts.append(f"({method})")
    return " ".join(parts)


def _row(pk: int, record: AuditRecord) -> dict[str, object]:
    return {
        "id": pk,
        "time": record.time,
        "event": record.kind,
        "message": record.message,
        "outcome": record.outcome,
        "who": record.who,
        "from": record.host,
        "how": _how(record),
        "patients": list(record.patients),
        "studies": list(record.studies),
    }


@click.group(invoke_without_command=True)
@config_option
@click.option("--data-dir", help="Override data_dir.")
@click.option("--patient", default="", help="Records naming this Patient ID.")
@click.option("--study", default="", help="Records naming this Study Instance UID.")
@click.option("--user", default="", help="Records of this user name or AE title.")
@click.option("--since", default="", help="Records from this time on (ISO 8601; UTC if no zone).")
@click.option("--limit", default=1000, show_default=True, help="At most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@click.pass_context
def audit(
    ctx: click.Context,
    config: Path | None,
    data_dir: str | None,
    patient: str,
    study: str,
    user: str,
    since: str,
    limit: int,
    as_json: bool,
) -> None:
    """List the audit trail: who accessed which patient's data, when, from where, how."""
    ctx.obj = (config, data_dir)
    if ctx.invoked_subcommand is not None:
        return
    from vesalius.services.audit_trail import AuditFilter
    from vesalius.startup import open_local

    wanted = AuditFilter(patient, study, user, _since(since) if since else "", limit)
    archive = open_local(settings_from(config, data_dir=data_dir), create=None).archive
    try:
        found = archive.audit.records(operator(), wanted)
    finally:
        archive.close()
    rows = [_row(pk, record) for pk, record in found]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        click.echo("no audit records match", err=True)
        return
    _table(rows)


def _table(rows: list[dict[str, object]]) -> None:
    cells = [
        [
            ", ".join(map(str, v)) if isinstance(v, list) else str(v)
            for v in (row[c] for c in COLUMNS)
        ]
        for row in rows
    ]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    widths = [min(w, 60) for w in widths]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@audit.command()
@config_option
@click.option("--data-dir", help="Override data_dir.")
@click.pass_context
def verify(ctx: click.Context, config: Path | None, data_dir: str | None) -> None:
    """Check the audit trail's hash chain; exit 1 at the first broken record."""
    from vesalius.startup import open_local

    parent_config, parent_data_dir = ctx.obj or (None, None)
    settings = settings_from(config or parent_config, data_dir=data_dir or parent_data_dir)
    archive = open_local(settings, create=None).archive
    try:
        result = archive.audit.verify(operator())
    finally:
        archive.close()
    if result.intact:
        click.echo(f"audit trail intact: {result.checked} record(s) checked")
        return
    click.echo(
        f"audit trail broken at record {result.broken_pk}: {result.problem} "
        f"({result.checked} record(s) before it are intact)",
        err=True,
    )
    sys.exit(1)
