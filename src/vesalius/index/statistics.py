"""Statistics read from the index: counts, bytes, the modality mix, the senders, and what
arrived per hour or day (``instances.received_at``, indexed with ``size`` by migration 0014).

The bytes, the senders and the instances per modality would need every instance row
(1.5 s at a million instances on SQLite). They are kept in a :class:`Snapshot`
(``statistics_snapshots``, shared by every node) of the instances that arrived before its
``cutoff``; a reader adds what arrived since (:func:`arrived`, a range of the ``received_at``
index). Ingest writes nothing for them. A snapshot holds while the instances it counted are
all still there unchanged and no other instance arrived "before" its cutoff: the instances it
counted plus those that arrived since must make the total of the counters ingest and deletion
maintain (a deletion or a replaced instance breaks it), no instance added since it was taken
may be stamped before its cutoff (:func:`arrived_late`), and no correction may have rewritten
files since (:func:`rewritten_since`). Otherwise the reader computes it afresh
(:func:`snapshot`). Instances stamped before the cutoff and committed more than
``SETTLE`` (services) later, with as many deleted at once, would go unnoticed.

Time buckets are computed in SQL on both backends: on SQLite ``received_at`` is stored as
ISO text in UTC (``YYYY-MM-DD HH:MM:SS…``), so a bucket is a prefix of it; on PostgreSQL it is
``timestamptz``, formatted in UTC by ``to_char``. Either way a bucket is the text
``YYYY-MM-DD`` or ``YYYY-MM-DD HH`` and the rows are grouped by it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, func, insert, literal_column, or_, select

from vesalius.index.schema import (
    corrections,
    instances,
    patients,
    series,
    statistics_snapshots,
    studies,
)

Bucket = Literal["hour", "day"]


@dataclass(frozen=True)
class Tally:
    """A group's studies (modality mix only; 0 for senders), instances and bytes (senders
    only; 0 for modalities)."""

    name: str
    studies: int
    instances: int
    bytes: int


def _bucket_of(dialect: str, bucket: Bucket) -> Any:
    column = instances.c.received_at
    if dialect == "postgresql":
        pattern = "YYYY-MM-DD HH24" if bucket == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", column), literal_column(f"'{pattern}'"))
    return func.substr(column, 1, 13 if bucket == "hour" else 10)


def arrivals(conn: Connection, bucket: Bucket, since: datetime) -> list[tuple[str, int, int]]:
    """``(bucket text, instances, bytes)`` of what arrived at or after ``since`` (UTC), per
    ``bucket``, oldest first; buckets with nothing are absent."""
    key = _bucket_of(conn.dialect.name, bucket).label("bucket")
    rows = conn.execute(
        select(key, func.count(), func.coalesce(func.sum(instances.c.size), 0))
        .where(instances.c.received_at >= since)
        .group_by(key)
        .order_by(key)
    )
    return [(str(name), int(n), int(b)) for name, n, b in rows]


def studies_received_since(conn: Connection, since: datetime) -> dict[str, datetime]:
    """The studies that received instances at or after ``since``, each with its latest
    arrival (a range scan of the ``received_at`` index: what any process or node stored)."""
    rows = conn.execute(
        select(studies.c.study_uid, func.max(instances.c.received_at))
        .select_from(
            instances.join(series, series.c.pk == instances.c.series_pk).join(
                studies, studies.c.pk == series.c.study_pk
            )
        )
        .where(instances.c.received_at >= since)
        .group_by(studies.c.study_uid)
    )
    return {str(uid): latest for uid, latest in rows}


# --- the snapshot -----------------------------------------------------------------------

#: The name of the summary's row in ``statistics_snapshots``.
SUMMARY = "summary"
#: Corrections at work (``index/corrections.py``): they rewrite files, so sizes change.
_REWRITING = ("pending", "undoing")


@dataclass
class Totals:
    """Instances and bytes in all, per sender (``source_ae``) and instances per modality (of
    their series), of some instances."""

    instances: int = 0
    bytes: int = 0
    senders: Counter[str] = field(default_factory=Counter)
    sender_bytes: Counter[str] = field(default_factory=Counter)
    modalities: Counter[str] = field(default_factory=Counter)

    def add(self, other: Totals, sign: int = 1) -> Totals:
        """These totals plus (``sign`` -1: minus) ``other``'s, as new totals."""
        out = Totals(self.instances + sign * other.instances, self.bytes + sign * other.bytes)
        for mine, theirs, into in (
            (self.senders, other.senders, out.senders),
            (self.sender_bytes, other.sender_bytes, out.sender_bytes),
            (self.modalities, other.modalities, out.modalities),
        ):
            into.update(mine)
            for key, value in theirs.items():
                into[key] += sign * value
        for into in (out.senders, out.sender_bytes, out.modalities):
            for key in [k for k, v in into.items() if v == 0]:
                del into[key]
        return out


@dataclass(frozen=True)
class Snapshot:
    """The :class:`Totals` of the instances that arrived before ``cutoff``, as read at
    ``computed_at``, when the highest instance key was ``last_pk``."""

    cutoff: datetime
    computed_at: datetime
    totals: Totals
    last_pk: int


