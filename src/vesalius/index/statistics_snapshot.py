"""The statistics snapshot: the summary's totals without reading every instance row.

The bytes stored, the instances and bytes per sender, the instances per modality and the
studies per modality would each need a whole table (1.5 s at a million instances on SQLite).
A :class:`Snapshot` (table ``statistics_snapshots``, shared by every node) keeps them for the
instances that arrived before its ``cutoff``, and for the series up to ``last_series_pk``; a
reader adds what arrived since (:func:`arrived`: a range of the ``received_at`` index) and the
series made since (:func:`studies_now`: a range of the primary key). Ingest writes nothing here.

A snapshot holds while the rows it counted are all still there unchanged and nothing was added
"behind" it (:func:`holds`, and the caller's count of instances):

- what it counted plus what arrived since makes the total of the counters ingest and deletion
  maintain (``patients.num_instances``): a deletion or a replaced instance breaks this (and
  were the counters ever wrong, every reader would compute afresh: slow, still right);
- every instance added since it was taken is stamped at or after its cutoff (a clock behind,
  a transaction that took longer than the margin before the cutoff);
- the series it counted plus those made since are the series there are;
- no correction rewrote files since (their sizes change): none at work, none changed state.

Otherwise the reader computes it afresh (:func:`take`). What these checks cannot see (an
instance stamped behind the cutoff replacing the newest one at once on SQLite, which reuses
the highest key) the caller bounds by taking the snapshot afresh on a schedule.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, exists, func, insert, select

from vesalius.index.schema import (
    corrections,
    instances,
    patients,
    series,
    statistics_snapshots,
)

#: The name of the summary's row in ``statistics_snapshots``.
SUMMARY = "summary"
#: Corrections at work (``index/corrections.py``): they rewrite files, so sizes change. Every
#: file a correction switches (applying, undoing, giving up) is switched in one of these
#: states, and the correction leaves it afterwards.
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
            for key in [k for k, v in into.items() if v == 0]:
                del into[key]
        return out


@dataclass(frozen=True)
class Snapshot:
    """The :class:`Totals` of the instances that arrived before ``cutoff``, as read at
    ``computed_at`` when the highest instance key was ``last_pk``; the ``series`` there were,
    the highest key among them, and per modality the studies with a series of it;
    ``corrections``: how many corrections were in each state."""

    cutoff: datetime
    computed_at: datetime
    totals: Totals
    last_pk: int
    series: int
    last_series_pk: int
    studies: Counter[str]
    corrections: Counter[str]


@dataclass(frozen=True)
class Levels:
    """Entries at each level now."""

    patients: int
    studies: int
    series: int
    instances: int


def consistent(conn: Connection) -> None:
    """Make the reads of ``conn``'s coming transaction see one state of the database: the
    checks compare several statements. SQLite's read transaction already does (WAL);
    PostgreSQL's default, read committed, takes a new view per statement."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")


def levels(conn: Connection) -> Levels:
    """Patients, studies, series and instances, from the counters ingest, deletion and
    corrections maintain on ``patients``: one read of thousands of rows, where counting
    ``series`` alone reads 150,000 at a million instances (30 ms on PostgreSQL)."""
    n, in_studies, in_series, in_instances = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(patients.c.num_studies), 0),
            func.coalesce(func.sum(patients.c.num_series), 0),
            func.coalesce(func.sum(patients.c.num_instances), 0),
        )
    ).one()
    return Levels(int(n), int(in_studies), int(in_series), int(in_instances))


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


def take(conn: Connection, cutoff: datetime, now: datetime, present: Levels) -> Snapshot:
    """Compute the snapshot at ``cutoff`` afresh (``present``: :func:`levels` in the same
    transaction): every instance row is read once (the senders), every series row once (the
    instances per modality), then what arrived at or after ``cutoff`` is taken off."""
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
    return Snapshot(
        cutoff,
        now,
        every.add(arrived(conn, cutoff), -1),
        _last(conn, instances.c.pk),
        present.series,
        _last(conn, series.c.pk),
        _studies_per_modality(conn),
        _corrections(conn),
    )


def fold(
    conn: Connection,
    kept: Snapshot,
    cutoff: datetime,
    now: datetime,
    present: Levels,
    per_modality: Counter[str],
) -> Snapshot:
    """``kept`` moved forward to ``cutoff``: what arrived between the two cutoffs added, the
    series as they are (``present``; ``per_modality``: :func:`studies_now`)."""
    return Snapshot(
        cutoff,
        now,
        kept.totals.add(arrived(conn, kept.cutoff, cutoff)),
        _last(conn, instances.c.pk),
        present.series,
        _last(conn, series.c.pk),
        per_modality,
        kept.corrections,
    )


