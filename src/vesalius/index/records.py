"""Writing the index: recording a stored instance and removing one, with counters kept exact.

Each call runs in one write transaction. Parents (patient, study, series) are created with
``INSERT … ON CONFLICT DO NOTHING`` so concurrent associations storing the same study never
collide; counters move with ``n = n + 1`` so PostgreSQL row locks serialise them correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy import DateTime, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from vesalius.dicom.header import InstanceHeader
from vesalius.dicom.values import fold
from vesalius.errors import DuplicateInstanceError
from vesalius.index.description import description_columns
from vesalius.index.prepared import Prepared
from vesalius.index.schema import instance_metadata, instances, patients, series, studies
from vesalius.index.search import forget, index_patient, note_study

DuplicatePolicy = Literal["replace", "keep", "reject"]


@dataclass(frozen=True)
class BlobInfo:
    """Where and what the stored file is: its key in the blob store ``store`` (an id of
    ``storage/stores.py``), its size and SHA-256."""

    key: str
    size: int
    sha256: str
    store: str


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: the id of its store and its key there."""

    store: str
    key: str


#: What recording an instance did: ``created``; ``replaced`` the stored copy (policy
#: ``replace``); ``kept`` the stored copy, which is identical to the one received; or kept it
#: and ``discarded`` the one received, which differs (policy ``keep``).
Outcome = Literal["created", "replaced", "kept", "discarded"]


@dataclass(frozen=True)
class RecordResult:
    """What recording did, and the blob no longer referenced (to delete), if any."""

    outcome: Outcome
    old_blob: BlobRef | None = None
    #: The blob of the copy already stored, when one was kept (``kept``, ``discarded``).
    stored_blob: BlobRef | None = None


def _insert_ignoring(table: Table, columns: tuple[str, ...], key: list[str]) -> Prepared:
    """An insert that does nothing when a row with the same unique ``key`` exists; its
    ``RETURNING`` row tells whether the row went in (``rowcount`` does not on psycopg)."""

    def build(dialect_name: str) -> Any:
        dialect = postgresql if dialect_name == "postgresql" else sqlite
        return (
            dialect.insert(table)
            .values({name: bindparam(name) for name in columns})
            .on_conflict_do_nothing(index_elements=key)
            .returning(*table.primary_key.columns)
        )

    return Prepared(build)


_PATIENT_KEY = ("patient_id", "issuer_of_patient_id")
_PATIENT_VALUES = (
    "patient_name",
    "patient_name_folded",
    "patient_birth_date",
    "patient_sex",
)
_STUDY_VALUES = (
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician_name",
    "referring_physician_name_folded",
    "study_description_folded",
    "study_description_words",
)
#: Storing an instance moves its study's ``updated_at`` only when the stored one is older than
#: this: each instance of a study arriving within the second leaves the indexed column as it is
#: (the "updated" sort's index, ``ix_studies_updated_at_pk``: no index entry moved, and on
#: PostgreSQL a HOT update). What the list shows is then the last change to within a second.
TOUCH_AFTER = timedelta(seconds=1)
_STALE = bindparam("stale", type_=DateTime(timezone=True))
_SERIES_VALUES = (
    "modality",
    "series_number",
    "series_description",
    "series_date",
    "series_time",
    "body_part_examined",
    "station_name",
    "institution_name",
    "performed_procedure_step_start_date",
    "performed_procedure_step_start_time",
    "requested_procedure_id",
    "scheduled_procedure_step_id",
)
_INSERT_PATIENT = _insert_ignoring(patients, _PATIENT_KEY + _PATIENT_VALUES, list(_PATIENT_KEY))
_INSERT_STUDY = _insert_ignoring(
    studies,
    ("study_uid", "patient_pk", "created_at", "updated_at", *_STUDY_VALUES),
    ["study_uid"],
)
_INSERT_SERIES = _insert_ignoring(
    series, ("series_uid", "study_pk", *_SERIES_VALUES), ["series_uid"]
)
_STORE_METADATA = _insert_ignoring(instance_metadata, ("instance_pk", "json"), ["instance_pk"])
_PATIENT_PK = Prepared(
    select(patients.c.pk).where(
        patients.c.patient_id == bindparam("patient_id"),
        patients.c.issuer_of_patient_id == bindparam("issuer_of_patient_id"),
    )
)
_STUDY_ROW = Prepared(
    select(
        studies.c.pk,
        studies.c.modalities_in_study,
        studies.c.sop_classes_in_study,
        studies.c.updated_at < _STALE,
    )
    .where(studies.c.study_uid == bindparam("uid"))
    .with_for_update()
)
_SERIES_PK = Prepared(select(series.c.pk).where(series.c.series_uid == bindparam("uid")))


