"""``vesalius anonymize``: de-identify a stored study (PS3.15 Annex E) into a new study in the
archive (prints its Study Instance UID), or export it to a folder (``--output``) or a zip file
(``--zip``); ``--reidentify`` reads the pseudonym map back (administrators).

Instances that may show text in their pixels are listed for review and left out unless
``--include-burned-in`` (docs/security.md, "De-identification"); the list goes to stderr, the
new Study Instance UID alone to stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vesalius.commands import config_option, operator, settings_from

F = TypeVar("F", bound=Callable[..., Any])

#: Flags and the option (``dicom.deid.Options`` field) each chooses.
OPTION_FLAGS = {
    "retain_uids": "Keep the UIDs (Retain UIDs Option; export only).",
    "retain_device": "Keep device identity (Retain Device Identity Option).",
    "retain_institution": "Keep institution identity (Retain Institution Identity Option).",
    "retain_patient_characteristics": "Keep age, sex, size, weight... (Retain Patient "
    "Characteristics Option).",
    "retain_dates": "Keep dates and times (Retain Longitudinal Temporal Information, Full "
    "Dates Option).",
    "modify_dates": "Shift dates by a per-patient offset (Retain Longitudinal Temporal "
    "Information, Modified Dates Option).",
    "clean_descriptors": "Keep descriptions, cleaned of identifying values (Clean "
    "Descriptors Option).",
    "clean_structured_content": "Keep structured content, cleaned (Clean Structured Content "
    "Option).",
    "clean_graphics": "Keep graphics, cleaned (Clean Graphics Option).",
    "retain_safe_private": "Keep the private attributes PS3.15 Table E.3.10-1 calls safe, "
    "with their Private Creators (Retain Safe Private Option).",
}


def _option_flags(function: F) -> F:
    for name, text in reversed(OPTION_FLAGS.items()):
        flag = click.option(f"--{name.replace('_', '-')}", name, is_flag=True, help=text)
        function = flag(function)
    return function


@click.command("anonymize")
@click.argument("study_uid", required=False)
@config_option
@click.option("--data-dir", help="Override data_dir.")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export to this folder (new files only) instead of a new study in the archive.",
)
@click.option(
    "--zip",
    "zip_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Export to this new zip file instead.",
)
@click.option(
    "--include-burned-in",
    is_flag=True,
    help="Write instances flagged for burned-in annotation too (still listed for review).",
)
@click.option(
    "--reidentify",
    metavar="PSEUDONYM",
    help="Show the patient and study a pseudonym or new Study UID stands for (admin).",
)
@_option_flags
def anonymize(
    study_uid: str | None,
    config: Path | None,
    data_dir: str | None,
    output: Path | None,
    zip_file: Path | None,
    include_burned_in: bool,
    reidentify: str | None,
    **flags: bool,
) -> None:
    """De-identify study STUDY_UID (PS3.15 Annex E Basic Profile and the options chosen) into
    a new study in the archive, printing its Study Instance UID; or export it."""
    from tqdm import tqdm

    from vesalius.dicom.deid import Options
    from vesalius.startup import open_local

    if reidentify is None and not study_uid:
        raise click.UsageError("give a STUDY_UID (or --reidentify PSEUDONYM)")
    if output is not None and zip_file is not None:
        raise click.UsageError("--output and --zip exclude each other")
    if flags["retain_dates"] and flags["modify_dates"]:
        raise click.UsageError("--retain-dates and --modify-dates exclude each other")
    chosen = dict(flags)
    chosen["retain_full_dates"] = chosen.pop("retain_dates")
    options = Options(**chosen)

    archive = open_local(settings_from(config, data_dir=data_dir), create=None).archive
    try:
        service = archive.anonymize
        assert service is not None  # the wiring always builds it
        if reidentify is not None:
            rows = service.reidentify(reidentify, operator())
            if not rows:
                raise click.ClickException(f"no pseudonym or new study {reidentify}")
            for row in rows:
                click.echo(
                    f"{row.pseudonym}\t{row.patient_id}\t{row.patient_name}\t"
                    f"{row.study_uid} -> {row.new_study_uid}\t{row.created_by}\t"
                    f"{row.created_at:%Y-%m-%dT%H:%M:%S}"
                )
            return
        assert study_uid is not None
        with tqdm(desc="anonymize", unit="instance", file=sys.stderr, dynamic_ncols=True) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            result = service.anonymize(
                study_uid,
                operator(),
                options,
                output=output,
                zip_file=zip_file,
                include_burned_in=include_burned_in,
                progress=progress,
            )
    finally:
        archive.close()

    for flagged in result.flagged:
        what = "included, review it" if flagged.included else "left out"
        click.echo(f"review: {flagged.sop_instance_uid}: {flagged.reason} ({what})", err=True)
    if result.discarded:
        click.echo(
            f"warning: {result.discarded} instance(s) of this study were stored before with "
            "other content (other options?); the stored copies are kept "
            "(ingest.duplicate_policy): delete the new study first to remake it",
            err=True,
        )
    if result.destination == "archive":
        click.echo(result.new_study_uid)
    else:
        where = zip_file if zip_file is not None else output
        click.echo(f"exported {result.written} instance(s) of {result.new_study_uid} to {where}")
    if result.excluded:
        click.echo(
            f"{result.excluded} instance(s) left out for burned-in annotation review "
            "(--include-burned-in writes them)",
            err=True,
        )
