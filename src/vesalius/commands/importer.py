"""``vesalius import``: bulk import of files, folders and zip archives into the local archive.

It opens the same archive as ``serve`` (``data_dir``, ``database_url``) and may run while the
server does (SQLite runs in WAL mode). Exit status: 0 when everything DICOM was imported (files
that are not DICOM, and DICOMDIRs, are skipped quietly), 1 when any DICOM data was not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vesalius.commands import config_option, operator, settings_from

MAX_LISTED = 50


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@config_option
@click.option("--data-dir", help="Override data_dir.")
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Files ingested in parallel.",
)
def import_command(
    paths: tuple[Path, ...], config: Path | None, data_dir: str | None, workers: int
) -> None:
    """Import DICOM files, folders (recursively) and zip archives (*.zip) into the archive."""
    from tqdm import tqdm

    from vesalius.services.importer import Importer, ImportItem, count_sources
    from vesalius.startup import open_local

    # A new archive is made with a warning (startup.py); start-up errors end the command with
    # their own exit status (fatal.py).
    archive = open_local(settings_from(config, data_dir=data_dir), create="warn").archive
    try:
        importer = Importer(archive.ingest, operator())
        total = count_sources(paths)
        with tqdm(
            total=total, desc="import", unit="file", file=sys.stderr, dynamic_ncols=True
        ) as bar:
            failed = [0]

            def on_item(item: ImportItem) -> None:
                bar.update(1)
                if item.failed:
                    failed[0] += 1
                    bar.set_postfix(failed=failed[0], refresh=False)

            report = importer.run(paths, workers=workers, on_item=on_item)
    finally:
        archive.close()

    click.echo(f"imported: {report.outcomes['created']}")
    click.echo(f"replaced: {report.outcomes['replaced']}")
    if report.outcomes["kept"]:
        click.echo(f"already stored (kept): {report.outcomes['kept']}")
    if report.outcomes["discarded"]:
        click.echo(
            f"stored already with other content (stored copy kept): {report.outcomes['discarded']}"
        )
    click.echo(f"skipped: {report.outcomes['skipped']}")
    for reason, count in sorted(report.skipped.items()):
        click.echo(f"  {reason}: {count}")
    if report.failed_sources:
        click.echo("not imported:")
        for source, reason in report.failed_sources[:MAX_LISTED]:
            click.echo(f"  {source}: {reason}")
        if len(report.failed_sources) > MAX_LISTED:
            click.echo(f"  … and {len(report.failed_sources) - MAX_LISTED} more")
    if report.failed:
        sys.exit(1)
