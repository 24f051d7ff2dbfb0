"""Statistics: counts, disk used and free, ingest per hour and day, modality mix, top senders,
and when the disk fills at the recent pace (``services/statistics.py``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from vesalius.api.deps import ArchiveDep, Who
from vesalius.errors import NotFoundError
from vesalius.services.archive import Archive
from vesalius.services.statistics import MAX_DAYS, StatisticsService

router = APIRouter()


class Disk(BaseModel):
    """The filesystem of the data folder, in bytes."""

    total: int
    used: int
    free: int


class ModalityCount(BaseModel):
    modality: str = Field(description="Modality (0008,0060) of series; empty: not given.")
    studies: int = Field(description="Studies with a series of this modality.")
    instances: int = Field(description="Instances in those series.")


class SenderCount(BaseModel):
    ae_title: str = Field(
        description="Who sent them: the calling AE title of a C-STORE, or the user of a "
        "STOW-RS request, an upload or an import (empty: stored before this was recorded)."
    )
    instances: int
    bytes: int


class Statistics(BaseModel):
    """What the archive holds."""

    patients: int
    studies: int
    series: int
    instances: int
    bytes: int = Field(description="Size of the stored files.")
    disk: Disk | None = Field(description="The data folder's disk (null: unreadable).")
    modalities: list[ModalityCount] = Field(description="Most instances first.")
    senders: list[SenderCount] = Field(description="The top senders, most instances first.")


class IngestPoint(BaseModel):
    time: datetime = Field(description="Start of the hour or day (UTC).")
    instances: int
    bytes: int


class Ingest(BaseModel):
    """What arrived per hour or day, oldest first, empty buckets included."""

    bucket: Literal["hour", "day"]
    points: list[IngestPoint]


class Forecast(BaseModel):
    """When the data folder's disk fills at the pace of the last 30 days."""

    bytes_per_day: float = Field(
        description="Growth: the least-squares slope of the bytes stored at the end of each "
        "day since `since` (instances that arrived then and are still stored)."
    )
    free: int | None = Field(description="Bytes free on the data folder's disk now.")
    days_until_full: float | None = Field(description="null: not growing.")
    full_on: date | None = Field(description="The day it fills (null: not within a century).")
    since: date = Field(description="First day the fit is based on (UTC).")
    days: int = Field(description="Days the fit is based on (30, fewer for a new archive).")
    instances: int = Field(description="Instances that arrived in those days.")
    bytes: int = Field(description="Their bytes.")


def service(archive: Archive) -> StatisticsService:
    if archive.statistics is None:
        raise NotFoundError("statistics are not available on this server")
    return archive.statistics


@router.get(
    "/statistics",
    response_model=Statistics,
    summary="What the archive holds",
    description="Patients, studies, series, instances and bytes stored; the data folder's "
    "disk; the modality mix; the top 10 senders. Needs the `query` permission.",
)
def statistics(archive: ArchiveDep, who: Who) -> Statistics:
    found = service(archive).summary(who)
    return Statistics(
        patients=found.patients,
        studies=found.studies,
        series=found.series,
        instances=found.instances,
        bytes=found.bytes,
        disk=Disk(**vars(found.disk)) if found.disk else None,
        modalities=[
            ModalityCount(modality=t.name, studies=t.studies, instances=t.instances)
            for t in found.modalities
        ],
        senders=[
            SenderCount(ae_title=t.name, instances=t.instances, bytes=t.bytes)
            for t in found.senders
        ],
    )


@router.get(
    "/statistics/ingest",
    response_model=Ingest,
    summary="Ingest per hour or per day",
    description="Instances and bytes that arrived in each hour or day of the last `days` "
    "days (UTC), oldest first; the last bucket is the current one.",
)
def ingest(
    archive: ArchiveDep,
    who: Who,
    bucket: Annotated[Literal["hour", "day"], Query(description="hour or day")] = "day",
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description="How far back.")] = 30,
) -> Ingest:
    points = service(archive).ingest(who, bucket, days)
    return Ingest(
        bucket=bucket,
        points=[IngestPoint(time=p.time, instances=p.instances, bytes=p.bytes) for p in points],
    )


@router.get(
    "/statistics/forecast",
    response_model=Forecast,
    summary="When the disk fills",
    description="A least-squares line through the bytes stored per day over the last 30 "
    "days (from the first arrival for a younger archive), extended until the data folder's "
    "free space is used up. Deletions are not counted: an estimate for planning.",
)
def forecast(archive: ArchiveDep, who: Who) -> Forecast:
    found = service(archive).forecast(who)
    return Forecast(**vars(found))
