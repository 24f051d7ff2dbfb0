"""Consistent copies of the index database, taken while it serves, and their restore.

- **SQLite**: the online backup API (``sqlite3.Connection.backup``) in one step, so the copy is
  one read transaction (WAL lets the writers go on) and never restarts under load.
- **PostgreSQL**: ``pg_dump --format=custom`` run on a snapshot exported from our own
  ``REPEATABLE READ READ ONLY`` transaction (``pg_export_snapshot``), so the row counts we note
  are the dump's; when no ``pg_dump`` at least as new as the server is installed, or a portable
  copy is asked for, the rows are copied in one such transaction into a SQLite file at the same
  schema revision (restorable into SQLite or PostgreSQL).

A restore writes an empty (or emptied) target: the SQLite file through the backup API, a dump
through ``pg_restore``, a SQLite file into PostgreSQL by copying rows at the backup's revision;
then the migrations bring the schema to the head.
"""

from __future__ import annotations

import functools
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from vesalius.errors import VesaliusError
from vesalius.index.database import MIGRATIONS, alembic_config, migrate, normalise_url, open_engine

#: Called with (rows or pages done, total) as a long copy goes on.
Progress = Callable[[int, int], None]
#: The tables whose rows make an index "not empty" (peers and jobs are seeded or transient).
CONTENT_TABLES = ("patients", "studies", "series", "instances")
BATCH = 1000


class IndexBackupError(VesaliusError):
    """A backup or restore of the index cannot be done (tool missing, database refused)."""


P = ParamSpec("P")
R = TypeVar("R")


def _database_errors(func: Callable[P, R]) -> Callable[P, R]:
    """The database's own errors (unreachable, refused, corrupt) as one-line
    :class:`IndexBackupError`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            text = str(getattr(exc, "orig", None) or exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise IndexBackupError(f"index database: {first}") from exc

    return wrapper


@_database_errors
def dialect(url: str) -> str:
    """``sqlite`` or ``postgresql`` (anything else is refused by :func:`open_engine` users)."""
    name = make_url(normalise_url(url)).get_backend_name()
    return "sqlite" if name == "sqlite" else name


def sqlite_path(url: str) -> Path:
    """The file of a SQLite ``url``."""
    database = make_url(url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        raise IndexBackupError(f"cannot back up or restore the SQLite database {url!r}")
    return Path(database)


def libpq_url(url: str) -> str:
    """``url`` as libpq (pg_dump, pg_restore) reads it: no ``+driver``."""
    parsed = make_url(normalise_url(url)).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def known_revision(revision: str) -> bool:
    """Whether this code's migrations include ``revision`` (a newer backup's is unknown)."""
    script = ScriptDirectory(str(MIGRATIONS))
    return any(rev.revision == revision for rev in script.walk_revisions())


def schema_revision(conn: Connection) -> str | None:
    """The Alembic revision of the database on ``conn`` (None: no schema yet)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def counts(conn: Connection) -> dict[str, int]:
    """Rows of each content table (0 for a table that does not exist)."""
    found: dict[str, int] = {}
    inspector = inspect(conn)
    for table in CONTENT_TABLES:
        if inspector.has_table(table):
            found[table] = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        else:
            found[table] = 0
    return found


@_database_errors
def is_empty(url: str) -> bool:
    """Whether the index at ``url`` holds no patient, study, series or instance."""
    if dialect(url) == "sqlite" and not sqlite_path(url).exists():
        return True
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return not any(counts(conn).values())
    finally:
        engine.dispose()


@_database_errors
def other_sessions(url: str) -> int:
    """PostgreSQL: sessions connected to this database besides ours (a serving node, an
    import); 0 on SQLite, where the caller checks in other ways."""
    if dialect(url) != "postgresql":
        return 0
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


# -- taking a copy -------------------------------------------------------------------------


@_database_errors
def backup_sqlite(url: str, dest: Path) -> tuple[str | None, dict[str, int]]:
    """Copy the SQLite index at ``url`` into the new file ``dest`` (one read transaction);
    return the copy's schema revision and row counts."""
    source_path = sqlite_path(url)
    if not source_path.is_file():
        raise IndexBackupError(f"no index at {source_path}")
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dest)
    try:
        source.execute("PRAGMA busy_timeout=30000")
        source.backup(target)  # pages=-1: all in one step, so concurrent writers never restart it
    except sqlite3.Error as exc:
        raise IndexBackupError(f"cannot copy {source_path}: {exc}") from exc
    finally:
        source.close()
        target.close()
    return _describe_sqlite(dest)


def _describe_sqlite(path: Path) -> tuple[str | None, dict[str, int]]:
    engine = open_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return schema_revision(conn), counts(conn)
    finally:
        engine.dispose()


def tool_version(tool: str) -> int | None:
    """Major version of a PostgreSQL client tool on PATH (None: not installed)."""
    path = shutil.which(tool)
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def server_version(conn: Connection) -> int:
    """Major version of the PostgreSQL server on ``conn``."""
    return int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000


@_database_errors
def pg_dump_refusal(url: str) -> str | None:
    """Why ``pg_dump`` cannot dump the server at ``url`` (None: it can)."""
    dump = tool_version("pg_dump")
    if dump is None:
        return "pg_dump is not installed"
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            server = server_version(conn)
    finally:
        engine.dispose()
    if dump < server:
        return f"pg_dump {dump} is older than the server ({server})"
    return None


def _snapshot(conn: Connection) -> None:
    conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


