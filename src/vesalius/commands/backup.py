"""``vesalius backup FILE`` and ``vesalius restore FILE``: the index and the settings file.

A backup may be taken while the server runs (it is one consistent snapshot of the index); a
restore refuses to run while a server answers on the configured DIMSE or HTTP port (or, on
PostgreSQL, while other sessions use the database). The images are not in the backup: see
docs/operations.md, "Backup and restore".
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from vesalius.commands import config_option, settings_from
from vesalius.errors import VesaliusError
from vesalius.settings import Settings

_UNITS = {"index": ("row", 1), "archive": ("B", 1024), "verify": ("B", 1024)}


@contextlib.contextmanager
def _bars() -> Iterator[Any]:
    """A progress callback drawing one tqdm bar per phase (quiet when not on a terminal)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            unit, divisor = _UNITS.get(phase, ("", 1))
            bar = bars[phase] = tqdm(
                total=total,
                desc=phase,
                unit=unit,
                unit_scale=divisor > 1,
                unit_divisor=divisor,
                file=sys.stderr,
                disable=None,
                dynamic_ncols=True,
            )
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()


def serving(settings: Settings) -> str | None:
    """What answers on the configured DIMSE or HTTP port (a running server), if anything."""
    for name, host_key, port_key in (
        ("DIMSE", "dicom.host", "dicom.port"),
        ("HTTP", "http.host", "http.port"),
    ):
        host, port = str(settings[host_key]), int(settings[port_key])
        if port <= 0:
            continue
        probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        with contextlib.suppress(OSError), socket.create_connection((probe, port), timeout=2):
            return f"{name} port {probe}:{port}"
    return None


@click.command("backup")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@click.option("--data-dir", help="Override data_dir.")
@click.option(
    "--portable",
    is_flag=True,
    help="PostgreSQL: copy the rows into a SQLite file (restorable into SQLite or PostgreSQL) "
    "instead of pg_dump.",
)
def backup(file: Path, config: Path | None, data_dir: str | None, portable: bool) -> None:
    """Back up the index and the settings file into FILE (safe while serving).

    The images are not included: copy data_dir's storage/blobs after this command.
    """
    from vesalius.services.backup import create_backup

    settings = settings_from(config, data_dir=data_dir)
    if file.exists():
        raise click.ClickException(f"{file} exists: choose a new file name")
    if not file.parent.is_dir():
        raise click.ClickException(f"{file.parent} is not a folder")
    if config is None:
        click.echo("no settings file given (--config): backing up the index only", err=True)
    try:
        with (
            tempfile.TemporaryDirectory(prefix=".vesalius-backup-", dir=file.parent) as work,
            _bars() as progress,
        ):
            manifest = create_backup(
                file,
                database_url=settings.database_url,
                settings_file=config,
                work_dir=Path(work),
                portable=portable,
                progress=progress,
            )
    except VesaliusError as exc:
        raise click.ClickException(exc.message) from exc
    counts = manifest.counts
    click.echo(
        f"backup written to {file}: {manifest.database} index ({manifest.index_format}, schema "
        f"{manifest.schema_revision}) with {counts['studies']} studies, {counts['instances']} "
        f"instances" + (f"; settings {config}" if config is not None else "")
    )
    click.echo(
        f"the images are not in it: copy {settings.data_dir / 'storage' / 'blobs'} now "
        "(after the index, see docs/operations.md)"
    )


@click.command("restore")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@click.option("--data-dir", help="Override data_dir.")
@click.option("--force", is_flag=True, help="Replace the content of a non-empty index.")
def restore(file: Path, config: Path | None, data_dir: str | None, force: bool) -> None:
    """Restore the index (and the settings file) from a backup FILE.

    The archive restored into is the one the settings name; when --config names a file that
    does not exist, the backup's settings file is written there and used. The server must be
    stopped. Afterwards, put the images back into data_dir's storage/blobs.
    """
    from vesalius.services.backup import SETTINGS, verify
    from vesalius.services.backup import restore as restore_index

    try:
        with tempfile.TemporaryDirectory(prefix="vesalius-restore-") as work:
            folder = Path(work)
            with _bars() as progress:
                manifest = verify(file, folder, progress)
            saved = folder / SETTINGS
            write_settings = (
                config is not None and not config.exists() and SETTINGS in manifest.files
            )
            settings = settings_from(saved if write_settings else config, data_dir=data_dir)
            running = serving(settings)
            if running:
                raise click.ClickException(
                    f"a server answers on the {running}: stop it before restoring"
                )
            with _bars() as progress:
                restore_index(
                    manifest, folder, settings.database_url, force=force, progress=progress
                )
            _give_back(settings)
            if config is not None and SETTINGS in manifest.files:
                note = _put_settings(saved, config, write_settings)
                if write_settings and data_dir is not None:
                    note += f" (its data_dir is not {data_dir}: edit it, or keep --data-dir)"
            else:
                note = "settings: none in the backup" if config else "settings: not restored"
    except VesaliusError as exc:
        raise click.ClickException(exc.message) from exc
    counts = manifest.counts
    click.echo(
        f"restored {counts['studies']} studies, {counts['instances']} instances (backup of "
        f"{manifest.created}) into {settings.data_dir.resolve()}; {note}"
    )
    click.echo(
        f"now put the images back into {settings.data_dir / 'storage' / 'blobs'}, then start "
        "the server"
    )


def _give_back(settings: Settings) -> None:
    """Run as root, a restore leaves the SQLite index owned by the data folder's owner (the
    service's user), who must write it."""
    if os.geteuid() != 0 or not settings.database_url.startswith("sqlite"):
        return
    try:
        owner = settings.data_dir.stat()
    except OSError:
        return
    index = Path(settings.database_url.removeprefix("sqlite:///"))
    for path in (index, Path(f"{index}-wal"), Path(f"{index}-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, owner.st_uid, owner.st_gid)


def _put_settings(saved: Path, config: Path, new: bool) -> str:
    """Write the backed-up settings to ``config`` (new) or beside it (``.restored``)."""
    data = saved.read_bytes()
    if new:
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_bytes(data)
        return f"settings written to {config}"
    if config.read_bytes() == data:
        return f"settings {config} unchanged"
    beside = config.with_name(config.name + ".restored")
    beside.write_bytes(data)
    return f"settings {config} kept; the backed-up ones are in {beside}"