def _patient_values(h: InstanceHeader) -> dict[str, Any]:
    return {
        "patient_name": h.patient_name,
        "patient_name_folded": fold(h.patient_name),
        "patient_birth_date": h.patient_birth_date,
        "patient_sex": h.patient_sex,
    }


def _study_values(h: InstanceHeader) -> dict[str, Any]:
    return {
        "study_date": h.study_date,
        "study_time": h.study_time,
        "accession_number": h.accession_number,
        "study_id": h.study_id,
        "study_description": h.study_description,
        "referring_physician_name": h.referring_physician_name,
        "referring_physician_name_folded": fold(h.referring_physician_name),
        **description_columns(h.study_description),
    }


def _series_values(h: InstanceHeader) -> dict[str, Any]:
    return {
        "modality": h.modality,
        "series_number": h.series_number,
        "series_description": h.series_description,
        "series_date": h.series_date,
        "series_time": h.series_time,
        "body_part_examined": h.body_part_examined,
        "station_name": h.station_name,
        "institution_name": h.institution_name,
        "performed_procedure_step_start_date": h.performed_procedure_step_start_date,
        "performed_procedure_step_start_time": h.performed_procedure_step_start_time,
        "requested_procedure_id": h.requested_procedure_id,
        "scheduled_procedure_step_id": h.scheduled_procedure_step_id,
    }


def _instance_values(h: InstanceHeader, blob: BlobInfo, source_ae: str) -> dict[str, Any]:
    return {
        "sop_class_uid": h.sop_class_uid,
        "instance_number": h.instance_number,
        "content_date": h.content_date,
        "content_time": h.content_time,
        "rows": h.rows,
        "columns": h.columns,
        "number_of_frames": h.number_of_frames,
        "transfer_syntax_uid": h.transfer_syntax_uid,
        "specific_character_set": h.specific_character_set,
        "blob_key": blob.key,
        "blob_store": blob.store,
        "size": blob.size,
        "sha256": blob.sha256,
        "source_ae": source_ae,
        "received_at": datetime.now(UTC),
    }


def _add_to_list(current: str, value: str) -> str | None:
    """Backslash-joined sorted set with ``value`` added, or None when already present."""
    items = [v for v in current.split("\\") if v]
    if not value or value in items:
        return None
    return "\\".join(sorted([*items, value]))


# The statements every instance runs: compiled once and run on the driver's cursor
# (index/prepared.py). Their results are integers and text, which need no type processing.
_EXISTING = Prepared(
    select(
        instances.c.pk,
        instances.c.series_pk,
        instances.c.blob_key,
        instances.c.sha256,
        instances.c.blob_store,
    ).where(instances.c.sop_instance_uid == bindparam("uid"))
)
_KNOWN_SERIES = Prepared(
    select(
        series.c.pk,
        studies.c.pk.label("study_pk"),
        studies.c.patient_pk,
        studies.c.modalities_in_study,
        studies.c.sop_classes_in_study,
        studies.c.updated_at < _STALE,
    )
    .select_from(series.join(studies))
    .where(series.c.series_uid == bindparam("uid"))
    .with_for_update(of=studies)  # PostgreSQL: serialise edits of the study's lists
)
_COUNT_SERIES = Prepared(
    update(series)
    .where(series.c.pk == bindparam("key"))
    .values(num_instances=series.c.num_instances + 1)
)
_COUNT_STUDY = Prepared(
    update(studies)
    .where(studies.c.pk == bindparam("key"))
    .values(num_instances=studies.c.num_instances + 1)
)
_COUNT_STUDY_TOUCH = Prepared(
    update(studies)
    .where(studies.c.pk == bindparam("key"))
    .values(num_instances=studies.c.num_instances + 1, updated_at=bindparam("now"))
)
_COUNT_PATIENT = Prepared(
    update(patients)
    .where(patients.c.pk == bindparam("key"))
    .values(
        num_instances=patients.c.num_instances + 1,
        num_series=patients.c.num_series + bindparam("new_series"),
        num_studies=patients.c.num_studies + bindparam("new_studies"),
    )
)
_INSTANCE_COLUMNS = (
    "series_pk",
    "sop_instance_uid",
    "sop_class_uid",
    "instance_number",
    "content_date",
    "content_time",
    "rows",
    "columns",
    "number_of_frames",
    "transfer_syntax_uid",
    "specific_character_set",
    "blob_key",
    "blob_store",
    "size",
    "sha256",
    "source_ae",
    "received_at",
)
_INSERT_INSTANCE = Prepared(
    instances.insert()
    .values({name: bindparam(name) for name in _INSTANCE_COLUMNS})
    .returning(instances.c.pk)
)
_INSERT_METADATA = Prepared(
    instance_metadata.insert().values(instance_pk=bindparam("pk"), json=bindparam("json"))
)


