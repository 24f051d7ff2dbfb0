"""``vesalius service install|uninstall``: run Vesalius as a hardened systemd service.

``install`` writes a unit (``systemd.service(5)``, ``systemd.exec(5)``) that runs this
virtualenv's ``vesalius serve`` as a dedicated system user, with its output in the journal and
the sandboxing options of ``systemd.exec(5)``; as root it also creates the user, the data folder
and a default settings file where they are missing. ``--root`` writes everything under another
root (an image being built, the tests); ``--print`` only prints the unit.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from vesalius.errors import VesaliusError
from vesalius.settings import load_settings

UNIT_DIR = Path("/etc/systemd/system")
CONFIG = Path("/etc/vesalius/vesalius.toml")
DATA_DIR = Path("/var/lib/vesalius")
USER = "vesalius"
NAME = "vesalius"
#: Seconds systemd waits past the shutdown grace period before it kills what is left.
STOP_MARGIN = 20.0
DEFAULT_GRACE = 10.0
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))


@dataclass(frozen=True)
class Unit:
    """What the unit file says."""

    executable: Path
    config: Path
    data_dir: Path
    user: str
    grace: float = DEFAULT_GRACE
    low_port: bool = False
    postgres: bool = False
    #: Folders it writes besides the data folder (a SQLite index, log or audit file elsewhere).
    also_writes: tuple[Path, ...] = ()

    def render(self) -> str:
        """The unit file's text."""
        in_home = any(
            p == home or home in p.parents
            for p in (self.executable, self.config, self.data_dir, *self.also_writes)
            for home in HOMES
        )
        after = "network-online.target" + (" postgresql.service" if self.postgres else "")
        capabilities = "CAP_NET_BIND_SERVICE" if self.low_port else ""
        lines = [
            "# Written by `vesalius service install`; see docs/operations.md.",
            "[Unit]",
            "Description=Vesalius PACS (DICOM archive over DIMSE and DICOMweb)",
            f"After={after}",
            "Wants=network-online.target",
            "",
            "[Service]",
            # serve sends READY=1 once both ports listen (vesalius/systemd.py)
            "Type=notify",
            f"User={self.user}",
            f"Group={self.user}",
            f"ExecStart={_quote(self.executable)} serve --config {_quote(self.config)}",
            "ExecReload=/bin/kill -HUP $MAINPID",
            f"WorkingDirectory={_quote(self.data_dir)}",
            # SIGTERM to the main process, which drains and stops its workers itself
            "KillSignal=SIGTERM",
            "KillMode=mixed",
            f"TimeoutStopSec={_seconds(self.grace + STOP_MARGIN)}",
            "Restart=on-failure",
            "RestartSec=5",
            # a start-up error only a person can fix (errors.py: schema, settings file, data
            # folder, permission, configuration) is not retried; database or port busy is
            "RestartPreventExitStatus=65 66 73 77 78",
            "StandardOutput=journal",
            "StandardError=journal",
            "SyslogIdentifier=vesalius",
            "LimitNOFILE=65536",
            "UMask=0027",
            "# sandboxing (systemd.exec(5)); `systemd-analyze security vesalius` rates it",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=" + " ".join(_quote(p) for p in (self.data_dir, *self.also_writes)),
            f"ProtectHome={'read-only' if in_home else 'yes'}",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "ProtectClock=yes",
            "ProtectHostname=yes",
            "ProtectProc=invisible",
            "PrivateMounts=yes",
            "RemoveIPC=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "RestrictNamespaces=yes",
            "RestrictRealtime=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallArchitectures=native",
            "SystemCallFilter=@system-service",
            "SystemCallFilter=~@privileged",
            "SystemCallErrorNumber=EPERM",
            f"CapabilityBoundingSet={capabilities}",
        ]
        if self.low_port:  # a port below 1024 and nothing else of root's
            lines.append("AmbientCapabilities=CAP_NET_BIND_SERVICE")
        lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
        return "\n".join(lines)


def _quote(path: Path) -> str:
    text = str(path)
    return text if shlex.quote(text) == text else '"' + text.replace('"', '\\"') + '"'


def _seconds(value: float) -> str:
    return f"{value:g}s"


def default_config(data_dir: Path) -> str:
    """The settings file written when there is none (docs/configuration.md lists the rest)."""
    return (
        "# Vesalius settings: docs/configuration.md lists them all.\n"
        "# Written by `vesalius service install`; restart the service after a change.\n"
        f'data_dir = "{data_dir}"\n'
        "\n"
        "[dicom]\n"
        'ae_title = "VESALIUS"\n'
        "port = 11112\n"
        "\n"
        "[http]\n"
        "# behind a reverse proxy; 0.0.0.0 to serve other hosts directly\n"
        'host = "127.0.0.1"\n'
        "port = 8080\n"
    )


def executable() -> Path:
    """This virtualenv's ``vesalius`` (absolute, symlinks kept: the venv's own path)."""
    beside = Path(sys.executable).absolute().parent / "vesalius"
    if beside.is_file():
        return beside
    found = shutil.which("vesalius")
    if found is None:
        raise click.ClickException("cannot find the vesalius executable of this installation")
    return Path(found).absolute()


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to(path.anchor)


def _passwd_entry(root: Path, user: str) -> tuple[int, int] | None:
    """(uid, gid) of ``user`` in ``root``'s /etc/passwd, if there."""
    try:
        lines = (root / "etc" / "passwd").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    return None


