"""The accounts tables (users, groups, API tokens, login sessions, failed logins per address),
read and written in one place. Hashing, checking and policy are ``services/accounts.py``'s."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, and_, bindparam, case, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from vesalius.index.prepared import Prepared
from vesalius.index.schema import (
    api_tokens,
    group_members,
    login_failures,
    login_sessions,
    user_groups,
    users,
)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored in UTC): make them aware."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _at(value: datetime | None) -> datetime:
    found = _utc(value)
    return found if found is not None else datetime.min.replace(tzinfo=UTC)


def split(text: str) -> frozenset[str]:
    """A comma-separated column as a set."""
    return frozenset(part for part in str(text).split(",") if part)


def joined(values: Iterable[str]) -> str:
    return ",".join(sorted(set(values)))


@dataclass(frozen=True)
class UserRow:
    pk: int
    name: str
    password_hash: str
    roles: frozenset[str]
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime
    groups: frozenset[str] = frozenset()


_USER_COLUMNS = (
    users.c.pk,
    users.c.name,
    users.c.password_hash,
    users.c.roles,
    users.c.disabled,
    users.c.failed_logins,
    users.c.locked_until,
    users.c.created_at,
)


def _user(conn: Connection, found: Sequence[Any]) -> UserRow:
    pk, name, hashed, roles, disabled, failed, locked, created = tuple(found)
    groups = conn.execute(
        select(user_groups.c.name)
        .join(group_members, group_members.c.group_pk == user_groups.c.pk)
        .where(group_members.c.user_pk == pk)
    ).scalars()
    return UserRow(
        int(pk),
        str(name),
        str(hashed),
        split(roles),
        bool(disabled),
        int(failed),
        _utc(locked),
        _at(created),
        frozenset(str(g) for g in groups),
    )


def user_by_name(conn: Connection, name: str) -> UserRow | None:
    found = conn.execute(select(*_USER_COLUMNS).where(users.c.name == name)).first()
    return None if found is None else _user(conn, found)


def all_users(conn: Connection) -> list[UserRow]:
    rows = conn.execute(select(*_USER_COLUMNS).order_by(users.c.name)).all()
    return [_user(conn, row) for row in rows]


def add_user(
    conn: Connection, name: str, password_hash: str, roles: Iterable[str], now: datetime
) -> int:
    result = conn.execute(
        insert(users).values(
            name=name,
            password_hash=password_hash,
            roles=joined(roles),
            created_at=now,
            updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def update_user(conn: Connection, pk: int, now: datetime, **values: Any) -> None:
    conn.execute(update(users).where(users.c.pk == pk).values(updated_at=now, **values))


def set_groups(conn: Connection, user_pk: int, groups: Iterable[str], now: datetime) -> None:
    """Make ``user_pk`` a member of exactly ``groups`` (creating the groups not known yet)."""
    conn.execute(delete(group_members).where(group_members.c.user_pk == user_pk))
    for name in sorted(set(groups)):
        pk = conn.execute(select(user_groups.c.pk).where(user_groups.c.name == name)).scalar()
        if pk is None:
            created = conn.execute(insert(user_groups).values(name=name, created_at=now))
            pk = created.inserted_primary_key[0]  # type: ignore[index]
        conn.execute(insert(group_members).values(group_pk=pk, user_pk=user_pk))


# -- failed logins per address ---------------------------------------------------------------


def address_failures(conn: Connection, address: str) -> tuple[int, datetime | None, datetime]:
    """(failures, locked until, last update) of ``address``; (0, None, ...) if none."""
    found = conn.execute(
        select(
            login_failures.c.failures, login_failures.c.locked_until, login_failures.c.updated_at
        ).where(login_failures.c.address == address)
    ).first()
    if found is None:
        return 0, None, _at(None)
    return int(found[0]), _utc(found[1]), _at(found[2])


def save_address_failures(
    conn: Connection, address: str, failures: int, locked_until: datetime | None, now: datetime
) -> None:
    values = {"failures": failures, "locked_until": locked_until, "updated_at": now}
    changed = conn.execute(
        update(login_failures).where(login_failures.c.address == address).values(values)
    )
    if not changed.rowcount:
        conn.execute(insert(login_failures).values(address=address, **values))


# -- API tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRow:
    pk: int
    token_id: str
    secret_hash: str
    user_name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


_TOKEN_COLUMNS = (
    api_tokens.c.pk,
    api_tokens.c.token_id,
    api_tokens.c.secret_hash,
    users.c.name,
    api_tokens.c.scopes,
    api_tokens.c.created_at,
    api_tokens.c.expires_at,
    api_tokens.c.revoked_at,
    api_tokens.c.last_used_at,
)


def _token(found: Sequence[Any]) -> TokenRow:
    pk, token_id, hashed, name, scopes, created, expires, revoked, used = tuple(found)
    return TokenRow(
        int(pk),
        str(token_id),
        str(hashed),
        str(name),
        split(scopes),
        _at(created),
        _utc(expires),
        _utc(revoked),
        _utc(used),
    )


def add_token(
    conn: Connection,
    token_id: str,
    secret_hash: str,
    user_pk: int,
    scopes: Iterable[str],
    now: datetime,
    expires_at: datetime | None,
) -> None:
    conn.execute(
        insert(api_tokens).values(
            token_id=token_id,
            secret_hash=secret_hash,
            user_pk=user_pk,
            scopes=joined(scopes),
            created_at=now,
            expires_at=expires_at,
        )
    )


def token_by_id(conn: Connection, token_id: str) -> TokenRow | None:
    query = select(*_TOKEN_COLUMNS).join(users, users.c.pk == api_tokens.c.user_pk)
    found = conn.execute(query.where(api_tokens.c.token_id == token_id)).first()
    return None if found is None else _token(found)


def all_tokens(conn: Connection, user_name: str = "") -> list[TokenRow]:
    query = select(*_TOKEN_COLUMNS).join(users, users.c.pk == api_tokens.c.user_pk)
    if user_name:
        query = query.where(users.c.name == user_name)
    return [_token(row) for row in conn.execute(query.order_by(api_tokens.c.created_at))]


def revoke_token(conn: Connection, token_id: str, now: datetime) -> bool:
    changed = conn.execute(
        update(api_tokens)
        .where(api_tokens.c.token_id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(changed.rowcount)


def token_used(conn: Connection, pk: int, now: datetime) -> None:
    conn.execute(update(api_tokens).where(api_tokens.c.pk == pk).values(last_used_at=now))


# -- login sessions --------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRow:
    pk: int
    user_name: str
    roles: frozenset[str]
    groups: frozenset[str]
    method: str
    csrf_token: str
    client: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def add_session(conn: Connection, session_hash: str, row: SessionRow) -> None:
    conn.execute(
        insert(login_sessions).values(
            session_hash=session_hash,
            user_name=row.user_name,
            roles=joined(row.roles),
            groups=joined(row.groups),
            method=row.method,
            csrf_token=row.csrf_token,
            client=row.client,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            expires_at=row.expires_at,
        )
    )


def touch_session(conn: Connection, pk: int, now: datetime, expires_at: datetime) -> None:
    conn.execute(
        update(login_sessions)
        .where(login_sessions.c.pk == pk)
        .values(last_seen_at=now, expires_at=expires_at)
    )


def delete_session(conn: Connection, session_hash: str) -> bool:
    gone = conn.execute(delete(login_sessions).where(login_sessions.c.session_hash == session_hash))
    return bool(gone.rowcount)


def delete_sessions_of(conn: Connection, user_name: str, now: datetime | None = None) -> int:
    """End every session of ``user_name`` (and, with ``now``, every expired one)."""
    condition = login_sessions.c.user_name == user_name
    if now is not None:
        condition = or_(condition, login_sessions.c.expires_at < now)
    return int(conn.execute(delete(login_sessions).where(condition)).rowcount)


def delete_expired_sessions(conn: Connection, now: datetime) -> int:
    gone = conn.execute(delete(login_sessions).where(and_(login_sessions.c.expires_at < now)))
    return int(gone.rowcount)


# -- the per-request checks (every authenticated HTTP request runs one) ----------------------


@dataclass(frozen=True)
class TokenCheck:
    """What authenticating a bearer token needs, in one statement (plus one for groups)."""

    pk: int
    secret_hash: str
    scopes: frozenset[str]
    user_name: str
    roles: frozenset[str]
    groups: frozenset[str]
    disabled: bool
    revoked: bool
    expired: bool
    touch: bool  # its last use is older than ``touch_before`` (or never)


def _flag(condition: Any) -> Any:
    return case((condition, 1), else_=0)


_TOKEN_CHECK = Prepared(
    select(
        api_tokens.c.pk,
        api_tokens.c.secret_hash,
        api_tokens.c.scopes,
        users.c.name,
        users.c.roles,
        users.c.disabled,
        _flag(api_tokens.c.revoked_at.is_not(None)),
        _flag(
            and_(
                api_tokens.c.expires_at.is_not(None),
                api_tokens.c.expires_at <= bindparam("now", type_=DateTime(timezone=True)),
            )
        ),
        _flag(
            or_(
                api_tokens.c.last_used_at.is_(None),
                api_tokens.c.last_used_at < bindparam("touch", type_=DateTime(timezone=True)),
            )
        ),
        users.c.pk,
    )
    .join(users, users.c.pk == api_tokens.c.user_pk)
    .where(api_tokens.c.token_id == bindparam("token_id"))
)
_GROUPS_OF = Prepared(
    select(user_groups.c.name)
    .join(group_members, group_members.c.group_pk == user_groups.c.pk)
    .where(group_members.c.user_pk == bindparam("user_pk"))
)


def token_check(
    conn: Connection, token_id: str, now: datetime, touch_before: datetime
) -> TokenCheck | None:
    rows = _TOKEN_CHECK.run(conn, {"token_id": token_id, "now": now, "touch": touch_before})
    if not rows:
        return None
    pk, hashed, scopes, name, roles, disabled, revoked, expired, touch, user_pk = rows[0]
    groups = frozenset(str(g) for (g,) in _GROUPS_OF.run(conn, {"user_pk": user_pk}))
    return TokenCheck(
        int(pk),
        str(hashed),
        split(scopes),
        str(name),
        split(roles),
        groups,
        bool(disabled),
        bool(revoked),
        bool(expired),
        bool(touch),
    )


@dataclass(frozen=True)
class SessionCheck:
    pk: int
    user_name: str
    roles: frozenset[str]
    groups: frozenset[str]
    method: str
    csrf_token: str
    expired: bool
    touch: bool


_SESSION_CHECK = Prepared(
    select(
        login_sessions.c.pk,
        login_sessions.c.user_name,
        login_sessions.c.roles,
        login_sessions.c.groups,
        login_sessions.c.method,
        login_sessions.c.csrf_token,
        _flag(login_sessions.c.expires_at <= bindparam("now", type_=DateTime(timezone=True))),
        _flag(login_sessions.c.last_seen_at < bindparam("touch", type_=DateTime(timezone=True))),
    ).where(login_sessions.c.session_hash == bindparam("session_hash"))
)


def session_check(
    conn: Connection, session_hash: str, now: datetime, touch_before: datetime
) -> SessionCheck | None:
    rows = _SESSION_CHECK.run(
        conn, {"session_hash": session_hash, "now": now, "touch": touch_before}
    )
    if not rows:
        return None
    pk, name, roles, groups, method, csrf, expired, touch = rows[0]
    return SessionCheck(
        int(pk),
        str(name),
        split(roles),
        split(groups),
        str(method),
        str(csrf),
        bool(expired),
        bool(touch),
    )
