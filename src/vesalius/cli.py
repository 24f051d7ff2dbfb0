"""The ``vesalius`` command: a thin shell over the server and the services."""

from __future__ import annotations

from pathlib import Path

import click

from vesalius import __version__
from vesalius.commands import access as access_commands
from vesalius.commands import accounts as account_commands
from vesalius.commands import anonymize as anonymize_commands
from vesalius.commands import audit as audit_commands
from vesalius.commands import backup as backup_commands
from vesalius.commands import certs as cert_commands
from vesalius.commands import config_option, settings_from
from vesalius.commands import frontend as frontend_commands
from vesalius.commands import importer as importer_commands
from vesalius.commands import jobs as job_commands
from vesalius.commands import scu as scu_commands
from vesalius.commands import service as service_commands
from vesalius.commands import viewer as viewer_commands
from vesalius.fatal import MainGroup


@click.group(cls=MainGroup)
@click.version_option(__version__, prog_name="vesalius")
@click.option(
    "--debug",
    is_flag=True,
    envvar="VESALIUS_DEBUG",
    help="Show the traceback of an error (also VESALIUS_DEBUG=1).",
)
def main(debug: bool) -> None:
    """Vesalius, an open PACS: DICOM archive over DIMSE and DICOMweb.

    An error ends a command with one line on stderr and an exit status of its kind
    (docs/operations.md, "Start-up errors and exit statuses")."""


@main.command()
@config_option
@click.option("--data-dir", help="Override data_dir.")
@click.option("--port", "dicom_port", type=int, help="Override dicom.port.")
@click.option("--http-port", type=int, help="Override http.port.")
def serve(
    config: Path | None, data_dir: str | None, dicom_port: int | None, http_port: int | None
) -> None:
    """Start the PACS (DIMSE and HTTP) on the configured ports."""
    from vesalius.reload import SettingsSource
    from vesalius.server import serve as run

    overrides = {"data_dir": data_dir, "dicom.port": dicom_port, "http.port": http_port}
    settings = settings_from(config, **overrides)
    given = {k: v for k, v in overrides.items() if v is not None}
    run(settings, SettingsSource(config, given))


main.add_command(scu_commands.echo)
main.add_command(scu_commands.send)
main.add_command(scu_commands.find)
main.add_command(scu_commands.move)
main.add_command(scu_commands.get)
main.add_command(importer_commands.import_command)
main.add_command(viewer_commands.viewer)
main.add_command(frontend_commands.ui)
main.add_command(job_commands.delete)
main.add_command(job_commands.jobs)
main.add_command(backup_commands.backup)
main.add_command(backup_commands.restore)
main.add_command(service_commands.service)
main.add_command(anonymize_commands.anonymize)
main.add_command(account_commands.user)
main.add_command(account_commands.token)
main.add_command(audit_commands.audit)
main.add_command(cert_commands.cert)
main.add_command(access_commands.label)
main.add_command(access_commands.peer)


if __name__ == "__main__":  # pragma: no cover
    main()
