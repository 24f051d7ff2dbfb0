"""Health, readiness, who is asking (``/me``), the effective settings (secrets hidden), users
(admin) and the audit trail (auditor, admin)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from vesalius.api.deps import ArchiveDep, ConfigDep, Who
from vesalius.api.paging import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, encode_cursor
from vesalius.api.problems import PROBLEM_RESPONSES
from vesalius.errors import InvalidDataError
from vesalius.services.accounts import User as Account
from vesalius.services.audit_trail import AuditFilter
from vesalius.services.audit_trail import AuditRecord as TrailRecord
from vesalius.services.policy import ROLE_ACTIONS

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next` of the previous page.")]


class Me(BaseModel):
    """The identity a request is made with, and what it may do."""

    name: str = Field(description="User name (``anonymous`` where authentication is off).")
    kind: str = Field(description="``user``, ``ae`` or ``system``.")
    authenticated: bool = Field(description="Whether the request carried credentials.")
    method: str = Field(description="How the identity was established (session, token…).")
    roles: list[str]
    groups: list[str]
    actions: list[str] = Field(
        description="What this identity may do: echo, store, query, retrieve, read, delete, "
        "send, export, audit, admin."
    )


@router.get("/me", response_model=Me, summary="Who is asking, and what they may do")
def me(who: Who) -> Me:
    actions: set[str] = set()
    for role in who.roles:
        actions |= ROLE_ACTIONS.get(role, frozenset())
    return Me(
        name=who.name,
        kind=who.kind,
        authenticated=who.method not in ("none",),
        method=who.method,
        roles=sorted(who.roles),
        groups=sorted(who.groups),
        actions=sorted(actions),
    )


# -- health and readiness -------------------------------------------------------------------


class Health(BaseModel):
    """Whether the index answers and storage has room (``storage.min_free_mb``)."""

    status: str = Field(description="``ok`` or ``degraded``.")
    version: str
    ae_title: str
    index: str = Field(description="``ok`` or the error.")
    storage: str = Field(description="``ok``, ``low: …`` or the error.")
    storage_free_bytes: int | None = Field(default=None, description="Free for new instances.")


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    """Whether this server can do its work: each check and why."""

    status: str = Field(description="``ready`` or ``not ready``.")
    checks: dict[str, Check] = Field(description="database, storage, disk, jobs.")


@router.get(
    "/health",
    response_model=Health,
    summary="Health",
    description="The index answers and storage has room; never fails (monitors poll it).",
)
def health(archive: ArchiveDep) -> Health:
    return Health(**archive.health.report())


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness",
    description="Whether this server can do its work (index, writable storage, free space, "
    "a live job runner): 200 when ready, 503 with the failed checks when not.",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
def ready(archive: ArchiveDep) -> Response:
    found = Readiness(**archive.health.readiness())
    status = 200 if found.status == "ready" else 503
    return JSONResponse(found.model_dump(), status_code=status)


# -- settings -------------------------------------------------------------------------------


class SettingValue(BaseModel):
    value: Any = Field(description="The effective value (secrets as ``***``).")
    source: str = Field(description="Where it was set: the default, a file, a variable…")


@router.get(
    "/settings",
    response_model=dict[str, SettingValue],
    summary="The effective settings",
    description="Every setting's value and where it came from; secrets (passwords in URLs, "
    "client secrets) hidden. Administrators only.",
)
def settings(archive: ArchiveDep, config: ConfigDep, who: Who) -> dict[str, SettingValue]:
    archive.oversight.check(who, "admin")
    return {key: SettingValue(**shown) for key, shown in config.settings.items()}


# -- users ----------------------------------------------------------------------------------


class User(BaseModel):
    """A user of the HTTP side (never its password)."""

    name: str
    roles: list[str] = Field(description="admin, radiologist, technologist, researcher, auditor.")
    groups: list[str] = Field(description="Groups (access labels may be granted to them).")
    disabled: bool
    locked_until: datetime | None = Field(description="Locked after failed logins until.")
    created_at: datetime

    @classmethod
    def of(cls, user: Account) -> User:
        return cls(
            name=user.name,
            roles=sorted(user.roles),
            groups=sorted(user.groups),
            disabled=user.disabled,
            locked_until=user.locked_until,
            created_at=user.created_at,
        )


class NewUser(BaseModel):
    name: str = Field(description="Letters, digits and . _ @ - (at most 128).")
    password: str = Field(description="At least the minimum length; never shown again.")
    roles: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class UserChange(BaseModel):
    """What to change; absent fields stay as they are."""

    roles: list[str] | None = None
    groups: list[str] | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, description="A new password (a reset).")


@router.get(
    "/users",
    response_model=Page[User],
    summary="Users",
    description="Every user, by name. Administrators only.",
)
def users(
    archive: ArchiveDep, who: Who, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[User]:
    everyone = sorted(archive.accounts.users(who), key=lambda u: u.name)
    after = str((decode_cursor(cursor) or {}).get("name", ""))
    listed = [u for u in everyone if u.name > after] if after else everyone
    page = listed[:limit]
    more = len(listed) > limit
    return Page[User](
        items=[User.of(u) for u in page],
        total=len(everyone),
        next=encode_cursor({"name": page[-1].name}) if more and page else None,
    )


@router.post(
    "/users",
    response_model=User,
    status_code=201,
    summary="Add a user",
    description="A new user with a password, roles and groups. Administrators only.",
)
def add_user(archive: ArchiveDep, who: Who, body: NewUser) -> User:
    added = archive.accounts.add_user(
        body.name, body.password, frozenset(body.roles), who, frozenset(body.groups)
    )
    return User.of(added)


@router.get(
    "/users/{name}",
    response_model=User,
    summary="A user",
    description="Administrators only.",
)
def user(archive: ArchiveDep, who: Who, name: str) -> User:
    return User.of(archive.accounts.user(name, who))


@router.patch(
    "/users/{name}",
    response_model=User,
    summary="Change a user",
    description="Roles, groups, disabled or enabled, a password reset (the user's sessions "
    "end). Administrators only.",
)
def change_user(archive: ArchiveDep, who: Who, name: str, body: UserChange) -> User:
    accounts = archive.accounts
    accounts.user(name, who)  # 403 or 404 before anything changes
    if body.roles is not None or body.groups is not None:
        accounts.set_roles(
            name,
            who,
            roles=None if body.roles is None else frozenset(body.roles),
            groups=None if body.groups is None else frozenset(body.groups),
        )
    if body.password is not None:
        accounts.reset_password(name, body.password, who)
    if body.disabled is not None:
        accounts.set_disabled(name, body.disabled, who)
    return User.of(accounts.user(name, who))


@router.delete(
    "/users/{name}",
    status_code=204,
    summary="Disable a user",
    description="The user can no longer sign in; its sessions end, its tokens are refused. "
    "Nothing is erased (the audit trail names it). Administrators only.",
)
def disable_user(archive: ArchiveDep, who: Who, name: str) -> Response:
    archive.accounts.set_disabled(name, True, who)
    return Response(status_code=204)


# -- the audit trail ------------------------------------------------------------------------


class AuditRecord(BaseModel):
    """One record of the audit trail (PS3.15 A.5)."""

    id: int = Field(description="Its number in the trail.")
    time: str = Field(description="ISO 8601, UTC.")
    kind: str = Field(description="The event: query, metadata-read, instances-stored…")
    message: str = Field(description="The A.5 message it became (empty: none).")
    outcome: str
    who: str
    host: str
    patients: list[str]
    studies: list[str]
    details: dict[str, Any]

    @classmethod
    def of(cls, number: int, record: TrailRecord) -> AuditRecord:
        return cls(
            id=number,
            time=record.time,
            kind=record.kind,
            message=record.message,
            outcome=record.outcome,
            who=record.who,
            host=record.host,
            patients=list(record.patients),
            studies=list(record.studies),
            details=record.details,
        )


def _since(value: str) -> str:
    """``since`` as the trail writes times (ISO 8601, UTC); no zone: UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidDataError(f"since: {value!r} is not an ISO 8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


@router.get(
    "/audit",
    response_model=Page[AuditRecord],
    summary="The audit trail",
    description="Who did what, newest first: records naming a patient (ID) or a study "
    "(Study Instance UID), made by a user or AE title, since a time. Needs the `audit` "
    "permission; each read is itself audited (PS3.15 A.5.3.2, Audit Log Used).",
    responses={**PROBLEM_RESPONSES},
)
def audit(
    archive: ArchiveDep,
    who: Who,
    patient: Annotated[str, Query(description="Patient ID.")] = "",
    study: Annotated[str, Query(description="Study Instance UID.")] = "",
    user: Annotated[str, Query(description="User name or AE title.")] = "",
    since: Annotated[str, Query(description="ISO 8601 date or time (UTC if no zone).")] = "",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AuditRecord]:
    position = decode_cursor(cursor) or {}
    before = position.get("before", 0)
    if not isinstance(before, int) or before < 0:
        raise InvalidDataError("cursor: not a cursor this server gave")
    wanted = AuditFilter(
        patient=patient,
        study=study,
        who=user,
        since=_since(since) if since else "",
        limit=limit + 1,
        before=before,
    )
    found, total = archive.audit.page(who, wanted)
    page = found[:limit]
    more = len(found) > limit
    return Page[AuditRecord](
        items=[AuditRecord.of(n, r) for n, r in page],
        total=total,
        next=encode_cursor({"before": page[-1][0]}) if more and page else None,
    )