@_database_errors
def backup_pg_dump(url: str, dest: Path) -> tuple[str | None, dict[str, int], int]:
    """``pg_dump`` the PostgreSQL index at ``url`` into ``dest`` on the snapshot of our own
    transaction; return its revision, row counts and pg_dump's major version."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            _snapshot(conn)
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            revision, found = schema_revision(conn), counts(conn)
            run = subprocess.run(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={dest}",
                    f"--dbname={libpq_url(url)}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if run.returncode != 0:
                raise IndexBackupError(f"pg_dump failed: {_last_line(run.stderr)}")
    finally:
        engine.dispose()
    version = tool_version("pg_dump")
    assert version is not None
    return revision, found, version


@_database_errors
def export_portable(
    url: str, dest: Path, progress: Progress | None = None
) -> tuple[str | None, dict[str, int]]:
    """Copy the rows of the index at ``url`` into a new SQLite file ``dest`` at the same schema
    revision, in one ``REPEATABLE READ READ ONLY`` transaction (a consistent copy while the
    archive serves); return its revision and row counts."""
    engine = open_engine(url)
    target = open_engine(f"sqlite:///{dest}")
    try:
        with engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                _snapshot(conn)
            revision = schema_revision(conn)
            if revision is None:
                raise IndexBackupError("the index has no schema yet: nothing to back up")
            with target.connect() as out:
                command.upgrade(alembic_config(out), revision)
                out.commit()
            found = counts(conn)
            copy_rows(conn, target, progress)
    finally:
        engine.dispose()
        target.dispose()
    return revision, found


# -- restoring -----------------------------------------------------------------------------


@_database_errors
def clear(url: str) -> None:
    """Drop every table of the index at ``url`` (``restore --force``)."""
    if dialect(url) == "sqlite":
        path = sqlite_path(url)
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        return
    engine = open_engine(url)
    try:
        with engine.begin() as conn:
            found = MetaData()
            found.reflect(conn)
            found.drop_all(conn)
    finally:
        engine.dispose()


@_database_errors
def restore_sqlite_file(source: Path, url: str, progress: Progress | None = None) -> None:
    """Write the SQLite backup file ``source`` into the (empty) index at ``url``: by the backup
    API into SQLite, by copying rows at its revision into PostgreSQL. Migrations are the
    caller's next step (:func:`upgrade`)."""
    if dialect(url) == "sqlite":
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(path)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            src.close()
            dst.close()
        return
    source_engine = open_engine(f"sqlite:///{source}")
    target = open_engine(url)
    try:
        with source_engine.connect() as conn:
            revision = schema_revision(conn)
            if revision is None:
                raise IndexBackupError("the backup's index has no schema")
            with target.connect() as out:
                command.upgrade(alembic_config(out), revision)
                out.commit()
            copy_rows(conn, target, progress)
        _reset_sequences(target)
    finally:
        source_engine.dispose()
        target.dispose()


def restore_pg_dump(dump: Path, url: str, dumped_by: int) -> None:
    """``pg_restore`` the dump into the (empty) PostgreSQL index at ``url``."""
    if dialect(url) != "postgresql":
        raise IndexBackupError(
            "this backup is a pg_dump of PostgreSQL: it restores into PostgreSQL only "
            "(set database_url, or take a portable backup with --portable)"
        )
    version = tool_version("pg_restore")
    if version is None:
        raise IndexBackupError("pg_restore is not installed (Debian: postgresql-client)")
    if version < dumped_by:
        raise IndexBackupError(f"pg_restore {version} cannot read a dump of pg_dump {dumped_by}")
    run = subprocess.run(
        [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={libpq_url(url)}",
            str(dump),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise IndexBackupError(f"pg_restore failed: {_last_line(run.stderr)}")


@_database_errors
def upgrade(url: str) -> None:
    """Bring the restored index's schema to this code's head."""
    engine = open_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def copy_rows(source: Connection, target: Engine, progress: Progress | None = None) -> int:
    """Copy every row of every table but ``alembic_version`` from ``source`` into the same
    tables (already created, empty) of ``target``, parents first; return the rows copied."""
    tables = MetaData()
    tables.reflect(source)
    wanted = MetaData()
    wanted.reflect(target)
    ordered = [t for t in tables.sorted_tables if t.name != "alembic_version"]
    total = sum(
        int(source.execute(select(func.count()).select_from(t)).scalar_one()) for t in ordered
    )
    done = 0
    with target.begin() as out:
        for table in ordered:
            into = wanted.tables[table.name]
            aware = {c.name for c in into.columns if getattr(c.type, "timezone", False) is True}
            names = [c.name for c in table.columns if c.name in into.columns]
            result = source.execute(select(*(table.c[n] for n in names))).yield_per(BATCH)
            for rows in result.partitions():
                batch = [_row(dict(zip(names, row, strict=True)), aware) for row in rows]
                out.execute(into.insert(), batch)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
    return done


def _row(values: dict[str, Any], aware: set[str]) -> dict[str, Any]:
    """Times in UTC: SQLite keeps no time zone (naive times are UTC, as Vesalius writes them),
    and PostgreSQL answers in the session's zone."""
    for name, value in values.items():
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                values[name] = value.astimezone(UTC)
            elif name in aware:
                values[name] = value.replace(tzinfo=UTC)
    return values


def _reset_sequences(engine: Engine) -> None:
    """After rows came in with their keys, PostgreSQL's sequences must start past them."""
    with engine.begin() as conn:
        inspector = inspect(conn)
        for table in inspector.get_table_names():
            if "pk" not in {c["name"] for c in inspector.get_columns(table)}:
                continue
            sequence = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, 'pk')"), {"t": table}
            ).scalar()
            if sequence:
                conn.execute(
                    text(
                        f"SELECT setval(:s, coalesce((SELECT max(pk) FROM {table}), 0) + 1, false)"
                    ),
                    {"s": sequence},
                )


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
