"""Statistics read from the index: counts, bytes, the modality mix, the senders, and what
arrived per hour or day (``instances.received_at``, indexed with ``size`` by migration 0014).

The summary's totals (bytes, senders, the modality mix) come from a snapshot kept in the
database: ``index/statistics_snapshot.py``.

Time buckets are computed in SQL on both backends: on SQLite ``received_at`` is stored as
ISO text in UTC (``YYYY-MM-DD HH:MM:SS…``), so a bucket is a prefix of it; on PostgreSQL it is
``timestamptz``, formatted in UTC by ``to_char``. Either way a bucket is the text
``YYYY-MM-DD`` or ``YYYY-MM-DD HH`` and the rows are grouped by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, func, literal_column, select

from vesalius.index.schema import instances, series, studies

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
