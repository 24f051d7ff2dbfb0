"""users, groups, API tokens and login sessions (helper: accounts)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:00:00

The HTTP side's accounts (issue 14; docs/security.md "Users, roles, sessions and tokens"):
users with argon2id password hashes, roles and a per-user failed-login count; groups and
their members; API tokens, of which only the SHA-256 of the secret is stored; login sessions
in the database so every node shares them (only the SHA-256 of the cookie's value is stored);
and failed logins per client address.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("pk", _PK, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), server_default="", nullable=False),
        sa.Column("roles", sa.String(), server_default="", nullable=False),
        sa.Column("disabled", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        _when("locked_until", nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_users")),
    )
    op.create_index(op.f("ix_users_name"), "users", ["name"], unique=True)
    op.create_table(
        "user_groups",
        sa.Column("pk", _PK, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_user_groups")),
    )
    op.create_index(op.f("ix_user_groups_name"), "user_groups", ["name"], unique=True)
    op.create_table(
        "group_members",
        sa.Column("group_pk", _PK, nullable=False),
        sa.Column("user_pk", _PK, nullable=False),
        sa.ForeignKeyConstraint(
            ["group_pk"],
            ["user_groups.pk"],
            name=op.f("fk_group_members_group_pk_user_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.pk"],
            name=op.f("fk_group_members_user_pk_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_pk", "user_pk", name=op.f("pk_group_members")),
    )
    op.create_index(op.f("ix_group_members_user_pk"), "group_members", ["user_pk"])
    op.create_table(
        "api_tokens",
        sa.Column("pk", _PK, nullable=False),
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("user_pk", _PK, nullable=False),
        sa.Column("scopes", sa.String(), server_default="", nullable=False),
        _when("created_at"),
        _when("expires_at", nullable=True),
        _when("revoked_at", nullable=True),
        _when("last_used_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_pk"], ["users.pk"], name=op.f("fk_api_tokens_user_pk_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_api_tokens")),
    )
    op.create_index(op.f("ix_api_tokens_token_id"), "api_tokens", ["token_id"], unique=True)
    op.create_index(op.f("ix_api_tokens_user_pk"), "api_tokens", ["user_pk"])
    op.create_table(
        "login_sessions",
        sa.Column("pk", _PK, nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(), nullable=False),
        sa.Column("roles", sa.String(), server_default="", nullable=False),
        sa.Column("groups", sa.String(), server_default="", nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("client", sa.String(), server_default="", nullable=False),
        _when("created_at"),
        _when("last_seen_at"),
        _when("expires_at"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_login_sessions")),
    )
    op.create_index(
        op.f("ix_login_sessions_session_hash"), "login_sessions", ["session_hash"], unique=True
    )
    op.create_index(op.f("ix_login_sessions_user_name"), "login_sessions", ["user_name"])
    op.create_table(
        "login_failures",
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        _when("locked_until", nullable=True),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_login_failures")),
    )


def downgrade() -> None:
    op.drop_table("login_failures")
    op.drop_index(op.f("ix_login_sessions_user_name"), table_name="login_sessions")
    op.drop_index(op.f("ix_login_sessions_session_hash"), table_name="login_sessions")
    op.drop_table("login_sessions")
    op.drop_index(op.f("ix_api_tokens_user_pk"), table_name="api_tokens")
    op.drop_index(op.f("ix_api_tokens_token_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index(op.f("ix_group_members_user_pk"), table_name="group_members")
    op.drop_table("group_members")
    op.drop_index(op.f("ix_user_groups_name"), table_name="user_groups")
    op.drop_table("user_groups")
    op.drop_index(op.f("ix_users_name"), table_name="users")
    op.drop_table("users")
