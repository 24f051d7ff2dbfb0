"""Scenario 13: the REST API's study list on an index of a million instances, and a study
page of 1,000 instances (issue 15; targets: the list's server time under 150 ms p95, the study
page under 300 ms).

The index is scenario 6's synthetic archive (``bench/index_scale.py``: 1,000,000 instances in
50,000 studies of 20, one study in ten labeled ``A`` and one in ten ``B``), populated the same
way, plus one study of 1,000 instances in 10 series of 100 for the study page. The whole HTTP
application (identity middleware, FastAPI, the browse service, JSON) answers in process through
Starlette's test client, so the time is the server's, without a network; each request is timed
to its last byte. The list requests are what the study list page asks: its first page (50
studies, newest first, with the total), the 21st page through the cursor, each other sort, the
filters, and the first page as a radiologist granted label ``A`` (a bearer token checked per
request, the label condition in the SQL). The study page is its two requests (the study, its
series with each one's first instance), timed one after the other. SQLite (cached index) and
PostgreSQL (a scratch database) are the report's two columns; a ``--quick`` run (a small
index) measures SQLite only, to keep the smoke run short.

The statistics page's requests are timed too (issue 15 follow-up): the summary (the very
first request on the index, which takes the statistics snapshot, on its own row), ingest per
hour and per day, the forecast; at the end, the summary again after the last 12,000
instances are stamped as arriving from now on (what a reader adds to the snapshot at worst
under 100 instances a second).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from bench.index_scale import (
    BACKENDS,
    READER,
    SMALL_INDEX,
    UID_ROOT,
    Synthetic,
    grant_reader,
    open_archive,
    pg_drop,
    pg_scratch,
    plan,
    populate,
    sqlite_index,
)
from bench.scenarios import Context, Row, percentile, rotate

#: The study of the study page: its series and instances per series.
BIG_SERIES, BIG_PER_SERIES = 10, 100
READER_PASSWORD = "bench-reader-password"
#: The statistics page's requests (issue 15 follow-up).
STATS = "/statistics"
#: Instances arrived since the statistics snapshot, at worst: it folds what arrived every
#: minute and leaves the last minute out, so 2 minutes of ingest at 100 instances a second.
RECENT = 12_000


def with_big_study(archive: Synthetic) -> str:
    """Add a patient with one study of ``BIG_SERIES`` x ``BIG_PER_SERIES`` instances; its UID."""
    patient_pk = len(archive.patients) + 1
    study_pk = len(archive.studies) + 1
    series_pk = len(archive.series)
    uid = f"{UID_ROOT}.9.{study_pk}"
    archive.patients.append(
        {
            **archive.patients[0],
            "pk": patient_pk,
            "patient_id": "PIDBIG",
            "patient_name": "BIG^STUDY",
            "patient_name_folded": "BIG^STUDY",
            "num_studies": 1,
            "num_series": BIG_SERIES,
            "num_instances": BIG_SERIES * BIG_PER_SERIES,
        }
    )
    template = archive.studies[0]
    archive.studies.append(
        {
            **template,
            "pk": study_pk,
            "patient_pk": patient_pk,
            "study_uid": uid,
            "accession_number": "ACCBIG",
            "study_description": "Study page benchmark, 1,000 instances",
            "modalities_in_study": "CT",
            "num_series": BIG_SERIES,
            "num_instances": BIG_SERIES * BIG_PER_SERIES,
        }
    )
    for k in range(BIG_SERIES):
        series_pk += 1
        archive.series.append(
            {
                **archive.series[0],
                "pk": series_pk,
                "study_pk": study_pk,
                "series_uid": f"{uid}.{k + 1}",
                "modality": "CT",
                "series_number": k + 1,
                "series_description": f"CT series {k + 1}",
                "num_instances": BIG_PER_SERIES,
            }
        )
    archive.instances += BIG_SERIES * BIG_PER_SERIES
    return uid


@dataclass(frozen=True)
class Request:
    """One request of the scenario: what it is and its path (with its query)."""

    name: str
    title: str
    path: str
    restricted: bool = False


def requests(archive: Synthetic, big: str) -> list[Request]:
    studies = archive.studies
    probe = studies[len(studies) // 2]
    patient = archive.patients[probe["patient_pk"] - 1]
    surname = patient["patient_name"].split("^")[0]
    day = probe["study_date"]
    month = f"{day[:4]}-{day[4:6]}"
    return [
        Request("first", "first page (50, newest first, with the total)", "/studies"),
        Request("deep", "21st page through the cursor", "/studies?cursor="),
        Request("by-name", "sorted by patient name", "/studies?sort=patient_name"),
        Request("by-id", "sorted by patient ID", "/studies?sort=patient_id"),
        Request("by-accession", "sorted by accession", "/studies?sort=accession_number"),
        Request("updated", "most recently updated first", "/studies?sort=-updated"),
        Request("updated-asc", "least recently updated first", "/studies?sort=updated"),
        Request(
            "updated-deep", "most recently updated, 21st page", "/studies?sort=-updated&cursor="
        ),
        Request("name", f"patient name {surname}*", f"/studies?patient_name={surname}*"),
        Request("id", "patient ID exact", f"/studies?patient_id={patient['patient_id']}"),
        Request(
            "month",
            "study date range (1 month)",
            f"/studies?study_date_from={month}-01&study_date_to={month}-28",
        ),
        Request("modality", "modality MR", "/studies?modality=MR"),
        Request("text", f"free text {surname.lower()}", f"/studies?q={surname.lower()}"),
        Request("desc-rare", "description `benchmark` (1 match)", "/studies?description=benchmark"),
        Request("desc-mr", "description `mr` (a word)", "/studies?description=mr"),
        Request("desc-prefix", "description `synthetic m*`", "/studies?description=synthetic%20m*"),
        Request("desc-inside", "description `*page*` (anywhere)", "/studies?description=*page*"),
        Request("restricted", "first page, as a user granted 1 of 2 labels", "/studies", True),
        Request("study", "study page: the study", f"/studies/{big}"),
        Request("series", "study page: its 10 series", f"/studies/{big}/series"),
        Request("statistics", "statistics (counts, bytes, modality mix, top senders)", STATS),
        Request(
            "stats-hour",
            "statistics: ingest per hour, 2 days",
            f"{STATS}/ingest?bucket=hour&days=2",
        ),
        Request(
            "stats-day", "statistics: ingest per day, 30 days", f"{STATS}/ingest?bucket=day&days=30"
        ),
        Request("forecast", "statistics: the disk forecast", f"{STATS}/forecast"),
    ]


def _stamp_recent(url: str) -> None:
    """Stamp the last :data:`RECENT` instances (a tenth of a small index) as arriving from now
    on, 10 ms apart: what a statistics reader adds to the snapshot at worst while 100
    instances a second arrive."""
    from sqlalchemy import bindparam, func, select, update

    from vesalius.index.database import open_engine
    from vesalius.index.schema import instances

    engine = open_engine(url)
    try:
        with engine.execution_options(write=True).begin() as conn:  # SQLite: BEGIN IMMEDIATE
            last = int(conn.execute(select(func.max(instances.c.pk))).scalar_one())
            recent = min(RECENT, last // 10)
            now = datetime.now(UTC)
            conn.execute(
                update(instances)
                .where(instances.c.pk == bindparam("key"))
                .values(received_at=bindparam("moment")),
                [
                    {"key": pk, "moment": now + timedelta(milliseconds=10 * (pk - last + recent))}
                    for pk in range(last - recent + 1, last + 1)
                ],
            )
    finally:
        engine.dispose()


def _client(url: str, data_dir: Path) -> tuple[Any, Any, dict[str, str]]:
    """(the assembly, a test client of the whole HTTP app, the reader's bearer header)."""
    from starlette.testclient import TestClient

    from vesalius.identity import Identity
    from vesalius.settings import load_settings
    from vesalius.wiring import assemble, http_app

    settings = load_settings(
        environ={},
        overrides={"data_dir": str(data_dir), "database_url": url, "log.access": False},
    )
    assembly = assemble(settings)
    archive = assembly.archive
    grant_reader(archive)
    admin = Identity.system("bench")
    archive.accounts.add_user(READER, READER_PASSWORD, frozenset({"radiologist"}), admin)
    _token, bearer = archive.accounts.create_token(READER, admin)
    client = TestClient(http_app(archive, settings), base_url="http://bench")
    return assembly, client, {"Authorization": f"Bearer {bearer}"}


def _cursor(client: Any, sort: str = "-study_date") -> str:
    """The cursor of the 21st page of the study list in ``sort``."""
    cursor = ""
    for _ in range(20):
        params = {"sort": sort, **({"cursor": cursor} if cursor else {})}
        cursor = client.get("/api/v1/studies", params=params).json()["next"]
    return cursor


#: The requests that go on from a cursor (the 21st page), and the sort of that cursor.
DEEP = {"deep": "-study_date", "updated-deep": "-updated"}


def rest_api(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 13 (see the module's text)."""
    sizes = ctx.corpora.sizes
    backends = {b.strip() for b in BACKENDS.split(",") if b.strip()}
    if sizes.index_instances <= SMALL_INDEX:
        backends.discard("postgresql")
    ctx.log(f"  planning an archive of {sizes.index_instances:,} instances and a big study")
    archive = plan(sizes.index_instances, sizes.seed)
    big = with_big_study(archive)
    items = requests(archive, big)
    n = archive.instances - BIG_SERIES * BIG_PER_SERIES
    rows: dict[tuple[str, str], Row] = {}
    first = Request("stats-first", "statistics, the first request on the index", STATS)
    recent = Request(
        "stats-recent",
        f"statistics with {RECENT:,} instances arrived since the snapshot (2 min at 100/s)",
        STATS,
    )
    for item in [
        *items,
        Request("page", "study page of 1,000 instances (both requests)", ""),
        first,
        recent,
    ]:
        where = "" if item.name in ("study", "series", "page") else f", {n:,} instances"
        for stat in ("p50", "p95"):
            rows[(item.name, stat)] = Row(
                "api", "rest-api", f"{item.title}{where}", stat, "ms", stat=stat
            )
    workdir = ctx.pool.workdir / "rest-api"
    opened: dict[str, tuple[Any, Any, dict[str, str]]] = {}
    pg: tuple[Engine, str] | None = None
    urls: dict[str, str] = {}
    try:
        if "sqlite" in backends:
            url, _seconds = sqlite_index(ctx, archive, sizes.seed, workdir / "sqlite")
            opened["vesalius-sqlite"] = _client(url, workdir / "sqlite-data")
            urls["vesalius-sqlite"] = url
        if "postgresql" not in backends:
            for row in rows.values():
                row.notes["vesalius-postgresql"] = "not loaded this run"
        else:
            scratch = pg_scratch()
            if isinstance(scratch, str):
                for row in rows.values():
                    row.notes["vesalius-postgresql"] = scratch
            else:
                pg = scratch
                open_archive(pg[1], workdir / "pg-migrate").close()  # migrate
                ctx.log(f"  populating PostgreSQL with {archive.instances:,} instances")
                populate(pg[1], archive, ctx.log)
                opened["vesalius-postgresql"] = _client(pg[1], workdir / "pg-data")
                urls["vesalius-postgresql"] = pg[1]
        for kind, (_a, client, _h) in opened.items():
            start = time.perf_counter()
            answer = client.get("/api/v1" + STATS)
            took = (time.perf_counter() - start) * 1000
            for stat in ("p50", "p95"):
                rows[(first.name, stat)].add(kind, took)
            ctx.log(
                f"  {kind} statistics, first request: {took:.0f} ms (HTTP {answer.status_code})"
            )
        cursors = {
            kind: {name: _cursor(client, sort) for name, sort in DEEP.items()}
            for kind, (_a, client, _h) in opened.items()
        }
        for rep in range(ctx.repeat):
            for kind in rotate(list(opened), rep):
                _, client, reader = opened[kind]
                _time(ctx, kind, client, reader, items, cursors[kind], rows, big)
        for kind, url in urls.items():
            _stamp_recent(url)
            _, client, _reader = opened[kind]
            client.get("/api/v1" + STATS)  # the snapshot taken afresh, without them
            values = []
            for _ in range(ctx.samples * ctx.repeat):
                start = time.perf_counter()
                client.get("/api/v1" + STATS)
                values.append((time.perf_counter() - start) * 1000)
            for stat in ("p50", "p95"):
                for value in values:
                    rows[(recent.name, stat)].add(kind, value)
            ctx.log(
                f"  {kind} statistics with recent arrivals: p95 {percentile(values, 95):.2f} ms"
            )
    finally:
        for assembly, client, _reader in opened.values():
            client.close()
            assembly.archive.close()
        if pg is not None:
            pg_drop(*pg)
        shutil.rmtree(workdir, ignore_errors=True)
    return list(rows.values())


def _time(
    ctx: Context,
    kind: str,
    client: Any,
    reader: dict[str, str],
    items: list[Request],
    cursors: dict[str, str],
    rows: dict[tuple[str, str], Row],
    big: str,
) -> None:
    def call(item: Request) -> Callable[[], Any]:
        path = "/api/v1" + item.path + cursors.get(item.name, "")
        headers = reader if item.restricted else {}
        return lambda: client.get(path, headers=headers)

    for item in items:
        send = call(item)
        answer = send()  # warm-up, and the check
        if answer.status_code != 200:
            for stat in ("p50", "p95"):
                rows[(item.name, stat)].notes[kind] = f"HTTP {answer.status_code}"
            continue
        values = []
        for _ in range(ctx.samples):
            start = time.perf_counter()
            send()
            values.append((time.perf_counter() - start) * 1000)
        for stat in ("p50", "p95"):
            for value in values:
                rows[(item.name, stat)].add(kind, value)
        body = answer.json()
        total = body.get("total") if isinstance(body, dict) else None
        ctx.log(
            f"  {kind} {item.name}: p50 {percentile(values, 50):.2f} ms, "
            f"p95 {percentile(values, 95):.2f} ms" + (f" (total {total:,})" if total else "")
        )
    study, series = (call(i) for i in items if i.name in ("study", "series"))
    pages = []
    for _ in range(ctx.samples):
        start = time.perf_counter()
        study()
        series()
        pages.append((time.perf_counter() - start) * 1000)
    for stat in ("p50", "p95"):
        for value in pages:
            rows[("page", stat)].add(kind, value)
    ctx.log(f"  {kind} study page ({big}): p95 {percentile(pages, 95):.2f} ms")
