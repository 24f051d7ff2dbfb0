"""Alembic environment: runs on the connection handed over by ``index.database.migrate``."""

from __future__ import annotations

from alembic import context

from vesalius.index.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the alembic CLI is not how migrations run
    raise RuntimeError("run migrations through vesalius.index.database.migrate()")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