def consistent(conn: Connection) -> None:
    """Make the reads of ``conn``'s coming transaction see one state of the database: a
    snapshot's check compares several statements. SQLite's read transaction already does
    (WAL); PostgreSQL's default, read committed, takes a new view per statement."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")


def arrived(conn: Connection, since: datetime, before: datetime | None = None) -> Totals:
    """The totals of the instances that arrived at or after ``since`` (and before ``before``):
    a range of the ``received_at`` index, each row's sender and series looked up."""
    where = [instances.c.received_at >= since]
    if before is not None:
        where.append(instances.c.received_at < before)
    rows = conn.execute(
        select(
            instances.c.source_ae,
            series.c.modality,
            func.count(),
            func.coalesce(func.sum(instances.c.size), 0),
        )
        .select_from(instances.join(series, series.c.pk == instances.c.series_pk))
        .where(*where)
        .group_by(instances.c.source_ae, series.c.modality)
    )
    totals = Totals()
    for sender, modality, n, size in rows:
        sender, modality, n, size = str(sender or ""), str(modality or ""), int(n), int(size)
        totals.instances += n
        totals.bytes += size
        totals.senders[sender] += n
        totals.sender_bytes[sender] += size
        totals.modalities[modality] += n
    return totals


def snapshot(conn: Connection, cutoff: datetime, now: datetime) -> Snapshot:
    """Compute the snapshot at ``cutoff`` afresh: every instance row is read once (the
    senders), every series row once (the instances per modality), then what arrived at or
    after ``cutoff`` is taken off."""
    every = Totals()
    for sender, n, size in conn.execute(
        select(
            instances.c.source_ae, func.count(), func.coalesce(func.sum(instances.c.size), 0)
        ).group_by(instances.c.source_ae)
    ):
        every.instances += int(n)
        every.bytes += int(size)
        every.senders[str(sender or "")] += int(n)
        every.sender_bytes[str(sender or "")] += int(size)
    for modality, n in conn.execute(
        select(series.c.modality, func.coalesce(func.sum(series.c.num_instances), 0)).group_by(
            series.c.modality
        )
    ):
        every.modalities[str(modality or "")] += int(n)
    return Snapshot(cutoff, now, every.add(arrived(conn, cutoff), -1), last_pk(conn))


def last_pk(conn: Connection) -> int:
    """The highest instance key (0: none)."""
    return int(conn.execute(select(func.coalesce(func.max(instances.c.pk), 0))).scalar_one())


def arrived_late(conn: Connection, taken: Snapshot) -> bool:
    """Whether an instance added after ``taken`` is stamped before its cutoff (a clock
    behind, a transaction that took long): the snapshot did not count it and what arrived
    since does not either. A range of the primary key from ``taken.last_pk``."""
    found = conn.execute(
        select(instances.c.pk)
        .where(instances.c.pk > taken.last_pk, instances.c.received_at < taken.cutoff)
        .limit(1)
    ).first()
    return found is not None


def stored_instances(conn: Connection) -> int:
    """The instances stored, from the counters ingest and deletion maintain on ``patients``
    (a few thousand rows where ``instances`` has millions)."""
    found = conn.execute(select(func.coalesce(func.sum(patients.c.num_instances), 0)))
    return int(found.scalar_one())


def rewritten_since(conn: Connection, moment: datetime) -> bool:
    """Whether a correction may have changed a file's size since ``moment``: one is at work,
    or one finished, was undone or failed after it."""
    found = conn.execute(
        select(corrections.c.pk)
        .where(or_(corrections.c.state.in_(_REWRITING), corrections.c.updated_at >= moment))
        .limit(1)
    ).first()
    return found is not None


def holds(conn: Connection, taken: Snapshot) -> bool:
    """Whether ``taken`` may still be used, as far as the rows show (the count of instances,
    the caller's, checks the rest)."""
    return not rewritten_since(conn, taken.computed_at) and not arrived_late(conn, taken)


def studies_per_modality(conn: Connection) -> dict[str, int]:
    """Per modality, the studies with a series of it: distinct ``(study_pk, modality)`` pairs,
    read from the index on them alone (no series row)."""
    pairs = (
        select(series.c.study_pk, series.c.modality)
        .group_by(series.c.study_pk, series.c.modality)
        .subquery()
    )
    rows = conn.execute(select(pairs.c.modality, func.count()).group_by(pairs.c.modality))
    return {str(modality or ""): int(n) for modality, n in rows}


def level_counts(conn: Connection) -> tuple[int, int, int]:
    """Patients, studies and series (each counted on its narrowest index)."""

    def count(table: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    return count(patients), count(studies), count(series)


def load_snapshot(conn: Connection, name: str = SUMMARY) -> Snapshot | None:
    row = conn.execute(
        select(
            statistics_snapshots.c.cutoff,
            statistics_snapshots.c.computed_at,
            statistics_snapshots.c.payload,
        ).where(statistics_snapshots.c.name == name)
    ).first()
    if row is None:
        return None
    data = json.loads(row.payload)
    totals = Totals(
        int(data["instances"]),
        int(data["bytes"]),
        Counter({k: int(v[0]) for k, v in data["senders"].items()}),
        Counter({k: int(v[1]) for k, v in data["senders"].items()}),
        Counter({k: int(v) for k, v in data["modalities"].items()}),
    )
    return Snapshot(_aware(row.cutoff), _aware(row.computed_at), totals, int(data["last_pk"]))


def save_snapshot(conn: Connection, taken: Snapshot, name: str = SUMMARY) -> None:
    """Keep ``taken`` (the caller's write transaction), in place of the one kept before."""
    t = taken.totals
    payload = {
        "instances": t.instances,
        "bytes": t.bytes,
        "senders": {k: [t.senders[k], t.sender_bytes[k]] for k in t.senders},
        "modalities": dict(t.modalities),
        "last_pk": taken.last_pk,
    }
    conn.execute(delete(statistics_snapshots).where(statistics_snapshots.c.name == name))
    conn.execute(
        insert(statistics_snapshots).values(
            name=name,
            cutoff=taken.cutoff,
            computed_at=taken.computed_at,
            payload=json.dumps(payload, sort_keys=True),
        )
    )


def _aware(moment: datetime) -> datetime:
    """SQLite gives naive datetimes back; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