def _create_user(root: Path, user: str, home: Path) -> str:
    command = ["useradd", "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", str(home), "--shell", "/usr/sbin/nologin"]
    if root != Path("/"):
        command += ["--prefix", str(root)]
    try:
        run = subprocess.run([*command, user], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise click.ClickException(
            f"useradd not found: create the system user {user} yourself, then install again"
        ) from None
    if run.returncode != 0:
        message = run.stderr.strip().splitlines()
        raise click.ClickException(
            f"cannot create the user {user}: {message[-1] if message else run.returncode}"
        )
    return f"created the system user {user}"


def unit_for(config: Path, data_dir: Path | None, user: str, settings_file: Path | None) -> Unit:
    """The unit for these paths, reading the data folder, ports, grace period and database
    from ``settings_file`` when it exists (the defaults otherwise)."""
    try:
        settings = (  # relative paths in it: against where the file will be (config)
            load_settings(settings_file, environ={}, file_dir=config.parent)
            if settings_file
            else None
        )
    except VesaliusError as exc:
        raise click.ClickException(exc.message) from exc
    if settings is None:
        return Unit(executable(), config, data_dir or DATA_DIR, user)
    configured = Path(settings["data_dir"])
    if not configured.is_absolute():  # relative to the settings file that names it
        configured = Path(os.path.normpath(config.parent / configured))
    if data_dir is not None and data_dir != configured:
        raise click.ClickException(
            f"--data-dir {data_dir} is not the data_dir of {config} ({configured}): "
            "change one of them"
        )
    url = str(settings["database_url"])
    files = [str(settings.values.get(key, "")) for key in ("log.file", "audit.file")]
    if url.startswith("sqlite:///"):
        files.append(url.removeprefix("sqlite:///"))
    also: list[Path] = []
    for name in files:  # absolute paths outside the data folder: their folders
        folder = Path(name).parent
        outside = configured not in (folder, *folder.parents)
        if name not in ("", "-") and folder.is_absolute() and outside and folder not in also:
            also.append(folder)
    return Unit(
        executable(),
        config,
        configured,
        user,
        grace=float(settings.values.get("shutdown_grace", DEFAULT_GRACE)),
        low_port=any(0 < int(settings[k]) < 1024 for k in ("dicom.port", "http.port")),
        postgres=url.startswith("postgres"),
        also_writes=tuple(also),
    )


@click.group()
def service() -> None:
    """Install Vesalius as a systemd service, or remove it."""


_root_option = click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Write every file under this folder (an image being built; tests).",
)
_unit_dir_option = click.option(
    "--unit-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=UNIT_DIR,
    show_default=True,
    help="Folder of the unit file.",
)


@service.command()
@click.option("--user", default=USER, show_default=True, help="System user the service runs as.")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=CONFIG,
    show_default=True,
    help="Settings file the service reads (written with defaults if missing).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The data folder, the only one the service may write (default: the settings' "
    f"data_dir, else {DATA_DIR}).",
)
@_unit_dir_option
@_root_option
@click.option("--print", "print_only", is_flag=True, help="Print the unit; write nothing.")
def install(
    user: str,
    config: Path,
    data_dir: Path | None,
    unit_dir: Path,
    root: Path,
    print_only: bool,
) -> None:
    """Write the systemd unit; as root, also create the user, data folder and settings."""
    config, unit_dir, root = config.absolute(), unit_dir.absolute(), root.absolute()
    existing = _under(root, config)
    unit = unit_for(
        config,
        data_dir.absolute() if data_dir is not None else None,
        user,
        existing if existing.is_file() else None,
    )
    data_dir = unit.data_dir
    text = unit.render()
    if print_only:
        click.echo(text, nl=False)
        return
    as_root = os.geteuid() == 0
    try:
        done = _put_files(root, user, config, data_dir, unit_dir / f"{NAME}.service", text)
    except OSError as exc:
        where = exc.filename or root
        raise click.ClickException(
            f"cannot write {where}: {exc.strerror} (run as root, or --print the unit)"
        ) from exc
    for line in done:
        click.echo(line)
    if not as_root:
        click.echo(f"not root: check that the user {user} exists and owns {data_dir}")
    click.echo("next:")
    click.echo("  systemctl daemon-reload")
    click.echo(f"  systemctl enable --now {NAME}")
    click.echo(f"  journalctl -u {NAME} -f")


def _put_files(
    root: Path, user: str, config: Path, data_dir: Path, unit: Path, text: str
) -> list[str]:
    """Create what is missing under ``root`` (as root: the user, owners); what was done."""
    done: list[str] = []
    as_root = os.geteuid() == 0
    if as_root and _passwd_entry(root, user) is None:
        done.append(_create_user(root, user, data_dir))
    owner = _passwd_entry(root, user) if as_root else None
    folder = _under(root, data_dir)
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=0o750)
        done.append(f"created {data_dir}")
    if owner is not None:
        os.chown(folder, *owner)
    existing = _under(root, config)
    if not existing.is_file():
        existing.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        existing.write_text(default_config(data_dir))
        existing.chmod(0o640)
        if owner is not None:  # root owns it, the service's group may read it
            os.chown(existing.parent, 0, owner[1])
            os.chown(existing, 0, owner[1])
        done.append(f"wrote default settings to {config}")
    path = _under(root, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    done.append(f"wrote {unit}")
    return done


@service.command()
@_unit_dir_option
@_root_option
def uninstall(unit_dir: Path, root: Path) -> None:
    """Remove the unit (the user, settings and data stay)."""
    path = _under(root.absolute(), unit_dir.absolute() / f"{NAME}.service")
    if not path.exists():
        raise click.ClickException(f"no unit at {path}")
    click.echo(f"first, if it runs: systemctl disable --now {NAME}")
    path.unlink()
    click.echo(f"removed {unit_dir / f'{NAME}.service'}; then: systemctl daemon-reload")
    click.echo("the user, the settings and the data folder are kept")
