"""Which HTTP request or DIMSE association a log line comes from.

A base module (like ``errors``), so that the front doors can name the exchange they serve
without importing the wiring: the HTTP host binds a request id for each request
(``web/access.py``), the DIMSE server an association id for each connection
(``dimse/server.py``), and ``vesalius.logs`` puts the one in force on every line logged
meanwhile (docs/operations.md, "Logs"). A :mod:`contextvars` variable, so it follows a request
through ``await`` and into the threads Starlette runs handlers in, and stays apart between
the threads that serve associations.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar

#: The field a request id is logged under.
REQUEST = "request_id"
#: The field an association id is logged under.
ASSOCIATION = "assoc_id"
#: The field a job's number is logged under (lines of a job a runner runs).
JOB = "job_id"
#: Every field an id is logged under, in the order of a line.
FIELDS = (REQUEST, ASSOCIATION, JOB)

_current: ContextVar[tuple[str, str] | None] = ContextVar("vesalius_log_id", default=None)


def new_id() -> str:
    """A fresh id: 12 hex digits of a random UUID (unique enough to find one exchange in a
    day's log, short enough to read)."""
    return uuid.uuid4().hex[:12]


def current() -> tuple[str, str] | None:
    """The ``(field, id)`` in force here, if any."""
    return _current.get()


#: Called with ``(field, id)`` when a block bound to it ends: the audit trail writes what it
#: gathered for that association or request (``services/audit_trail.py``).
_on_end: list[Callable[[tuple[str, str]], None]] = []


def on_end(callback: Callable[[tuple[str, str]], None]) -> None:
    """Call ``callback`` whenever an exchange ends (see :func:`bound`)."""
    _on_end.append(callback)


def forget(callback: Callable[[tuple[str, str]], None]) -> None:
    with suppress(ValueError):
        _on_end.remove(callback)


@contextmanager
def bound(field: str, value: str) -> Iterator[str]:
    """Log lines within this block carry ``field=value``; when it ends, the exchange is over."""
    token = _current.set((field, value))
    try:
        yield value
    finally:
        _current.reset(token)
        for callback in _on_end:
            callback((field, value))
