"""The audit trail in the index: records chained by hash, checked, and searched.

Each row's ``hash`` is SHA-256 of the previous row's hash (hex; empty before the first) and
the row's canonical record (JSON, sorted keys, UTF-8): a row changed, removed or slipped in
breaks every hash after it. Writers serialize on the chain inside their insert transaction:
PostgreSQL with a transaction-scoped advisory lock (several processes and nodes), SQLite by its
one write transaction (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, select, text

from vesalius.index.schema import audit_records, audit_subjects

#: The advisory lock key writers of the chain take on PostgreSQL ("VESAUDIT" in ASCII,
#: as a signed 64-bit number).
CHAIN_LOCK = 0x5645534155444954


@dataclass(frozen=True)
class AuditRecord:
    """One audit record: when, what (the event kind and the A.5 message it became), how it
    ended, who from where, the patients and studies it names, its details, and the message's
    XML (empty for events no A.5 message describes)."""

    time: str
    kind: str
    message: str
    outcome: str
    who: str
    host: str
    patients: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    xml: str = ""

    def canonical(self) -> str:
        """The record as the chain hashes it: JSON, sorted keys, no spaces."""
        return json.dumps(
            {
                "time": self.time,
                "kind": self.kind,
                "message": self.message,
                "outcome": self.outcome,
                "who": self.who,
                "host": self.host,
                "patients": list(self.patients),
                "studies": list(self.studies),
                "details": self.details,
                "xml": self.xml,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )

    @classmethod
    def from_canonical(cls, record: str) -> AuditRecord:
        data = json.loads(record)
        return cls(
            time=data["time"],
            kind=data["kind"],
            message=data["message"],
            outcome=data["outcome"],
            who=data["who"],
            host=data["host"],
            patients=tuple(data["patients"]),
            studies=tuple(data["studies"]),
            details=data["details"],
            xml=data["xml"],
        )


def chain_hash(previous: str, canonical: str) -> str:
    """SHA-256(previous hash || canonical record), hex."""
    return hashlib.sha256(previous.encode("ascii") + canonical.encode("utf-8")).hexdigest()


def append(conn: Connection, records: Sequence[AuditRecord]) -> None:
    """Add ``records`` at the end of the chain, in the caller's write transaction."""
    if not records:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _signed(CHAIN_LOCK)})
    previous = conn.execute(
        select(audit_records.c.hash).order_by(audit_records.c.pk.desc()).limit(1)
    ).scalar_one_or_none()
    previous = previous or ""
    rows: list[dict[str, Any]] = []
    for record in records:
        canonical = record.canonical()
        previous = chain_hash(previous, canonical)
        rows.append(
            {
                "time": record.time,
                "kind": record.kind,
                "message": record.message,
                "outcome": record.outcome,
                "who": record.who[:256],
                "host": record.host[:256],
                "record": canonical,
                "hash": previous,
            }
        )
    # One many-row INSERT (SQLAlchemy's insertmanyvalues), its keys in the rows' order.
    keys = conn.execute(
        insert(audit_records).returning(audit_records.c.pk, sort_by_parameter_order=True), rows
    ).scalars()
    subjects = [
        {"record_pk": pk, "subject": kind, "value": value}
        for pk, record in zip(keys, records, strict=True)
        for kind, values in (("patient", record.patients), ("study", record.studies))
        for value in dict.fromkeys(values)
    ]
    if subjects:
        conn.execute(insert(audit_subjects), subjects)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: how many records it checked, and the first broken one
    (its number and why), if any."""

    checked: int
    broken_pk: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_pk is None


def verify(conn: Connection, batch: int = 1000) -> Verification:
    """Recompute the chain from its first record; stop at the first whose hash, or whose
    query columns or subjects, disagree with its record."""
    previous = ""
    checked = 0
    last_pk = 0
    while True:
        rows = conn.execute(
            select(audit_records)
            .where(audit_records.c.pk > last_pk)
            .order_by(audit_records.c.pk)
            .limit(batch)
        ).all()
        if not rows:
            return Verification(checked)
        subjects = _subjects(conn, rows[0].pk, rows[-1].pk)
        for row in rows:
            problem = _check(row, previous, subjects.get(row.pk, set()))
            if problem:
                return Verification(checked, row.pk, problem)
            previous = row.hash
            last_pk = row.pk
            checked += 1


def _subjects(conn: Connection, first: int, last: int) -> dict[int, set[tuple[str, str]]]:
    found: dict[int, set[tuple[str, str]]] = {}
    rows = conn.execute(
        select(audit_subjects).where(audit_subjects.c.record_pk.between(first, last))
    )
    for row in rows:
        found.setdefault(row.record_pk, set()).add((row.subject, row.value))
    return found


def _check(row: Any, previous: str, subjects: set[tuple[str, str]]) -> str:
    if chain_hash(previous, row.record) != row.hash:
        return "its hash does not match its content and the record before it"
    try:
        record = AuditRecord.from_canonical(row.record)
    except (ValueError, KeyError, TypeError):
        return "its record is not valid JSON of an audit record"
    columns = (row.time, row.kind, row.message, row.outcome, row.who, row.host)
    said = (record.time, record.kind, record.message, record.outcome, record.who[:256])
    if columns[:5] != said or row.host != record.host[:256]:
        return "its columns differ from its record"
    named = {("patient", p) for p in record.patients} | {("study", s) for s in record.studies}
    if subjects != named:
        return "the patients or studies indexed for it differ from its record"
    return ""


@dataclass(frozen=True)
class AuditFilter:
    """What ``vesalius audit`` asks for: records naming a patient or study, by a user (or
    AE title), since a time (ISO 8601, compared as text in UTC), newest first."""

    patient: str = ""
    study: str = ""
    who: str = ""
    since: str = ""
    limit: int = 1000
    #: Only records numbered below this (0: from the newest): the REST API's cursor.
    before: int = 0


def _filtered(query: Any, wanted: AuditFilter) -> Any:
    for subject, value in (("patient", wanted.patient), ("study", wanted.study)):
        if value:
            query = query.where(
                exists().where(
                    and_(
                        audit_subjects.c.record_pk == audit_records.c.pk,
                        audit_subjects.c.subject == subject,
                        audit_subjects.c.value == value,
                    )
                )
            )
    if wanted.who:
        query = query.where(audit_records.c.who == wanted.who)
    if wanted.since:
        query = query.where(audit_records.c.time >= wanted.since)
    return query


def search(conn: Connection, wanted: AuditFilter) -> Iterator[tuple[int, AuditRecord]]:
    """The records ``wanted`` names, newest first, with their numbers."""
    query = _filtered(select(audit_records.c.pk, audit_records.c.record), wanted)
    if wanted.before:
        query = query.where(audit_records.c.pk < wanted.before)
    query = query.order_by(audit_records.c.pk.desc())
    if wanted.limit:
        query = query.limit(wanted.limit)
    for pk, record in conn.execute(query):
        yield pk, AuditRecord.from_canonical(record)


def matching(conn: Connection, wanted: AuditFilter) -> int:
    """How many records ``wanted`` names (whatever its ``before`` and ``limit``)."""
    query = _filtered(select(func.count()).select_from(audit_records), wanted)
    return int(conn.execute(query).scalar_one())


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(audit_records)).scalar_one())
