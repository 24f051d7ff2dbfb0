"""Opening the local archive from the command line: say which archive is used, check that its
data folder can be written and its index reached, and never make a new archive silently.

``serve`` creates a new archive where none is and says so; ``import`` does too, with a warning
(importing into a fresh archive is how one starts, but an import that missed its archive must
not pass unnoticed); the commands that work on stored data (``delete``, ``jobs``, ``send
--study``) refuse, since an empty archive can hold nothing for them and making one would only
hide the mistake (:class:`~vesalius.errors.NoArchiveError`).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from vesalius.errors import ConfigError, DataDirError, NoArchiveError
from vesalius.index.database import (
    connect,
    describe_url,
    known_revisions,
    open_engine,
    schema_revision,
)
from vesalius.services.policy import ROLE_ACTIONS
from vesalius.settings import Settings
from vesalius.wiring import Assembly, anonymous_roles, assemble, is_loopback

#: Where :func:`check_archive` tells what it finds: ``(level, text)``, a ``logging`` level.
Notify = Callable[[int, str], None]


def say(level: int, text: str) -> None:
    """One line to stderr, as a command's own (``vesalius: [warning: ]TEXT``); ``serve``
    passes its logger's ``log`` instead, so its lines keep the log's one format."""
    warning = "warning: " if level >= logging.WARNING else ""
    print(f"vesalius: {warning}{text}", file=sys.stderr, flush=True)


def describe_archive(settings: Settings) -> str:
    """``data in FOLDER, index URL`` (the URL's password hidden)."""
    return f"data in {settings.data_dir}, index {describe_url(settings.database_url)}"


def index_revision(settings: Settings) -> tuple[bool, str | None]:
    """Whether the index database holds an archive, and its schema revision; creates nothing
    (a SQLite file that is not there is not made)."""
    url = make_url(settings.database_url)
    if url.drivername.startswith("sqlite"):
        database = url.database or ""
        on_disk = database and database != ":memory:" and not database.startswith("file:")
        if on_disk and not Path(database).is_file():
            return False, None
    engine = open_engine(settings.database_url)
    try:
        with connect(engine) as conn:
            revision = schema_revision(conn)
    finally:
        engine.dispose()
    return revision is not None, revision


def prepare_data_dir(settings: Settings) -> None:
    """Create the data folder if need be and check that a file can be written in it:
    :class:`DataDirError` (one line: which folder, where it was set, why, what to do)."""
    folder = settings.data_dir
    origin = f"data_dir, {settings.origin('data_dir')}"
    fix = "choose a folder Vesalius may write to (data_dir, --data-dir) or fix its permissions"
    if folder.exists() and not folder.is_dir():
        raise DataDirError(f"the data folder {folder} ({origin}) is a file, not a folder: {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(
            f"cannot create the data folder {folder} ({origin}): {exc.strerror}: {fix}"
        ) from exc
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirError(
            f"the data folder {folder} ({origin}) is not writable: {exc.strerror}: {fix}"
        ) from exc


def check_auth(settings: Settings) -> None:
    """Refuse to serve HTTP beyond loopback without authentication (issue 14, "Default
    posture"): :class:`ConfigError` (exit 78) saying what to set."""
    unknown = sorted(anonymous_roles(settings) - set(ROLE_ACTIONS))
    if unknown:
        raise ConfigError(
            f"auth.anonymous_roles ({settings.origin('auth.anonymous_roles')}) names unknown "
            f"roles {', '.join(unknown)}: the roles are {', '.join(ROLE_ACTIONS)}"
        )
    host = settings["http.host"]
    if settings["auth.required"] == "false" and not is_loopback(host):
        where = settings.origin("auth.required")
        raise ConfigError(
            f"auth.required is false ({where}) while HTTP listens on {host} (http.host, "
            f"{settings.origin('http.host')}), beyond this machine: anyone on the network "
            "could read and change the archive. Set auth.required = true (the default, auto, "
            "does) and create the first administrator with `vesalius user add NAME --role "
            "admin`, or listen on 127.0.0.1 only (http.host)"
        )


def check_archive(settings: Settings, *, create: str | None, notify: Notify = say) -> None:
    """Print the archive used, then check it: the data folder writable, the index reachable.

    Where there is no archive yet: ``create`` None refuses (:class:`NoArchiveError`);
    ``"serve"`` says that a new archive is being created; ``"warn"`` warns that a new, empty
    archive was created there. A schema that a migration will bring up to date is announced.
    What it finds goes to ``notify``."""
    if create == "serve":
        check_auth(settings)
    notify(logging.INFO, f"archive: {describe_archive(settings)}")
    if settings.data_dir.exists():  # a folder there: first whether it can be written
        prepare_data_dir(settings)
    exists, revision = index_revision(settings)
    if not exists and create is None:
        raise NoArchiveError(
            f"no archive in {settings.data_dir} (data_dir, {settings.origin('data_dir')}; index "
            f"{describe_url(settings.database_url)}): give the --config or --data-dir of an "
            "existing archive, or create one with `vesalius serve` or `vesalius import`"
        )
    prepare_data_dir(settings)
    if not exists and create == "serve":
        notify(logging.INFO, f"creating a new archive in {settings.data_dir}")
    elif not exists:
        notify(
            logging.WARNING,
            f"there was no archive in {settings.data_dir} (data_dir, "
            f"{settings.origin('data_dir')}): a new, empty one is created there; if you meant "
            "another archive, give its --config or --data-dir",
        )
    else:
        known, head = known_revisions()
        if revision in known and revision != head:
            notify(logging.INFO, f"migrating the index schema from revision {revision} to {head}")


def open_local(settings: Settings, *, create: str | None) -> Assembly:
    """The archive of ``settings`` for a command, checked first (:func:`check_archive`)."""
    check_archive(settings, create=create)
    return assemble(settings)
