"""Logging (wiring): one line per record, in one format (logfmt or JSON lines) for every
logger, Vesalius's, uvicorn's and alembic's alike; written by the main process
only; the audit trail in a handler of its own (docs/operations.md, "Logs").

Every process (the main one and each worker) hands its records to a multiprocessing queue; a
:class:`~logging.handlers.QueueListener` thread in the main process formats them and writes
them to stderr or ``log.file``, and rotates the file. One writer, so rotation is safe with any
number of workers (a :class:`~logging.handlers.RotatingFileHandler` in each process is not:
each would rename the file under the others) and lines never interleave. A worker whose main
process died (``kill -9``) writes straight to the same place (:func:`detach`), so it can still
say why it stops.

Each line carries the time (ISO 8601, UTC, milliseconds), level, logger, process (``main`` or
``worker-N``) and pid, the message, and the request id (HTTP) or association id (DIMSE) in
force when it was logged (``vesalius.logcontext``).

The formatting is written here rather than taken from a library: it is a dict rendered by
:func:`json.dumps`, or as logfmt with every control and non-ASCII character escaped, so no
value a peer sends (an AE title, a path) can break a line in two or forge one (structlog's
logfmt renderer leaves CR, tabs and other control characters as they are).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import logging
import logging.handlers
import multiprocessing
import multiprocessing.queues
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vesalius import logcontext
from vesalius.errors import ConfigError, DataDirError
from vesalius.services.audit import AUDIT_LOGGER
from vesalius.settings import Settings

FORMATS = ("logfmt", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")
#: Libraries whose info lines repeat ours (uvicorn's start-up per process) or are noise
#: (alembic's migration context): at ``warning`` unless the log level is ``debug``.
QUIET_UNLESS_DEBUG = ("uvicorn", "alembic")
#: Attributes every LogRecord has: anything else on a record is an ``extra`` field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
    *logcontext.FIELDS,
}
_PLAIN = logging.Formatter()
#: The audit trail's file in data_dir when ``audit.file`` is empty.
AUDIT_FILE = "audit.log"
_BARE = re.compile(r"^[!#-<>-\[\]-~]+$")  # printable ASCII but space, '"', '=' and '\'


@dataclass(frozen=True)
class LogConfig:
    """The ``log_level`` and ``log.*`` settings, resolved (paths against ``data_dir``)."""

    level: str = "info"
    format: str = "logfmt"
    #: None: stderr.
    file: Path | None = None
    max_bytes: int = 100 << 20
    backups: int = 5
    access: bool = True
    #: None: the audit records go with the log, tagged ``logger=vesalius.audit``.
    audit_file: Path | None = None
    #: The audit trail is data_dir's ``audit.log`` (made with data_dir, by the archive).
    audit_in_data_dir: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> LogConfig:
        level = str(settings["log_level"]).strip().lower()
        if level not in LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LEVELS)}, got {level!r}")
        form = str(settings["log.format"]).strip().lower()
        if form not in FORMATS:
            raise ConfigError(f"log.format must be one of {', '.join(FORMATS)}, got {form!r}")
        if settings["log.max_mb"] < 0 or settings["log.backups"] < 0:
            raise ConfigError("log.max_mb and log.backups must not be negative")

        def path(key: str) -> Path | None:
            text = str(settings[key]).strip()
            if not text:
                return None
            given = Path(text).expanduser()
            return given if given.is_absolute() else settings.data_dir / given

        file = path("log.file")
        audit_setting = str(settings["audit.file"]).strip()
        audit = (
            None if audit_setting == "-" else (path("audit.file") or settings.data_dir / AUDIT_FILE)
        )
        if audit is not None and file is not None and audit.resolve() == file.resolve():
            raise ConfigError("audit.file must not be log.file: the audit trail stays apart")
        return cls(
            level=level,
            format=form,
            file=file,
            max_bytes=int(float(settings["log.max_mb"]) * (1 << 20)),
            backups=int(settings["log.backups"]),
            access=bool(settings["log.access"]),
            audit_file=audit,
            audit_in_data_dir=audit_setting == "",
        )


def _timestamp(record: logging.LogRecord) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{whole}.{int(record.msecs):03d}Z"


def _process(record: logging.LogRecord) -> str:
    name = record.processName or ""
    if name == "MainProcess":
        return "main"
    return name.removeprefix("vesalius-")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record as the ordered fields of its line."""
    out: dict[str, Any] = {
        "time": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "process": _process(record),
        "pid": record.process,
    }
    for key in logcontext.FIELDS:
        value = getattr(record, key, None)
        if value is not None:
            out[key] = value
    message = record.getMessage()
    out["msg"] = message
    if record.name == AUDIT_LOGGER:
        with contextlib.suppress(ValueError):
            event = json.loads(message)
            if isinstance(event, dict):
                out["msg"] = f"audit: {event.get('event', '')}"
                out["audit"] = event
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in out:
            out[key] = value
    if record.exc_info and not record.exc_text:
        record.exc_text = _PLAIN.formatException(record.exc_info)
    if record.exc_text:
        out["exc"] = record.exc_text
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


