"""Operator commands beyond ``serve``: the DIMSE SCU commands and bulk import.

Each module holds click commands that ``cli.py`` registers with ``main.add_command``; they parse
options, call ``dimse.scu`` or the services, and print. Heavy modules are imported inside the
commands, so ``vesalius --help`` stays fast. The options shared with ``serve`` are declared here
too (``cli.py`` imports these modules, so they cannot import it back).
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from vesalius.identity import Identity
from vesalius.settings import Settings, load_settings

config_option = click.option(
    "--config",
    "-c",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="VESALIUS_CONFIG",
    help="TOML settings file (see docs/configuration.md).",
)


def settings_from(config: Path | None, **overrides: object) -> Settings:
    """Settings from the file, the environment and the given (non-None) overrides; a
    :class:`~vesalius.errors.ConfigError` listing every problem ends the command (``fatal.py``)."""
    return load_settings(config, overrides={k: v for k, v in overrides.items() if v is not None})


def operator() -> Identity:
    """The person at the terminal, as the audit trail names them: an administrator, since
    whoever can run the command can read the index and the files themselves."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "operator"
    return Identity("user", name, "localhost", roles=frozenset({"admin"}), method="local")
