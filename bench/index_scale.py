"""Scenario 6: the queries of scenario 5 on an index of a million instances, SQLite and PostgreSQL.

No server and no files: the index is populated directly, with SQLAlchemy Core ``executemany``
in large batches inside transactions, writing exactly the rows ingest writes
(``vesalius.index.records.record_instance``): patients, studies, series and instances with
their counters, ModalitiesInStudy and SOPClassesInStudy lists, folded person names; no WADO-RS
metadata rows (ingest may leave them empty too: they are computed on first request). The
synthetic archive is deterministic (seeded): ``index_instances`` instances in studies of 20
instances, 5 studies per patient, 1 to 4 series per study by modality (PET studies carry a CT
series too), names, dates and modalities drawn from fixed lists.

The queries then run in-process through ``archive.query`` (:class:`QueryService`, the path
C-FIND and QIDO-RS take), built by QIDO-RS's own parser, and are timed (p50, p95) to the last
record, once as an unrestricted identity (the system: no label filter) and once as a
radiologist granted access label ``A`` (issue 14: the policy check and the label filter in the
same statement). One study in ten carries label ``A`` and one in ten label ``B`` (not granted),
so the restricted identity sees 90% of the studies. The same is measured on a small index of
20,000 instances (scenario 5's size) for the cost at the normal size. The two backends are the
report's two columns. The SQLite index is cached in the corpus
folder by size, generator and schema revision; the PostgreSQL one is a scratch database
``vesalius_bench_<pid>`` on 127.0.0.1:5432, dropped at the end. After loading, PostgreSQL gets
``ANALYZE`` (autovacuum would do it); SQLite gets nothing, as Vesalius runs no ``ANALYZE``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, Table, create_engine, text

from bench.corpus import (
    CR_IMAGE,
    CT_IMAGE,
    DATE_SPAN_DAYS,
    FIRST_DATE,
    GIVEN,
    MODALITIES,
    MODALITY_WEIGHTS,
    MR_IMAGE,
    SECONDARY_CAPTURE,
    SURNAMES,
)
from bench.scenarios import Context, Row, percentile, rotate

PG_ADMIN_URL = os.environ.get(
    "VESALIUS_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
KINDS = ("vesalius-sqlite", "vesalius-postgresql")
_GENERATOR = 4  # bump when the generated rows change, to invalidate the cached SQLite index
BATCH = 20_000  # rows per executemany
PER_STUDY = 20  # instances per study
STUDIES_PER_PATIENT = 5
SUFFIXES = ("", "SON", "MAN", "ER", "OVA", "EZ", "INI", "ESCU", "BERG", "LEY", "TON", "SKI")
#: Series per study by modality (each divides PER_STUDY); PT studies hold a PT and a CT series.
SERIES_PER_STUDY = {"CT": 4, "MR": 4, "CR": 2, "US": 1, "DX": 2, "MG": 4, "PT": 2, "NM": 2}
SOP_CLASS = {
    "CT": CT_IMAGE,
    "MR": MR_IMAGE,
    "CR": CR_IMAGE,
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
}
MATRIX = {"CT": 512, "MR": 256, "CR": 2048, "US": 640, "DX": 2048, "MG": 3328, "PT": 128, "NM": 128}
BODY_PART = {"CT": "CHEST", "MR": "HEAD", "CR": "CHEST", "US": "ABDOMEN", "DX": "HAND"}
UID_ROOT = "1.2.826.0.1.3680043.10.1138"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


# -- the synthetic archive ------------------------------------------------------------------


@dataclass
class Synthetic:
    """The patient, study and series rows of the synthetic archive (instances are generated
    on the fly from the series), with the counters ingest would have left."""

    instances: int
    patients: list[dict[str, Any]] = field(default_factory=list)
    studies: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)


def plan(instances: int, seed: int) -> Synthetic:
    """Draw the archive: who, when, which modality, how many series."""
    rng = np.random.default_rng(seed)
    n_studies = max(1, instances // PER_STUDY)
    n_patients = max(1, n_studies // STUDIES_PER_PATIENT)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    archive = Synthetic(n_studies * PER_STUDY)
    surnames = rng.integers(len(SURNAMES), size=n_patients)
    suffixes = rng.integers(len(SUFFIXES), size=n_patients)
    givens = rng.integers(len(GIVEN), size=n_patients)
    births = rng.integers(365 * 90, size=n_patients)
    for p in range(n_patients):
        name = f"{SURNAMES[surnames[p]]}{SUFFIXES[suffixes[p]]}^{GIVEN[givens[p]]}"
        archive.patients.append(
            {
                "pk": p + 1,
                "patient_id": f"PID{p:08d}",
                "issuer_of_patient_id": "",
                "patient_name": name,
                "patient_name_folded": name.upper(),
                "patient_birth_date": (date_of(births[p], 1930)),
                "patient_sex": "F" if p % 2 else "M",
                "num_studies": 0,
                "num_series": 0,
                "num_instances": 0,
            }
        )
    days = rng.integers(DATE_SPAN_DAYS, size=n_studies)
    hours = rng.integers(7, 19, size=n_studies)
    minutes = rng.integers(60, size=n_studies)
    owners = rng.integers(n_patients, size=n_studies)
    owners[:n_patients] = np.arange(min(n_patients, n_studies))  # every patient has a study
    modalities = rng.choice(len(MODALITIES), size=n_studies, p=MODALITY_WEIGHTS)
    series_pk = 0
    for s in range(n_studies):
        modality = MODALITIES[int(modalities[s])]
        patient = archive.patients[int(owners[s])]
        day = (FIRST_DATE + timedelta(days=int(days[s]))).strftime("%Y%m%d")
        clock = f"{int(hours[s]):02d}{int(minutes[s]):02d}00"
        study_uid = f"{UID_ROOT}.1.{s + 1}"
        n_series = SERIES_PER_STUDY.get(modality, 2)
        per_series = PER_STUDY // n_series
        kinds = [modality] * n_series
        if modality == "PT":
            kinds[-1] = "CT"  # the attenuation-correction CT of a PET/CT
        for k, series_modality in enumerate(kinds):
            series_pk += 1
            archive.series.append(
                {
                    "pk": series_pk,
                    "study_pk": s + 1,
                    "series_uid": f"{study_uid}.{k + 1}",
                    "modality": series_modality,
                    "series_number": k + 1,
                    "series_description": f"{series_modality} series {k + 1}",
                    "series_date": day,
                    "series_time": clock,
                    "body_part_examined": BODY_PART.get(series_modality, ""),
                    "station_name": f"STATION{s % 7}",
                    "institution_name": "Bench General Hospital",
                    "performed_procedure_step_start_date": day,
                    "performed_procedure_step_start_time": clock,
                    "requested_procedure_id": f"RP{s:07d}",
                    "scheduled_procedure_step_id": f"SPS{s:07d}",
                    "num_instances": per_series,
                }
            )
        patient["num_studies"] += 1
        patient["num_series"] += n_series
        patient["num_instances"] += PER_STUDY
        created = now + timedelta(seconds=s)
        archive.studies.append(
            {
                "pk": s + 1,
                "patient_pk": patient["pk"],
                "study_uid": study_uid,
                "study_date": day,
                "study_time": clock,
                "accession_number": f"ACC{s:08d}",
                "study_id": str(s + 1),
                "study_description": f"Synthetic {modality} study",
                "referring_physician_name": "REFERRER^BENCH",
                "referring_physician_name_folded": "REFERRER^BENCH",
                "modalities_in_study": "\\".join(sorted(set(kinds))),
                "sop_classes_in_study": "\\".join(sorted({SOP_CLASS[m] for m in kinds})),
                "num_series": n_series,
                "num_instances": PER_STUDY,
                "created_at": created,
                "updated_at": created,
            }
        )
    return archive


def date_of(days: Any, year: int) -> str:
    return (datetime(year, 1, 1) + timedelta(days=int(days))).strftime("%Y%m%d")


def instance_rows(archive: Synthetic) -> Iterator[dict[str, Any]]:
    """Every instance row, series after series, as ``record_instance`` writes them."""
    received = datetime(2025, 1, 1, tzinfo=UTC)
    pk = 0
    for se in archive.series:
        modality = se["modality"]
        sop_class = SOP_CLASS.get(modality, SECONDARY_CAPTURE)
        matrix = MATRIX.get(modality, 512)
        size = matrix * matrix * 2 + 1800
        for k in range(se["num_instances"]):
            pk += 1
            mixed = (pk * 0x9E3779B97F4A7C15) & (2**128 - 1)
            yield {
                "pk": pk,
                "series_pk": se["pk"],
                "sop_instance_uid": f"{se['series_uid']}.{k + 1}",
                "sop_class_uid": sop_class,
                "instance_number": k + 1,
                "content_date": se["series_date"],
                "content_time": se["series_time"],
                "rows": matrix,
                "columns": matrix,
                "number_of_frames": None,
                "transfer_syntax_uid": EXPLICIT_LE,
                "specific_character_set": "ISO_IR 100",
                "blob_key": f"{mixed:032x}",
                "size": size,
                "sha256": f"{mixed:032x}{pk:032x}",
                "source_ae": "MODALITY1",
                "received_at": received + timedelta(milliseconds=pk),
            }


# -- loading --------------------------------------------------------------------------------


def _batches(rows: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> Iterator[list[Any]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def populate(url: str, archive: Synthetic, log: Any) -> float:
    """Bulk-insert the archive into the migrated, empty index at ``url``; wall seconds.

    A loader engine of its own, opened as Vesalius opens its index. Plain ``executemany``
    (psycopg 3 pipelines it): SQLAlchemy's multi-row ``INSERT … VALUES`` batching measured 4x
    slower here on PostgreSQL.
    """
    from vesalius.index.database import open_engine

    engine = open_engine(url)
    try:
        return _populate(engine, archive, log)
    finally:
        engine.dispose()


#: The access labels of the synthetic archive (issue 14): study pk modulo 10 -> label.
LABELS = {0: "A", 5: "B"}
#: The label the restricted identity of the benchmark is granted.
GRANTED = "A"
READER = "bench-reader"


def visible(study: dict[str, Any]) -> bool:
    """Whether the restricted identity sees ``study`` (unlabeled, or labeled GRANTED)."""
    return LABELS.get(study["pk"] % 10, GRANTED) == GRANTED


def label_rows(archive: Synthetic) -> list[dict[str, Any]]:
    return [
        {"study_pk": st["pk"], "label": LABELS[st["pk"] % 10]}
        for st in archive.studies
        if st["pk"] % 10 in LABELS
    ]


def study_rows(archive: Synthetic) -> list[dict[str, Any]]:
    """The studies, each with its ``label_set`` (kept by the label writes in Vesalius) and the
    columns derived from its description (written by ingest)."""
    from vesalius.index.description import description_columns

    return [
        {
            **st,
            **description_columns(st["study_description"]),
            "label_set": f" {LABELS[st['pk'] % 10]} " if st["pk"] % 10 in LABELS else "",
        }
        for st in archive.studies
    ]


def _populate(engine: Engine, archive: Synthetic, log: Any) -> float:
    from vesalius.index.schema import instances, patients, series, studies, study_labels
    from vesalius.index.search import index_all

    start = time.perf_counter()
    labels = label_rows(archive)
    tables: list[tuple[Table, Any, int]] = [
        (patients, archive.patients, len(archive.patients)),
        (studies, study_rows(archive), len(archive.studies)),
        (study_labels, labels, len(labels)),
        (series, archive.series, len(archive.series)),
        (instances, instance_rows(archive), archive.instances),
    ]
    for table, rows, total in tables:
        done = 0
        for batch in _batches(rows):
            with engine.execution_options(write=True).begin() as conn:
                conn.execute(table.insert(), batch)
            done += len(batch)
            if done % 200_000 < BATCH or done == total:
                elapsed = time.perf_counter() - start
                log(f"    {engine.dialect.name}: {table.name} {done:,}/{total:,} ({elapsed:.0f} s)")
    with engine.execution_options(write=True).begin() as conn:
        terms = index_all(conn)  # the study list's free text (index/search.py), as 0016 does
    log(f"    {engine.dialect.name}: {terms:,} search terms ({time.perf_counter() - start:.0f} s)")
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table, *_ in tables:
                if table is study_labels:
                    continue  # no serial
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'pk'), "
                        f"(SELECT max(pk) FROM {table.name}))"
                    )
                )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - start


def schema_revision() -> str:
    """The Alembic head of the index migrations (part of the SQLite cache key)."""
    from alembic.script import ScriptDirectory

    from vesalius.index.database import MIGRATIONS

    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())


def open_archive(url: str, data_dir: Path) -> Any:
    """A Vesalius :class:`~vesalius.services.archive.Archive` on ``url`` (migrated)."""
    from vesalius.settings import load_settings
    from vesalius.wiring import assemble

    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir), "database_url": url})
    return assemble(settings).archive


def sqlite_index(ctx: Context, archive: Synthetic, seed: int, workdir: Path) -> tuple[str, float]:
    """A populated SQLite index in ``workdir`` (copied from the cache, or built and cached);
    its URL and the populate time (seconds, as measured when it was built)."""
    cache = ctx.corpora.root / "index"
    key = f"index-{archive.instances}-s{seed}-g{_GENERATOR}-r{schema_revision()}"
    cached, sidecar = cache / f"{key}.sqlite", cache / f"{key}.json"
    if not (cached.is_file() and sidecar.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob(f"index-{archive.instances}-*"):
            stale.unlink()
        building = cache / f"{key}.building"
        for path in cache.glob(f"{key}.building*"):
            path.unlink()
        ctx.log(f"  populating SQLite with {archive.instances:,} instances")
        url = f"sqlite:///{building}"
        vesalius = open_archive(url, workdir / "sqlite-build")
        try:
            seconds = populate(url, archive, ctx.log)
        finally:
            vesalius.close()
        building.replace(cached)
        sidecar.write_text(json.dumps({"populate_s": seconds}))
    seconds = float(json.loads(sidecar.read_text())["populate_s"])
    target = workdir / "index.sqlite"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, target)
    return f"sqlite:///{target}", seconds


# -- PostgreSQL scratch database ------------------------------------------------------------


def pg_scratch() -> tuple[Engine, str] | str:
    """(admin engine, URL of a new empty database), or why PostgreSQL is not usable."""
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means: no PostgreSQL here
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    name = f"vesalius_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    return admin, url


def pg_drop(admin: Engine, url: str) -> None:
    name = url.rsplit("/", 1)[-1]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# -- the queries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One query of scenario 5's shapes on the synthetic archive, as QIDO-RS parameters."""

    name: str
    title: str
    level: str
    params: list[tuple[str, str]]
    pinned: dict[str, str]
    expected: int
    #: Matches for the identity granted label A only.
    restricted: int = 0


