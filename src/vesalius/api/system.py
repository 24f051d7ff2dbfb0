"""Health, readiness, who is asking (``/me``), the effective settings (secrets hidden), users
(admin) and the audit trail."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from vesalius.api.deps import Who
from vesalius.services.policy import ROLE_ACTIONS

router = APIRouter()


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
