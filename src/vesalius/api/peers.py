"""Peers (remote AEs): create, read, update, delete, and a C-ECHO test. Administrators only:
a peer's address and permissions are configuration (docs/security.md, "Remote AEs")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, SecretStr
from starlette.responses import Response

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.problems import PROBLEM_RESPONSES
from vesalius.errors import NotFoundError
from vesalius.services.peers import (
    DEFAULT_PERMISSIONS,
    PERMISSION_NAMES,
    InvalidPeerError,
    split_userinfo,
)
from vesalius.services.peers import Peer as PeerEntry

router = APIRouter()

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: PROBLEM_RESPONSES[400] | {"description": "The peer comes from the settings file"}
}


class Peer(BaseModel):
    """A known remote AE: where it is, and what it may do when it calls."""

    name: str = Field(description="The peer's name (``[modalities.NAME]``, the URL's).")
    ae_title: str = Field(description="Its AE title (PS3.5 6.2: at most 16 characters).")
    host: str = Field(description="Where it is called, and calls from.")
    port: int = Field(description="Its DIMSE port.")
    permissions: list[str] = Field(
        description="What it may do when it calls: " + ", ".join(PERMISSION_NAMES) + "."
    )
    tls: bool = Field(description="Called over TLS (PS3.15 B.9).")
    dicomweb_url: str | None = Field(description="Its DICOMweb base URL (PS3.18), if any.")
    dicomweb_auth: Literal["none", "basic", "bearer"] = Field(
        description="The login its DICOMweb service needs: none, ``basic`` (RFC 7617) or "
        "``bearer`` (RFC 6750)."
    )
    dicomweb_user: str = Field(description="The user name of a ``basic`` login.")
    dicomweb_secret_set: bool = Field(
        description="Whether a password or token is stored (it is never returned)."
    )
    source: str = Field(
        description="``admin`` (added here or by ``vesalius peer set``) or ``settings`` "
        "(the settings file's ``[modalities]``: read-only here)."
    )


class PeerIn(BaseModel):
    """A peer as ``PUT`` sets it (every field: a replace, not a patch)."""

    ae_title: str = Field(max_length=64, description="AE title, 1 to 16 characters (PS3.5 6.2).")
    host: str = Field(max_length=253, description="Host name or IP address.")
    port: int = Field(description="DIMSE port, 1 to 65535.")
    permissions: list[str] | None = Field(
        default=None,
        max_length=16,
        description="What it may do: "
        + ", ".join(PERMISSION_NAMES)
        + ", or all (default: "
        + ", ".join(sorted(DEFAULT_PERMISSIONS))
        + ").",
    )
    tls: bool = False
    dicomweb_url: str | None = Field(
        default=None,
        max_length=2000,
        description="DICOMweb base URL (http or https). A ``user:password@`` in it becomes a "
        "``basic`` login, and the URL is stored without it.",
    )
    dicomweb_auth: Literal["none", "basic", "bearer"] | None = Field(
        default=None,
        description="The login its DICOMweb service needs (STOW-RS sends): ``none``, ``basic`` "
        "(RFC 7617: ``dicomweb_user`` and the password) or ``bearer`` (RFC 6750: the token). "
        "Absent: the stored login is kept.",
    )
    dicomweb_user: str | None = Field(
        default=None, max_length=256, description="The user name of a ``basic`` login."
    )
    dicomweb_secret: SecretStr | None = Field(
        default=None,
        max_length=4096,
        description="The password (``basic``) or token (``bearer``). Write-only: never "
        "returned. Absent or empty: the stored one is kept while the login's kind stays.",
    )


class EchoAnswer(BaseModel):
    """How a C-ECHO went (PS3.7 9.1.5)."""

    ok: bool = Field(description="Whether the peer answered Success (0x0000).")
    status: int | None = Field(description="The response's status; null: no response.")
    message: str = Field(description="The status in words, or why no response came.")
    milliseconds: float = Field(description="From the connection to the response.")


def peer_model(peer: PeerEntry) -> Peer:
    return Peer(
        name=peer.name,
        ae_title=peer.ae_title,
        host=peer.host,
        port=peer.port,
        permissions=sorted(peer.permissions),
        tls=peer.tls,
        dicomweb_url=split_userinfo(peer.dicomweb_url)[0] if peer.dicomweb_url else None,
        dicomweb_auth=peer.dicomweb_login.kind or "none",  # type: ignore[arg-type]
        dicomweb_user=peer.dicomweb_login.user,
        dicomweb_secret_set=bool(peer.dicomweb_login.secret),
        source=peer.source,
    )


PeerName = Annotated[str, Path(max_length=64, description="The peer's name.")]


@router.get(
    "/peers",
    response_model=list[Peer],
    summary="List peers",
    description="Every known remote AE, by name (administrators).",
)
def list_peers(archive: ArchiveDep, who: Who) -> list[Peer]:
    return [peer_model(p) for p in archive.peers.listed(who)]


@router.get(
    "/peers/{name}",
    response_model=Peer,
    summary="Get a peer",
    description="One known remote AE (administrators).",
)
def get_peer(archive: ArchiveDep, who: Who, name: PeerName) -> Peer:
    return peer_model(archive.peers.get(name, who))


@router.put(
    "/peers/{name}",
    response_model=Peer,
    summary="Create or replace a peer",
    description="Add the peer NAME, or replace it (201 when new, 200 when replaced). Each "
    "field that breaks a rule is named in a 422 problem's ``errors``. A peer from the "
    "settings file is changed there (409).",
    responses={**_CONFLICT, 201: {"model": Peer, "description": "Created"}},
)
def put_peer(
    archive: ArchiveDep, who: Who, name: PeerName, body: PeerIn, response: Response
) -> Peer:
    try:
        peer, created = archive.peers.put(
            name,
            who,
            ae_title=body.ae_title,
            host=body.host,
            port=body.port,
            permissions=body.permissions,
            tls=body.tls,
            dicomweb_url=body.dicomweb_url,
            dicomweb_auth=body.dicomweb_auth,
            dicomweb_user=body.dicomweb_user,
            dicomweb_secret=(
                body.dicomweb_secret.get_secret_value() if body.dicomweb_secret else None
            ),
        )
    except InvalidPeerError as exc:
        raise RequestValidationError(
            [
                {
                    "loc": ("path", "name") if field == "name" else ("body", field),
                    "msg": problem,
                    "type": "value_error",
                }
                for field, problem in exc.fields.items()
            ]
        ) from None
    if created:
        response.status_code = 201
    return peer_model(peer)


@router.delete(
    "/peers/{name}",
    status_code=204,
    response_class=Response,
    summary="Remove a peer",
    description="Forget a peer added here or by ``vesalius peer set`` (a peer from the "
    "settings file: 409).",
    responses=_CONFLICT,
)
def delete_peer(archive: ArchiveDep, who: Who, name: PeerName) -> Response:
    if not archive.peers.drop(name, who):
        raise NotFoundError(f"no peer named {name!r}")
    return Response(status_code=204)


@router.post(
    "/peers/{name}/echo",
    response_model=EchoAnswer,
    summary="Test a peer (C-ECHO)",
    description="Open an association to the peer as this archive's AE and send a C-ECHO "
    "(PS3.7 9.1.5): whether it answered Success, its status, and the time it took. A peer "
    "that cannot be reached is ``ok: false`` with the reason, not an error.",
)
def echo_peer(archive: ArchiveDep, who: Who, name: PeerName) -> EchoAnswer:
    result = archive.peers.echo(name, who)
    return EchoAnswer(
        ok=result.ok, status=result.status, message=result.message, milliseconds=result.milliseconds
    )