def _logfmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if _BARE.match(text):
        return text
    return json.dumps(text)  # quoted; \", \\, control and non-ASCII characters escaped


class LineFormatter(logging.Formatter):
    """One line per record: ``logfmt`` (``key=value``, values with spaces or quotes in double
    quotes, escaped as in JSON) or ``json`` (an object per line)."""

    def __init__(self, form: str = "logfmt") -> None:
        super().__init__()
        self.form = form

    def format(self, record: logging.LogRecord) -> str:
        out = fields(record)
        if self.form == "json":
            return json.dumps(out, default=str)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in out.items())


class _Only(logging.Filter):
    """Pass the audit logger's records (``audit=True``) or every other's."""

    def __init__(self, audit: bool) -> None:
        super().__init__()
        self.audit = audit

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.name == AUDIT_LOGGER) == self.audit


class LogQueue(multiprocessing.queues.Queue):  # type: ignore[type-arg]
    """The records of every process on their way to the main one. A record that cannot be
    sent (the main process is gone: a broken pipe) is dropped without the traceback
    :class:`multiprocessing.Queue` would print."""

    @staticmethod
    def _on_queue_feeder_error(e: BaseException, obj: object) -> None:
        return None


def prepared(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` ready to leave the thread that logged it: the message rendered,
    the traceback as text, the request or association id in force attached, and odd
    ``extra`` values as strings (all must pickle)."""
    message = record.getMessage()
    record = copy.copy(record)
    record.message = record.msg = message
    record.args = None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        record.exc_info = None
    bound = logcontext.current()
    if bound is not None and not hasattr(record, bound[0]):
        setattr(record, bound[0], bound[1])
    for key, value in list(record.__dict__.items()):
        if key not in _STANDARD and not isinstance(value, (str, int, float, bool, type(None))):
            record.__dict__[key] = str(value)
    return record


class ToQueue(logging.handlers.QueueHandler):
    """Hands :func:`prepared` records to the queue (a worker's records, for the main process)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return prepared(record)


class Inline(logging.Handler):
    """The main process's own records, written in the thread that logs them (:func:`prepared`,
    then handed to the handlers the queue's reader writes to): no
    pickling, pipe or thread hop for them, which cost a request served by the main process
    up to a third of its time at a few hundred QIDO-RS requests a second. Each handler's lock
    keeps lines whole and rotation single beside the reader thread."""

    def __init__(self, targets: list[logging.Handler]) -> None:
        super().__init__()
        self.targets = targets

    def handle(self, record: logging.LogRecord) -> bool:  # no lock of its own: the targets'
        record = prepared(record)
        for handler in self.targets:
            if record.levelno >= handler.level:
                handler.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does it
        self.handle(record)


def _open(path: Path, config: LogConfig, *, rotate: bool, create: bool = True) -> logging.Handler:
    """A handler writing ``path``; ``create``: make its folder now (else the file is opened
    at the first record, in a folder made by then: the audit trail in data_dir)."""
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        if rotate and config.max_bytes:
            return logging.handlers.RotatingFileHandler(
                path,
                maxBytes=config.max_bytes,
                backupCount=config.backups,
                encoding="utf-8",
                delay=not create,
            )
        # Rotated by someone else (logrotate): reopened when it is moved away.
        return logging.handlers.WatchedFileHandler(path, encoding="utf-8", delay=not create)
    except OSError as exc:
        raise DataDirError(f"cannot write the log file {path}: {exc.strerror}") from None


def handlers(config: LogConfig, *, rotate: bool = True) -> list[logging.Handler]:
    """What writes the lines: the log (stderr or ``log.file``), and the audit records,
    apart when they have a file of their own. ``rotate``: this is the one writer."""
    log: logging.Handler = (
        logging.StreamHandler(sys.stderr)
        if config.file is None
        else _open(config.file, config, rotate=rotate)
    )
    log.setFormatter(LineFormatter(config.format))
    if config.audit_file is None:
        return [log]
    log.addFilter(_Only(audit=False))
    # The audit trail is never rotated away by Vesalius: each line is the event's own JSON.
    audit = _open(config.audit_file, config, rotate=False, create=not config.audit_in_data_dir)
    audit.setFormatter(logging.Formatter("%(message)s"))
    audit.addFilter(_Only(audit=True))
    return [log, audit]


def audit_handler(settings: Settings) -> logging.Handler | None:
    """A handler appending to the audit trail's file (None: ``audit.file = "-"``), for a
    command that audits outside the server (``vesalius delete``). It appends whole lines, as
    the server does, and rotates nothing."""
    config = LogConfig.from_settings(settings)
    if config.audit_file is None:
        return None
    handler = _open(config.audit_file, config, rotate=False, create=not config.audit_in_data_dir)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _install(to: logging.Handler, config: LogConfig) -> None:
    """Route this process's records to ``to`` (the queue, or the main process's writers),
    at ``config.level``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(to)
    set_level(config.level)
    # The audit trail does not depend on the log level (services/audit.py).
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)
    logging.captureWarnings(True)
    threading.excepthook = _thread_died


def _thread_died(args: threading.ExceptHookArgs) -> None:
    """An exception that ends a thread: one record (with its traceback in ``exc``) rather
    than Python's lines on stderr, outside the log's format."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    logging.getLogger("vesalius").error("thread %s died", name, exc_info=exc_info)


@dataclass(frozen=True)
class WorkerLogging:
    """What a worker process needs to log (pickled to it at spawn)."""

    config: LogConfig
    queue: LogQueue


class Logging:
    """The main process's logging: the queue and the thread that writes it."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.queue = LogQueue(ctx=multiprocessing.get_context("spawn"))
        self.handlers = handlers(config)
        self.listener = logging.handlers.QueueListener(
            self.queue, *self.handlers, respect_handler_level=True
        )
        self._stopped = False

    @property
    def for_workers(self) -> WorkerLogging:
        return WorkerLogging(self.config, self.queue)

    def start(self) -> None:
        self.listener.start()
        _install(Inline(self.handlers), self.config)
        atexit.register(self.stop)

    def stop(self) -> None:
        """Write what is queued, then log straight to the handlers (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self.listener.stop()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in self.handlers:
            root.addHandler(handler)
        self.queue.close()


def configure(settings: Settings) -> Logging:
    """Set up the main process's logging from the settings (``log_level``, ``log.*``)."""
    running = Logging(LogConfig.from_settings(settings))
    running.start()
    return running


def set_level(level: str) -> None:
    """Change this process's log level (a reload); the audit trail is not affected."""
    level = level.strip().lower()
    if level not in LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LEVELS)}, got {level!r}")
    logging.getLogger().setLevel(level.upper())
    for name in QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else logging.WARNING)


def configure_worker(setup: WorkerLogging) -> None:
    """Set up a worker process's logging: its records go to the main process."""
    _install(ToQueue(setup.queue), setup.config)


def detach(setup: WorkerLogging) -> None:
    """In a worker whose main process is gone: write straight to the log (no rotation: that
    is the main process's), so the last words are not lost; records still queued are dropped
    rather than waited for at exit (nobody reads the queue now)."""
    setup.queue.cancel_join_thread()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers(setup.config, rotate=False):
        root.addHandler(handler)