class _Study(NamedTuple):
    study_pk: int
    modalities_in_study: str
    sop_classes_in_study: str
    #: Its ``updated_at`` is older than :data:`TOUCH_AFTER` (to move).
    stale: Any


def _known_series(
    conn: Connection, series_uid: str, now: datetime
) -> tuple[int, _Study, int] | None:
    """(patient key, study, series key) of a known series, or None when the series is new."""
    rows = _KNOWN_SERIES.run(conn, {"uid": series_uid, "stale": now - TOUCH_AFTER})
    if not rows:
        return None
    series_pk, study_pk, patient_pk, modalities, sop_classes, stale = rows[0]
    return patient_pk, _Study(study_pk, modalities, sop_classes, stale), series_pk


def _ensure_parents(
    conn: Connection, h: InstanceHeader, now: datetime, *, update_patient: bool
) -> tuple[int, _Study, int, bool, bool]:
    """Create (or find) patient, study and series; returns their keys and what was created.
    A study made is noted for the search indexer (:mod:`vesalius.index.search`)."""
    patient_key = {"patient_id": h.patient_id, "issuer_of_patient_id": h.issuer_of_patient_id}
    _INSERT_PATIENT.run(conn, {**patient_key, **_patient_values(h)})
    patient_pk = int(_PATIENT_PK.run(conn, patient_key)[0][0])
    if update_patient:
        conn.execute(update(patients).where(patients.c.pk == patient_pk).values(_patient_values(h)))
    study_created = bool(
        _INSERT_STUDY.run(
            conn,
            {
                "study_uid": h.study_uid,
                "patient_pk": patient_pk,
                "created_at": now,
                "updated_at": now,
                **_study_values(h),
            },
        )
    )
    study = _Study(*_STUDY_ROW.run(conn, {"uid": h.study_uid, "stale": now - TOUCH_AFTER})[0])
    if study_created:
        note_study(conn, study.study_pk)
    series_created = bool(
        _INSERT_SERIES.run(
            conn, {"series_uid": h.series_uid, "study_pk": study.study_pk, **_series_values(h)}
        )
    )
    series_pk = int(_SERIES_PK.run(conn, {"uid": h.series_uid})[0][0])
    return patient_pk, study, series_pk, study_created, series_created


def record_instance(
    conn: Connection,
    h: InstanceHeader,
    blob: BlobInfo,
    *,
    policy: DuplicatePolicy,
    source_ae: str = "",
    metadata_json: bytes = b"",
) -> RecordResult:
    """Index one stored instance and its WADO-RS metadata (``metadata_json``, compressed DICOM
    JSON; empty: computed on first request); the caller owns the (write) transaction."""
    found = _EXISTING.run(conn, {"uid": h.sop_instance_uid})
    existing = found[0] if found else None
    if existing is not None:
        if policy == "keep":
            outcome: Outcome = "kept" if existing[3] == blob.sha256 else "discarded"
            return RecordResult(outcome, stored_blob=BlobRef(existing[4], existing[2]))
        if policy == "reject":
            raise DuplicateInstanceError(f"SOP instance {h.sop_instance_uid} already stored")
        delete_instance_row(conn, existing[0])

    now = datetime.now(UTC)
    known = None if existing is not None else _known_series(conn, h.series_uid, now)
    if known is not None:
        # The common case, every instance of a series after its first: the parents exist.
        patient_pk, study, series_pk = known
        study_created = series_created = False
    else:
        patient_pk, study, series_pk, study_created, series_created = _ensure_parents(
            conn, h, now, update_patient=existing is not None
        )
    inserted = _INSERT_INSTANCE.run(
        conn,
        {
            "series_pk": series_pk,
            "sop_instance_uid": h.sop_instance_uid,
            **_instance_values(h, blob, source_ae),
        },
    )
    if metadata_json:
        _INSERT_METADATA.run(conn, {"pk": inserted[0][0], "json": metadata_json})

    _COUNT_SERIES.run(conn, {"key": series_pk})
    study_changes: dict[str, Any] = {}
    if existing is not None:
        study_changes.update(_study_values(h))
    if series_created:
        study_changes["num_series"] = studies.c.num_series + 1
    modalities = _add_to_list(study.modalities_in_study, h.modality)
    if modalities is not None:
        study_changes["modalities_in_study"] = modalities
    sop_classes = _add_to_list(study.sop_classes_in_study, h.sop_class_uid)
    if sop_classes is not None:
        study_changes["sop_classes_in_study"] = sop_classes
    if existing is not None or (study.stale and not study_created):
        _COUNT_STUDY_TOUCH.run(conn, {"key": study.study_pk, "now": now})
    else:  # made now, or changed within the second: updated_at stays (see TOUCH_AFTER)
        _COUNT_STUDY.run(conn, {"key": study.study_pk})
    if study_changes:  # a replaced instance, a new series, a new modality or SOP class
        conn.execute(update(studies).where(studies.c.pk == study.study_pk).values(study_changes))
    _COUNT_PATIENT.run(
        conn,
        {"key": patient_pk, "new_series": int(series_created), "new_studies": int(study_created)},
    )
    if existing is not None:  # the patient's or the study's values may have changed
        index_patient(conn, patient_pk)  # their search terms (a study made has its own)
    if existing is not None:
        return RecordResult("replaced", BlobRef(existing[4], existing[2]))
    return RecordResult("created")