def holds(conn: Connection, kept: Snapshot, present: Levels) -> bool:
    """Whether ``kept`` may be used, as far as the rows show (the caller checks the count of
    instances against what arrived since): no instance added behind its cutoff, no series
    gone, no file rewritten since (no correction at work, and none changed state: a count
    per state, so no node's clock matters)."""
    added = _count(conn, instances, instances.c.pk > kept.last_pk)
    added_after = _count(
        conn, instances, instances.c.pk > kept.last_pk, instances.c.received_at >= kept.cutoff
    )
    if added != added_after:
        return False
    if present.series != kept.series + _count(conn, series, series.c.pk > kept.last_series_pk):
        return False
    now = _corrections(conn)
    return now == kept.corrections and not any(now[state] for state in _REWRITING)


def studies_now(conn: Connection, kept: Snapshot) -> Counter[str]:
    """Per modality, the studies with a series of it: ``kept``'s, plus the studies whose first
    series of a modality was made since (a range of the series' key, each probing the index
    on ``(study_pk, modality)``)."""
    made, older = series.alias("made"), series.alias("older")
    rows = conn.execute(
        select(made.c.study_pk, made.c.modality).where(
            made.c.pk > kept.last_series_pk,
            ~exists().where(
                older.c.study_pk == made.c.study_pk,
                older.c.modality == made.c.modality,
                older.c.pk <= kept.last_series_pk,
            ),
        )
    )  # no GROUP BY: SQLite would then walk the modality index instead of the key range
    found = Counter(kept.studies)
    for _study, modality in {(study_pk, str(modality or "")) for study_pk, modality in rows}:
        found[modality] += 1
    return found


def load(conn: Connection, name: str = SUMMARY) -> Snapshot | None:
    row = conn.execute(
        select(
            statistics_snapshots.c.cutoff,
            statistics_snapshots.c.computed_at,
            statistics_snapshots.c.payload,
        ).where(statistics_snapshots.c.name == name)
    ).first()
    if row is None:
        return None
    try:
        return _parse(row.cutoff, row.computed_at, json.loads(row.payload))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # written by another version: the reader takes one afresh


def _parse(cutoff: datetime, computed_at: datetime, data: dict[str, Any]) -> Snapshot:
    totals = Totals(
        int(data["instances"]),
        int(data["bytes"]),
        Counter({k: int(v[0]) for k, v in data["senders"].items()}),
        Counter({k: int(v[1]) for k, v in data["senders"].items()}),
        Counter({k: int(v) for k, v in data["modalities"].items()}),
    )
    return Snapshot(
        _aware(cutoff),
        _aware(computed_at),
        totals,
        int(data["last_pk"]),
        int(data["series"]),
        int(data["last_series_pk"]),
        Counter({k: int(v) for k, v in data["studies"].items()}),
        Counter({k: int(v) for k, v in data["corrections"].items()}),
    )


def save(conn: Connection, taken: Snapshot, name: str = SUMMARY) -> None:
    """Keep ``taken`` (the caller's write transaction) in place of the one kept before."""
    t = taken.totals
    payload = {
        "instances": t.instances,
        "bytes": t.bytes,
        "senders": {k: [t.senders[k], t.sender_bytes[k]] for k in t.senders},
        "modalities": dict(t.modalities),
        "last_pk": taken.last_pk,
        "series": taken.series,
        "last_series_pk": taken.last_series_pk,
        "studies": dict(taken.studies),
        "corrections": dict(taken.corrections),
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


def _studies_per_modality(conn: Connection) -> Counter[str]:
    """Distinct ``(study_pk, modality)`` pairs of series per modality, from the index on them
    alone."""
    pairs = (
        select(series.c.study_pk, series.c.modality)
        .group_by(series.c.study_pk, series.c.modality)
        .subquery()
    )
    rows = conn.execute(select(pairs.c.modality, func.count()).group_by(pairs.c.modality))
    return Counter({str(modality or ""): int(n) for modality, n in rows})


def _corrections(conn: Connection) -> Counter[str]:
    """Corrections per state (a small table, its index on ``(state, created_at)``)."""
    rows = conn.execute(select(corrections.c.state, func.count()).group_by(corrections.c.state))
    return Counter({str(state): int(n) for state, n in rows if n})


def _last(conn: Connection, key: Any) -> int:
    return int(conn.execute(select(func.coalesce(func.max(key), 0))).scalar_one())


def _count(conn: Connection, table: Any, *where: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _aware(moment: datetime) -> datetime:
    """SQLite gives naive datetimes back; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
