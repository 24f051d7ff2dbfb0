"""``vesalius label`` and ``vesalius peer``: per-study access labels, their grants and ingest
rules, and the known remote AEs with their permissions (docs/security.md, "Remote AEs" and
"Per-study access labels").

They work on the index of the settings, as the operator (an administrator), and may run while
the server does: a running server applies a change within ``labels.cache_seconds``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vesalius.commands import config_option, operator
from vesalius.commands.jobs import opened

if TYPE_CHECKING:
    from vesalius.services.labels import Grant


def _grant(label: str, user: str | None, group: str | None, peer: str | None) -> Grant:
    from vesalius.services.labels import Grant

    named = [(kind, name) for kind, name in (("user", user), ("group", group), ("peer", peer))]
    given = [(kind, name) for kind, name in named if name]
    if len(given) != 1:
        raise click.UsageError("name one of --user, --group or --peer")
    kind, name = given[0]
    assert name is not None
    return Grant(label, kind, name)


@click.group()
def label() -> None:
    """Per-study access labels: label studies, grant labels, label studies at ingest."""


@label.command("add")
@click.argument("study_uid")
@click.argument("labels", nargs=-1, required=True)
@config_option
def label_add(study_uid: str, labels: tuple[str, ...], config: Path | None) -> None:
    """Give a stored study one or more labels."""
    with opened(config) as archive:
        added = archive.labels.add(study_uid, labels, operator())
    click.echo(f"{added} label(s) added to study {study_uid}")


@label.command("remove")
@click.argument("study_uid")
@click.argument("labels", nargs=-1, required=True)
@config_option
def label_remove(study_uid: str, labels: tuple[str, ...], config: Path | None) -> None:
    """Take labels off a stored study."""
    with opened(config) as archive:
        removed = archive.labels.remove(study_uid, labels, operator())
    click.echo(f"{removed} label(s) removed from study {study_uid}")


@label.command("list")
@click.option("--study", "study_uid", help="Only this study's labels.")
@config_option
def label_list(study_uid: str | None, config: Path | None) -> None:
    """The labels of a study, or every label in use with its number of studies, the grants
    and the rules."""
    with opened(config) as archive:
        who = operator()
        if study_uid is not None:
            for _, name in archive.labels.of_studies(who, study_uid):
                click.echo(name)
            return
        for name, count in archive.labels.in_use(who):
            click.echo(f"label {name}: {count} study(ies)")
        for grant in archive.labels.grants(who):
            click.echo(f"grant {grant.label} to {grant.kind} {grant.grantee}")
        for rule in archive.labels.rules(who):
            click.echo(f"rule {rule.pk}: {rule.keyword} = {rule.pattern} -> {rule.label}")


def _with_grantee(command: Callable[..., None]) -> Callable[..., None]:
    """The --user, --group and --peer options of grant and revoke."""
    command = click.option("--peer", help="A known peer's name (vesalius peer list).")(command)
    command = click.option("--group", help="A group (of users, or an OpenID claim's).")(command)
    return click.option("--user", help="A user name.")(command)


@label.command("grant")
@click.argument("label_name", metavar="LABEL")
@_with_grantee
@config_option
def label_grant(
    label_name: str, user: str | None, group: str | None, peer: str | None, config: Path | None
) -> None:
    """Let a user, a group or a peer see the studies labeled LABEL."""
    grant = _grant(label_name, user, group, peer)
    with opened(config) as archive:
        added = archive.labels.grant(grant, operator())
    state = "granted" if added else "already granted"
    click.echo(f"{label_name} {state} to {grant.kind} {grant.grantee}")


@label.command("revoke")
@click.argument("label_name", metavar="LABEL")
@_with_grantee
@config_option
def label_revoke(
    label_name: str, user: str | None, group: str | None, peer: str | None, config: Path | None
) -> None:
    """Revoke a grant of LABEL."""
    grant = _grant(label_name, user, group, peer)
    with opened(config) as archive:
        removed = archive.labels.revoke(grant, operator())
    state = "revoked" if removed else "was not granted"
    click.echo(f"{label_name} {state} for {grant.kind} {grant.grantee}")


@label.command("rule")
@click.argument("label_name", metavar="LABEL")
@click.option(
    "--calling-ae", help="Label studies whose instances arrive from this calling AE title."
)
@click.option("--institution", help="Label studies of this Institution Name.")
@click.option(
    "--tag",
    metavar="KEYWORD=VALUE",
    help="Label studies where this DICOM keyword has this value (* and ? match any).",
)
@config_option
def label_rule(
    label_name: str,
    calling_ae: str | None,
    institution: str | None,
    tag: str | None,
    config: Path | None,
) -> None:
    """Label the study of every instance stored from now on that matches (one criterion)."""
    from vesalius.services.labels import CALLING_AE

    given: list[tuple[str, str]] = [
        (str(keyword), str(value))
        for keyword, value in (
            (CALLING_AE, calling_ae),
            ("InstitutionName", institution),
            *([tuple(tag.split("=", 1))] if tag and "=" in tag else []),
        )
        if value
    ]
    if tag and "=" not in tag:
        raise click.UsageError("--tag takes KEYWORD=VALUE, e.g. --tag StationName=CT1")
    if len(given) != 1:
        raise click.UsageError("name one of --calling-ae, --institution or --tag")
    keyword, pattern = given[0]
    with opened(config) as archive:
        pk = archive.labels.add_rule(label_name, keyword.strip(), pattern, operator())
    click.echo(f"rule {pk}: {keyword} = {pattern} -> {label_name}")


@label.command("unrule")
@click.argument("rule", type=int)
@config_option
def label_unrule(rule: int, config: Path | None) -> None:
    """Remove the ingest rule numbered RULE (vesalius label list)."""
    with opened(config) as archive:
        removed = archive.labels.remove_rule(rule, operator())
    if not removed:
        raise click.ClickException(f"no rule {rule}")
    click.echo(f"rule {rule} removed")


@click.group()
def peer() -> None:
    """Known remote AEs: their address, what they may do, where they may call from."""


@peer.command("list")
@config_option
def peer_list(config: Path | None) -> None:
    """Every known peer: name, AE@HOST:PORT, permissions, where it is configured."""
    with opened(config) as archive:
        for known in archive.peers.all():
            permissions = ",".join(sorted(known.permissions)) or "-"
            web = f" {known.dicomweb_url}" if known.dicomweb_url else ""
            click.echo(
                f"{known.name} {known.ae_title}@{known.host}:{known.port} {permissions}{web} "
                f"({known.source})"
            )


@peer.command("set")
@click.argument("name")
@click.argument("address", required=False, metavar="[AET@HOST:PORT]")
@click.option(
    "--permissions",
    help="Comma list of echo, store, find, move, get, commitment, worklist, or all.",
)
@click.option("--host", help="The host it calls from and is called at.")
@click.option(
    "--dicomweb-url",
    help="Its DICOMweb base URL (PS3.18), for sends over STOW-RS; an empty value removes it.",
)
@config_option
def peer_set(
    name: str,
    address: str | None,
    permissions: str | None,
    host: str | None,
    dicomweb_url: str | None,
    config: Path | None,
) -> None:
    """Add the peer NAME (give its AET@HOST:PORT) or change one."""
    from vesalius.settings import parse_permissions

    with opened(config) as archive:
        wanted = parse_permissions(permissions) if permissions is not None else None
        changed = archive.peers.configure(
            name,
            operator(),
            address=address,
            permissions=wanted,
            host=host,
            dicomweb_url=dicomweb_url,
        )
    shown = ",".join(sorted(changed.permissions)) or "-"
    web = f" {changed.dicomweb_url}" if changed.dicomweb_url else ""
    click.echo(f"{changed.name} {changed.ae_title}@{changed.host}:{changed.port} {shown}{web}")


@peer.command("remove")
@click.argument("name")
@config_option
def peer_remove(name: str, config: Path | None) -> None:
    """Remove a peer added with vesalius peer set."""
    with opened(config) as archive:
        removed = archive.peers.drop(name, operator())
    if not removed:
        raise click.ClickException(f"no peer named {name!r}")
    click.echo(f"peer {name} removed")
