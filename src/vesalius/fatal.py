"""How the ``vesalius`` command ends on an error: one line a person can act on, the exit status
of the error's kind (``errors.py``, sysexits(3)), and a traceback only with ``--debug``.

:class:`MainGroup` is the top click group; every command runs inside its :meth:`invoke`, so no
command needs its own handler for start-up errors."""

from __future__ import annotations

import traceback
from typing import IO, Any

import click

from vesalius.errors import BUG_EXIT_STATUS, ConfigError, VesaliusError


class Fatal(click.ClickException):
    """An error that ends the command: its lines go to stderr, then it exits ``status``."""

    def __init__(self, lines: tuple[str, ...], status: int) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.exit_code = status  # type: ignore[misc]  # click reads it per instance

    def show(self, file: IO[Any] | None = None) -> None:
        for line in self.lines:
            click.echo(f"vesalius: error: {line}", err=True)


def fatal(exc: BaseException, debug: bool) -> Fatal:
    """The :class:`Fatal` for ``exc`` (after printing its traceback when ``debug``)."""
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, ConfigError):
        return Fatal(exc.problems, exc.exit_status)
    if isinstance(exc, VesaliusError):
        return Fatal((exc.message,), exc.exit_status)
    hint = "" if debug else "; run again with --debug for the traceback"
    return Fatal(
        (
            f"unexpected {type(exc).__name__}: {exc} — this is a bug in Vesalius, please "
            f"report it{hint}",
        ),
        BUG_EXIT_STATUS,
    )


class MainGroup(click.Group):
    """The ``vesalius`` group: turns what its commands raise into :class:`Fatal`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            raise fatal(exc, bool(ctx.params.get("debug"))) from exc
