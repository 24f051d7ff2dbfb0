"""The index facade the services use: transactions and the write/read operations on them."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from vesalius.dicom.header import InstanceHeader
from vesalius.errors import OutOfResourcesError
from vesalius.index.database import WriterGate, migrate, open_engine, writer_gate
from vesalius.index.labels import add_labels
from vesalius.index.records import (
    BlobInfo,
    DuplicatePolicy,
    RecordResult,
    record_instance,
)
from vesalius.index.schema import instances


class Catalog:
    """The SQL index of what is stored. One per process; thread-safe through the engine pool."""

    def __init__(self, engine: Engine, gate: WriterGate | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.gate = gate
        self._writer = engine.execution_options(write=True)
        self._quick: Engine | None = None
        self._quick_made = threading.Lock()

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True) -> Catalog:
        engine = open_engine(url)
        if run_migrations:
            migrate(engine)
        return cls(engine, writer_gate(url))

    def close(self) -> None:
        self.engine.dispose()
        if self._quick is not None:
            self._quick.dispose()
        if self.gate is not None:
            self.gate.close()

    @property
    def quick_reads(self) -> bool:
        """Whether :meth:`quick_read` is offered: a SQLite file, where a point read is
        answered from the process's page cache in tens of microseconds and never waits for
        a writer (WAL). Not PostgreSQL (a network round trip), nor an in-memory database."""
        database = self.engine.url.database or ""
        return (
            self.dialect == "sqlite"
            and database not in ("", ":memory:")
            and "mode=memory" not in str(self.engine.url)
        )

    @contextmanager
    def quick_read(self) -> Iterator[Connection]:
        """A read on the calling thread's own connection (one per thread, never waiting for
        the pool), for a point read the event loop may make itself (``quick_reads``)."""
        with self._quick_made:
            if self._quick is None:
                url = self.engine.url.render_as_string(hide_password=False)
                self._quick = open_engine(url, per_thread=True)
        with self._quick.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success."""
        try:
            with (
                self.gate.hold() if self.gate is not None else nullcontext(),
                self._writer.begin() as conn,
            ):
                yield conn
        except OperationalError as exc:
            raise OutOfResourcesError(f"index unavailable: {exc.orig}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self.engine.connect() as conn:
            yield conn

    def record(
        self,
        header: InstanceHeader,
        blob: BlobInfo,
        policy: DuplicatePolicy,
        source_ae: str,
        metadata_json: bytes = b"",
        labels: Collection[str] = (),
    ) -> RecordResult:
        """Record one instance; ``labels`` (access labels, ``index/labels.py``) are given
        to its study in the same transaction, so it is never visible without them."""
        for attempt in range(3):
            try:
                with self.write() as conn:
                    result = record_instance(
                        conn,
                        header,
                        blob,
                        policy=policy,
                        source_ae=source_ae,
                        metadata_json=metadata_json,
                    )
                    if labels:
                        add_labels(conn, header.study_uid, labels)
                    return result
            except IntegrityError:
                # Two associations stored the same new SOP instance at once (PostgreSQL):
                # the loser retries and now sees the winner's row.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def count_instances(self) -> int:
        with self.read() as conn:
            return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())