def shapes(archive: Synthetic) -> list[Shape]:
    """Scenario 5's query shapes with their expected numbers of matches."""
    import calendar

    studies = archive.studies
    middle = len(studies) // 2
    # The first study from the middle on with several series (as scenario 5's probe has).
    probe = next(
        (st for st in studies[middle:] if st["num_series"] > 1 and visible(st)), studies[middle]
    )
    patient = archive.patients[probe["patient_pk"] - 1]
    owner = {p["pk"]: p for p in archive.patients}
    surname = patient["patient_name"].split("^")[0]
    month = probe["study_date"][:6]
    last = calendar.monthrange(int(month[:4]), int(month[4:]))[1]
    date_range = f"{month}01-{month}{last:02d}"
    offset = min(1000, len(studies) // 2)
    include = [("includefield", "00081030,00080060,00201208")]

    def count(pred: Any) -> int:
        return sum(1 for st in studies if pred(st))

    def seen(pred: Any) -> int:
        return sum(1 for st in studies if pred(st) and visible(st))

    found = [
        Shape(
            "patient-id",
            "PatientID exact",
            "STUDY",
            [("PatientID", patient["patient_id"]), *include],
            {},
            count(lambda st: st["patient_pk"] == patient["pk"]),
        ),
        Shape(
            "patient-name",
            f"PatientName wildcard ({surname}*)",
            "STUDY",
            [("PatientName", f"{surname}*"), *include],
            {},
            count(lambda st: owner[st["patient_pk"]]["patient_name"].startswith(surname)),
        ),
        Shape(
            "study-date",
            "StudyDate range (1 month)",
            "STUDY",
            [("StudyDate", date_range), *include],
            {},
            count(lambda st: st["study_date"][:6] == month),
        ),
        Shape(
            "modality",
            "ModalitiesInStudy = MR",
            "STUDY",
            [("ModalitiesInStudy", "MR"), *include],
            {},
            count(lambda st: "MR" in st["modalities_in_study"].split("\\")),
        ),
        Shape(
            "page",
            f"100 studies at offset {offset}",
            "STUDY",
            [("limit", "100"), ("offset", str(offset)), *include],
            {},
            min(100, len(studies) - offset),
        ),
        Shape(
            "series-of-study",
            "series of one study",
            "SERIES",
            [],
            {"StudyInstanceUID": probe["study_uid"]},
            probe["num_series"],
        ),
    ]
    restricted = {
        "patient-id": seen(lambda st: st["patient_pk"] == patient["pk"]),
        "patient-name": seen(
            lambda st: owner[st["patient_pk"]]["patient_name"].startswith(surname)
        ),
        "study-date": seen(lambda st: st["study_date"][:6] == month),
        "modality": seen(lambda st: "MR" in st["modalities_in_study"].split("\\")),
        "page": min(100, max(0, seen(lambda st: True) - offset)),
        "series-of-study": probe["num_series"],
    }
    return [dataclasses.replace(s, restricted=restricted[s.name]) for s in found]


def identities() -> dict[str, Any]:
    """The unrestricted identity (the system) and the one granted label A only."""
    from vesalius.identity import Identity

    reader = Identity("user", READER, roles=frozenset({"radiologist"}), method="token")
    return {"": Identity.system("bench"), "restricted": reader}


def grant_reader(vesalius: Any) -> None:
    """Grant the restricted identity label A (on a fresh or cached index alike)."""
    from vesalius.services.labels import Grant

    admin = identities()[""]
    vesalius.labels.grant(Grant(GRANTED, "user", READER), admin)


def run_shape(vesalius: Any, shape: Shape, who: Any = None) -> int:
    """Run one query through ``archive.query`` to its last record as ``who`` (default: the
    system, unrestricted); the number of matches."""
    from vesalius.dicomweb.qido import build_query

    level: Any = shape.level
    query = build_query(level, shape.params, shape.pinned, vesalius.query.supported_keys(level))
    return sum(1 for _ in vesalius.query.find(query, who or identities()[""]))


# -- the scenario ---------------------------------------------------------------------------


#: The small index the label filter's cost is also measured on (scenario 5's size).
SMALL_INDEX = 20_000
#: Which backends to load (``VESALIUS_BENCH_INDEX_BACKENDS=sqlite`` skips PostgreSQL's load).
BACKENDS = os.environ.get("VESALIUS_BENCH_INDEX_BACKENDS", "sqlite,postgresql")


def query_1m(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 6: scenario 5's queries on ``index_instances`` instances, SQLite and PostgreSQL,
    unrestricted and as an identity granted one access label; and the same on a small index."""
    sizes = ctx.corpora.sizes
    backends = {b.strip() for b in BACKENDS.split(",") if b.strip()}
    rows = _scale(ctx, sizes.index_instances, sizes.seed, backends)
    if sizes.index_instances > SMALL_INDEX:
        rows += _scale(ctx, SMALL_INDEX, sizes.seed, backends, load_row=False)
    return rows


def _scale(
    ctx: Context, n: int, seed: int, backends: set[str], *, load_row: bool = True
) -> list[Row]:
    ctx.log(f"  planning an archive of {n:,} instances")
    archive = plan(n, seed)
    what = (
        f"{archive.instances:,} instances, {len(archive.series):,} series, "
        f"{len(archive.studies):,} studies, {len(archive.patients):,} patients"
    )
    items = shapes(archive)
    rows: dict[tuple[str, str, str], Row] = {}
    for who in identities():
        for shape in items:
            expected = shape.restricted if who else shape.expected
            matches = "match" if expected == 1 else "matches"
            label = f"{shape.title} ({expected:,} {matches}), {archive.instances:,} instances"
            if who:
                label += ", as a user granted 1 of 2 labels"
            for stat in ("p50", "p95"):
                rows[(shape.name, stat, who)] = Row(
                    "index", "query-1m", label, stat, "ms", stat=stat
                )
    load = Row("index", "query-1m", f"bulk load of {what} (not ingest)", "time", "s")
    workdir = ctx.pool.workdir / f"query-{n}"
    opened: dict[str, Any] = {}
    pg: tuple[Engine, str] | None = None
    try:
        if "sqlite" in backends:
            try:
                url, seconds = sqlite_index(ctx, archive, seed, workdir / "sqlite")
                opened["vesalius-sqlite"] = open_archive(url, workdir / "sqlite-data")
                load.add("vesalius-sqlite", seconds)
            except Exception as exc:
                for row in [load, *rows.values()]:
                    row.notes["vesalius-sqlite"] = f"{type(exc).__name__}: {exc}"
        scratch = pg_scratch() if "postgresql" in backends else "not loaded this run"
        if isinstance(scratch, str):
            for row in [load, *rows.values()]:
                row.notes["vesalius-postgresql"] = scratch
        else:
            pg = scratch
            vesalius = open_archive(pg[1], workdir / "pg-data")
            opened["vesalius-postgresql"] = vesalius
            ctx.log(f"  populating PostgreSQL with {archive.instances:,} instances")
            load.add("vesalius-postgresql", populate(pg[1], archive, ctx.log))
        for kind, values in load.samples.items():
            ctx.log(f"  {kind}: populated in {values[0]:.1f} s")
        for vesalius in opened.values():
            grant_reader(vesalius)
        for rep in range(ctx.repeat):
            for kind in rotate(list(opened), rep):
                _time_shapes(ctx, opened[kind], kind, items, rows)
    finally:
        for vesalius in opened.values():
            vesalius.close()
        if pg is not None:
            pg_drop(*pg)
        shutil.rmtree(workdir, ignore_errors=True)
    return ([load] if load_row else []) + list(rows.values())


def _time_shapes(
    ctx: Context,
    vesalius: Any,
    kind: str,
    items: list[Shape],
    rows: dict[tuple[str, str, str], Row],
) -> None:
    """Time each shape as each identity, the identities taking turns sample by sample (so a
    busy moment of the machine weighs on both alike)."""
    who = identities()
    for shape in items:
        timings: dict[str, list[float]] = {name: [] for name in who}
        for name, identity in who.items():
            expected = shape.restricted if name else shape.expected
            got = run_shape(vesalius, shape, identity)  # warm-up, and the correctness check
            if got != expected:
                note = f"returned {got} matches, expected {expected}"
                rows[(shape.name, "p50", name)].notes[kind] = note
                rows[(shape.name, "p95", name)].notes[kind] = note
        for sample in range(ctx.samples):
            for name in rotate(list(who), sample):
                start = time.perf_counter()
                run_shape(vesalius, shape, who[name])
                timings[name].append((time.perf_counter() - start) * 1000)
        for name, values in timings.items():
            for value in values:
                rows[(shape.name, "p50", name)].add(kind, value)
                rows[(shape.name, "p95", name)].add(kind, value)
            ctx.log(
                f"  {kind} {shape.name}{' ' + name if name else ''}: "
                f"p50 {percentile(values, 50):.2f} ms"
            )
