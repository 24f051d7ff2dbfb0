"""``vesalius user`` and ``vesalius token``: the users of the HTTP side and their API tokens
(docs/security.md, "Users, roles, sessions and tokens"). The first administrator is made with
``vesalius user add NAME --role admin``, which may create the archive (with a warning); the
other commands work on an existing one. Passwords come from a prompt (asked twice) or, with
``--password-stdin``, from the first line of standard input; they never appear in arguments.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from vesalius.commands import config_option, operator
from vesalius.commands.jobs import opened

data_dir_option = click.option("--data-dir", help="Override data_dir.")
ROLE_CHOICE = click.Choice(["admin", "radiologist", "technologist", "researcher", "auditor"])


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


@click.group()
def user() -> None:
    """Users of the HTTP side: add, list, disable, enable, reset a password."""


@user.command()
@click.argument("name")
@click.option(
    "--role", "roles", multiple=True, required=True, type=ROLE_CHOICE, help="A role (repeatable)."
)
@click.option("--group", "groups", multiple=True, help="A group the user belongs to (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@config_option
@data_dir_option
def add(
    name: str,
    roles: tuple[str, ...],
    groups: tuple[str, ...],
    password_stdin: bool,
    config: Path | None,
    data_dir: str | None,
) -> None:
    """Add a user with a password and roles (the first admin is made this way)."""
    password = _password(password_stdin)
    with opened(config, data_dir, create="warn") as archive:
        added = archive.accounts.add_user(
            name, password, frozenset(roles), operator(), frozenset(groups)
        )
    click.echo(f"user {added.name} added: roles {', '.join(sorted(added.roles))}")


@user.command("list")
@config_option
@data_dir_option
def list_users(config: Path | None, data_dir: str | None) -> None:
    """Every user: name, roles, groups, state."""
    with opened(config, data_dir) as archive:
        for found in archive.accounts.users(operator()):
            state = "disabled" if found.disabled else "enabled"
            if found.locked_until and found.locked_until > datetime.now(found.locked_until.tzinfo):
                state += f", locked until {_when(found.locked_until)}"
            groups = f" groups {','.join(sorted(found.groups))}" if found.groups else ""
            click.echo(f"{found.name} roles {','.join(sorted(found.roles))}{groups} {state}")


@user.command()
@click.argument("name")
@config_option
@data_dir_option
def disable(name: str, config: Path | None, data_dir: str | None) -> None:
    """Disable a user: their sessions end and their tokens are refused."""
    with opened(config, data_dir) as archive:
        archive.accounts.set_disabled(name, True, operator())
    click.echo(f"user {name} disabled")


@user.command()
@click.argument("name")
@config_option
@data_dir_option
def enable(name: str, config: Path | None, data_dir: str | None) -> None:
    """Enable a disabled user again (and lift a lock after failed logins)."""
    with opened(config, data_dir) as archive:
        archive.accounts.set_disabled(name, False, operator())
    click.echo(f"user {name} enabled")


@user.command()
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@config_option
@data_dir_option
def reset(name: str, password_stdin: bool, config: Path | None, data_dir: str | None) -> None:
    """Set a new password (the user's sessions end, a lock is lifted)."""
    password = _password(password_stdin)
    with opened(config, data_dir) as archive:
        archive.accounts.reset_password(name, password, operator())
    click.echo(f"user {name}: password reset")


@click.group()
def token() -> None:
    """API tokens for scripts (Authorization: Bearer TOKEN): create, list, revoke."""


@token.command()
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=ROLE_CHOICE,
    help="Limit the token to this role of the user (repeatable; default: all of them).",
)
@click.option(
    "--expires",
    "days",
    type=click.FloatRange(min=0, min_open=True),
    help="Days until the token expires (default: never).",
)
@config_option
@data_dir_option
def create(
    name: str,
    scopes: tuple[str, ...],
    days: float | None,
    config: Path | None,
    data_dir: str | None,
) -> None:
    """Create a token for user NAME and print it (shown only this once)."""
    with opened(config, data_dir) as archive:
        made, text = archive.accounts.create_token(name, operator(), frozenset(scopes), days)
    expires = f", expires {_when(made.expires_at)}" if made.expires_at else ""
    click.echo(f"token {made.token_id} for {made.user}{expires} (shown only now):", err=True)
    click.echo(text)


@token.command("list")
@click.option("--user", "user_name", default="", help="Only this user's tokens.")
@config_option
@data_dir_option
def list_tokens(user_name: str, config: Path | None, data_dir: str | None) -> None:
    """Every token: id, user, scopes, created, expiry, last use, revoked."""
    with opened(config, data_dir) as archive:
        for found in archive.accounts.tokens(operator(), user_name):
            scopes = ",".join(sorted(found.scopes)) or "all"
            state = f"revoked {_when(found.revoked_at)}" if found.revoked_at else "active"
            click.echo(
                f"{found.token_id} {found.user} scopes {scopes} created {_when(found.created_at)}"
                f" expires {_when(found.expires_at)} used {_when(found.last_used_at)} {state}"
            )


@token.command()
@click.argument("token_id")
@config_option
@data_dir_option
def revoke(token_id: str, config: Path | None, data_dir: str | None) -> None:
    """Revoke a token by its id (the part after ``ves_``): refused from now on."""
    with opened(config, data_dir) as archive:
        archive.accounts.revoke_token(token_id, operator())
    click.echo(f"token {token_id} revoked")