def _recompute_study_lists(conn: Connection, study_pk: int) -> None:
    rows = conn.execute(
        select(series.c.modality, instances.c.sop_class_uid)
        .select_from(series.join(instances))
        .where(series.c.study_pk == study_pk)
        .distinct()
    ).all()
    conn.execute(
        update(studies)
        .where(studies.c.pk == study_pk)
        .values(
            modalities_in_study="\\".join(sorted({r.modality for r in rows if r.modality})),
            sop_classes_in_study="\\".join(sorted({r.sop_class_uid for r in rows})),
            updated_at=datetime.now(UTC),
        )
    )


def delete_instance_row(conn: Connection, instance_pk: int) -> BlobRef:
    """Remove one instance row, fix the counters and drop parents left empty.

    Returns its blob (store id and key), which the caller deletes after the transaction
    commits (``Stores.get(blob.store).delete(blob.key)``).
    """
    row = conn.execute(
        select(
            instances.c.blob_key,
            instances.c.blob_store,
            series.c.pk.label("series_pk"),
            series.c.num_instances.label("series_n"),
            studies.c.pk.label("study_pk"),
            studies.c.num_series.label("study_series_n"),
            studies.c.patient_pk,
        )
        .select_from(instances.join(series).join(studies))
        .where(instances.c.pk == instance_pk)
    ).one()
    conn.execute(instance_metadata.delete().where(instance_metadata.c.instance_pk == instance_pk))
    conn.execute(instances.delete().where(instances.c.pk == instance_pk))
    series_gone = row.series_n <= 1
    study_gone = series_gone and row.study_series_n <= 1
    if series_gone:
        conn.execute(series.delete().where(series.c.pk == row.series_pk))
    else:
        conn.execute(
            update(series)
            .where(series.c.pk == row.series_pk)
            .values(num_instances=series.c.num_instances - 1)
        )
    if study_gone:
        forget(conn, [row.study_pk])
        conn.execute(studies.delete().where(studies.c.pk == row.study_pk))
    else:
        conn.execute(
            update(studies)
            .where(studies.c.pk == row.study_pk)
            .values(
                num_instances=studies.c.num_instances - 1,
                num_series=studies.c.num_series - int(series_gone),
            )
        )
        _recompute_study_lists(conn, row.study_pk)
    conn.execute(
        update(patients)
        .where(patients.c.pk == row.patient_pk)
        .values(
            num_instances=patients.c.num_instances - 1,
            num_series=patients.c.num_series - int(series_gone),
            num_studies=patients.c.num_studies - int(study_gone),
        )
    )
    conn.execute(
        patients.delete().where(patients.c.pk == row.patient_pk, patients.c.num_studies <= 0)
    )
    return BlobRef(str(row.blob_store), str(row.blob_key))


def delete_instance_if_present(conn: Connection, instance_pk: int) -> BlobRef | None:
    """:func:`delete_instance_row` if the row is still there (a retried or concurrent
    deletion); its blob, or None."""
    still = conn.execute(select(instances.c.pk).where(instances.c.pk == instance_pk)).scalar()
    return None if still is None else delete_instance_row(conn, instance_pk)


def store_metadata(conn: Connection, instance_pk: int, metadata_json: bytes) -> None:
    """Keep an instance's WADO-RS metadata computed after ingest (e.g. data from before it
    existed); a concurrent writer's copy wins."""
    _STORE_METADATA.run(conn, {"instance_pk": instance_pk, "json": metadata_json})
