"""Opening the index database and bringing its schema up to date with Alembic.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` for writers (no lock upgrades, so no
deadlocks between concurrent associations) and case-sensitive ``LIKE`` (DICOM matching is
case-sensitive unless a rule says otherwise). PostgreSQL uses psycopg 3.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import SingletonThreadPool

from vesalius.errors import (
    DatabaseUnavailableError,
    DataDirError,
    SchemaError,
    VesaliusError,
)

MIGRATIONS = Path(__file__).with_name("migrations")


def normalise_url(url: str) -> str:
    """Pick psycopg 3 for bare ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, see _sqlite_begin
    cur = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "busy_timeout=30000",
        "foreign_keys=ON",
        "case_sensitive_like=ON",
        "cache_size=-65536",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
    cursor = conn.connection.cursor()  # the driver's own: no statement machinery for BEGIN
    try:
        cursor.execute(f"BEGIN {mode}")
    finally:
        cursor.close()


def open_engine(url: str, *, per_thread: bool = False) -> Engine:
    """Create the engine for ``url``; SQLite gets WAL and writer locking. ``per_thread``
    (SQLite): one connection per thread instead of a shared pool, which gives up after
    0.1 s instead of 30 when the file is busy (for reads made on the event loop)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        sizes: dict[str, Any] = (
            {"poolclass": SingletonThreadPool, "pool_size": 4}
            if per_thread
            else {"pool_size": 8, "max_overflow": 24}
        )
        busy = 0.1 if per_thread else 30
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy}, **sizes
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # Query results are streamed through server-side cursors (yield_per) and read to the end;
    # by default PostgreSQL plans a cursor for its first 10% of rows, which for a sorted,
    # filtered join picks an ordered scan of every study (150 ms instead of 1 ms for a
    # wildcard name at a million instances). Plan cursors for reading them whole.
    # A server that does not answer is an error after 10 s, not a wait without end (libpq
    # waits forever by default); a connect_timeout in the URL wins.
    connect_args: dict[str, Any] = {"options": "-c cursor_tuple_fraction=1.0"}
    if "connect_timeout" not in make_url(url).query:
        connect_args["connect_timeout"] = 10
    return create_engine(
        url,
        pool_size=8,
        max_overflow=24,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


class WriterGate:
    """Queues SQLite writers of this node before ``BEGIN IMMEDIATE``.

    SQLite lets one writer in at a time and makes the others retry in its busy handler, which
    sleeps 1, 2, 5, 10 … ms between attempts: with a few concurrent associations, each commit
    then waits milliseconds after the lock is already free. Here writers wait their turn on a
    thread lock (this process) and an ``flock`` on a file next to the database (the DIMSE
    worker processes), both of which wake the next writer at once. PostgreSQL needs no gate.
    """

    def __init__(self, lock_path: Path | None) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None
        if lock_path is not None:
            self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            if self._fd is None:
                yield
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def writer_gate(url: str) -> WriterGate | None:
    """The gate for a SQLite ``url`` (a file database gets a ``.writer-lock`` beside it)."""
    parsed = make_url(normalise_url(url))
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return WriterGate(None)
    return WriterGate(Path(database + ".writer-lock"))


def describe_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _cannot_open(engine: Engine, exc: DBAPIError) -> VesaliusError:
    """The start-up error for a database that cannot be opened: one line, what to do."""
    url = engine.url.render_as_string(hide_password=True)
    reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    if engine.dialect.name == "sqlite":
        return DataDirError(
            f"cannot open the index database {url}: {reason}; check that its folder exists "
            "and is writable"
        )
    return DatabaseUnavailableError(
        f"cannot connect to the index database {url}: {reason}; check that the database "
        "server runs and database_url (host, port, user, database name)"
    )


def connect(engine: Engine) -> Connection:
    """A connection to ``engine``; a start-up error (:class:`DatabaseUnavailableError`, or
    :class:`DataDirError` for SQLite) when the database cannot be opened."""
    try:
        return engine.connect()
    except DBAPIError as exc:
        raise _cannot_open(engine, exc) from exc


def schema_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at; None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def known_revisions() -> tuple[list[str], str]:
    """Every migration this code has, and the newest (the head)."""
    script = ScriptDirectory(str(MIGRATIONS))
    revisions = [r.revision for r in script.walk_revisions()]
    return revisions, script.get_current_head() or ""


def alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Apply every pending migration (run at start; safe with several nodes on PostgreSQL).

    :class:`SchemaError` when the database is at a revision this code does not know (a newer
    Vesalius wrote it) or a migration fails; :class:`DatabaseUnavailableError` when it cannot
    be reached."""
    url = engine.url.render_as_string(hide_password=True)
    with connect(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(7353001)"))
            conn.commit()
        try:
            current = schema_revision(conn)
            known, head = known_revisions()
            if current is not None and current not in known:
                raise SchemaError(
                    f"the index database {url} is at schema revision {current}, newer than this "
                    f"Vesalius knows (up to {head}): run the version that wrote it, or restore "
                    "the backup taken before the upgrade"
                )
            try:
                command.upgrade(alembic_config(conn), "head")
                conn.commit()
            except Exception as exc:
                conn.rollback()
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SchemaError(
                    f"migrating the index database {url} from revision {current} to {head} "
                    f"failed: {reason}; restore the backup taken before the upgrade, or fix "
                    "the cause and start again"
                ) from exc
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(7353001)"))
                conn.commit()
