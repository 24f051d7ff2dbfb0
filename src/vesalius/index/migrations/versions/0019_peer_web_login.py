"""a login for a peer's DICOMweb service (helper: transfers)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 18:50:00

A peer reached over DICOMweb may need a login: ``dicomweb_auth`` names its kind (``""``
none, ``basic``: RFC 7617 with ``dicomweb_user``, ``bearer``: RFC 6750), ``dicomweb_secret``
the password or token, which the API never returns. A user name and password written into a
peer's DICOMweb URL (the only way before this revision) move into these columns, and the URL
is kept without them.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.add_column(
            sa.Column("dicomweb_auth", sa.String(16), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("dicomweb_user", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("dicomweb_secret", sa.Text(), nullable=False, server_default=""))
    peers = sa.table(
        "peers",
        sa.column("pk", sa.Integer),
        sa.column("dicomweb_url", sa.Text),
        sa.column("dicomweb_auth", sa.String),
        sa.column("dicomweb_user", sa.Text),
        sa.column("dicomweb_secret", sa.Text),
    )
    conn = op.get_bind()
    found = conn.execute(
        sa.select(peers.c.pk, peers.c.dicomweb_url).where(peers.c.dicomweb_url.like("%@%"))
    )
    for pk, url in list(found):
        parts = urlsplit(url)
        if parts.username is None:
            continue
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
        conn.execute(
            sa.update(peers)
            .where(peers.c.pk == pk)
            .values(
                dicomweb_url=urlunsplit((parts.scheme, netloc, parts.path, "", "")),
                dicomweb_auth="basic",
                dicomweb_user=unquote(parts.username),
                dicomweb_secret=unquote(parts.password or ""),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.drop_column("dicomweb_secret")
        batch.drop_column("dicomweb_user")
        batch.drop_column("dicomweb_auth")
