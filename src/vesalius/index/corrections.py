"""The corrections tables, and the index side of a correction: a study's patient and study
values rewritten, the study moved to another patient with every counter kept exact, and an
instance switched to its rewritten file (``services/corrections.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from vesalius.dicom.values import fold
from vesalius.index.description import description_columns
from vesalius.index.schema import (
    correction_files,
    corrections,
    instance_metadata,
    instances,
    patients,
    series,
    studies,
)
from vesalius.index.search import index_patient

#: Index values a correction changes: the patient's, keyed by the API's names.
PATIENT_FIELDS = ("patient_name", "patient_birth_date", "patient_sex")
STUDY_FIELDS = ("accession_number", "study_description")
#: States of a correction still at work (one at a time per study).
BUSY = ("pending", "undoing")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class StudyState:
    """A study and its patient as the index has them."""

    study_pk: int
    study_uid: str
    patient_pk: int
    patient_id: str
    issuer: str
    patient: dict[str, str]  # PATIENT_FIELDS
    study: dict[str, str]  # STUDY_FIELDS
    patient_studies: int
    updated_at: datetime


def study_state(conn: Connection, study_uid: str) -> StudyState | None:
    row = conn.execute(
        select(
            studies.c.pk,
            studies.c.patient_pk,
            studies.c.accession_number,
            studies.c.study_description,
            studies.c.updated_at,
            patients.c.patient_id,
            patients.c.issuer_of_patient_id,
            patients.c.patient_name,
            patients.c.patient_birth_date,
            patients.c.patient_sex,
            patients.c.num_studies,
        )
        .select_from(studies.join(patients))
        .where(studies.c.study_uid == study_uid)
    ).first()
    if row is None:
        return None
    return StudyState(
        int(row.pk),
        study_uid,
        int(row.patient_pk),
        row.patient_id,
        row.issuer_of_patient_id,
        {
            "patient_name": row.patient_name,
            "patient_birth_date": row.patient_birth_date,
            "patient_sex": row.patient_sex,
        },
        {"accession_number": row.accession_number, "study_description": row.study_description},
        int(row.num_studies),
        _utc(row.updated_at),
    )


def find_patient(conn: Connection, patient_id: str, issuer: str) -> tuple[int, dict[str, str]]:
    """(pk, values) of the patient with this ID and issuer; pk 0 when there is none."""
    row = conn.execute(
        select(
            patients.c.pk,
            patients.c.patient_name,
            patients.c.patient_birth_date,
            patients.c.patient_sex,
        ).where(patients.c.patient_id == patient_id, patients.c.issuer_of_patient_id == issuer)
    ).first()
    if row is None:
        return 0, {}
    return int(row.pk), {
        "patient_name": row.patient_name,
        "patient_birth_date": row.patient_birth_date,
        "patient_sex": row.patient_sex,
    }


def patient_studies(conn: Connection, patient_pk: int) -> list[tuple[int, str]]:
    """(pk, Study Instance UID) of every study of a patient."""
    rows = conn.execute(
        select(studies.c.pk, studies.c.study_uid)
        .where(studies.c.patient_pk == patient_pk)
        .order_by(studies.c.pk)
    )
    return [(int(r.pk), str(r.study_uid)) for r in rows]


@dataclass(frozen=True)
class StoredFile:
    """An instance's row: its file and the study it is in."""

    instance_pk: int
    study_pk: int
    blob_key: str
    blob_store: str
    size: int
    sha256: str
    charset: str


def study_files(conn: Connection, study_pks: Sequence[int]) -> list[StoredFile]:
    rows = conn.execute(
        select(
            instances.c.pk,
            series.c.study_pk,
            instances.c.blob_key,
            instances.c.blob_store,
            instances.c.size,
            instances.c.sha256,
            instances.c.specific_character_set,
        )
        .select_from(instances.join(series))
        .where(series.c.study_pk.in_(list(study_pks)))
        .order_by(series.c.study_pk, series.c.pk, instances.c.pk)
    )
    return [StoredFile(*r) for r in rows]


def character_sets(conn: Connection, study_pks: Sequence[int]) -> list[str]:
    """The Specific Character Sets of the studies' instances (each once)."""
    rows = conn.execute(
        select(instances.c.specific_character_set)
        .select_from(instances.join(series))
        .where(series.c.study_pk.in_(list(study_pks)))
        .distinct()
    )
    return [str(r[0]) for r in rows]


def switch_file(
    conn: Connection,
    instance_pk: int,
    expected_key: str,
    blob: tuple[str, str, int, str],
    charset: str,
    metadata_json: bytes,
) -> bool:
    """Point an instance at another file (``blob``: key, store, size, SHA-256) if it still
    points at ``expected_key``, with its WADO-RS metadata; whether it did."""
    key, store, size, sha256 = blob
    done = conn.execute(
        update(instances)
        .where(instances.c.pk == instance_pk, instances.c.blob_key == expected_key)
        .values(
            blob_key=key,
            blob_store=store,
            size=size,
            sha256=sha256,
            specific_character_set=charset,
        )
        .returning(instances.c.pk)
    ).first()
    if done is None:
        return False
    conn.execute(
        update(instance_metadata)
        .where(instance_metadata.c.instance_pk == instance_pk)
        .values(json=metadata_json)
    )
    return True


def current_blob(conn: Connection, instance_pk: int) -> str | None:
    return conn.execute(
        select(instances.c.blob_key).where(instances.c.pk == instance_pk)
    ).scalar_one_or_none()


def _insert_patient_ignoring(conn: Connection, values: dict[str, Any]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(patients)
        .values(values)
        .on_conflict_do_nothing(index_elements=["patient_id", "issuer_of_patient_id"])
    )


def _with_derived(study_values: dict[str, str]) -> dict[str, str]:
    """``study_values`` and the columns derived from the description, when it is among them
    (:mod:`vesalius.index.description`)."""
    if "study_description" not in study_values:
        return study_values
    return {**study_values, **description_columns(study_values["study_description"])}


def assign_patient(
    conn: Connection,
    study_pk: int,
    patient_id: str,
    issuer: str,
    values: dict[str, str],
    study_values: dict[str, str],
) -> None:
    """Give study ``study_pk`` the patient (``patient_id``, ``issuer``) with ``values``
    (PATIENT_FIELDS) and its own ``study_values`` (STUDY_FIELDS): the patient's row is updated,
    or made; a study moving to another patient takes its series and instances counts along, and
    a patient left without studies is removed. One transaction (the caller's)."""
    study = conn.execute(
        select(studies.c.patient_pk, studies.c.num_series, studies.c.num_instances)
        .where(studies.c.pk == study_pk)
        .with_for_update()
    ).one()
    patient_values = {
        "patient_name": values["patient_name"],
        "patient_name_folded": fold(values["patient_name"]),
        "patient_birth_date": values["patient_birth_date"],
        "patient_sex": values["patient_sex"],
    }
    _insert_patient_ignoring(
        conn, {"patient_id": patient_id, "issuer_of_patient_id": issuer, **patient_values}
    )
    target = int(
        conn.execute(
            select(patients.c.pk).where(
                patients.c.patient_id == patient_id, patients.c.issuer_of_patient_id == issuer
            )
        ).scalar_one()
    )
    conn.execute(update(patients).where(patients.c.pk == target).values(patient_values))
    now = datetime.now(UTC)
    conn.execute(
        update(studies)
        .where(studies.c.pk == study_pk)
        .values(patient_pk=target, updated_at=now, **_with_derived(study_values))
    )
    index_patient(conn, target)  # the free text's terms of its studies, this one's too
    old = int(study.patient_pk)
    if old == target:
        return
    conn.execute(
        update(patients)
        .where(patients.c.pk == target)
        .values(
            num_studies=patients.c.num_studies + 1,
            num_series=patients.c.num_series + study.num_series,
            num_instances=patients.c.num_instances + study.num_instances,
        )
    )
    conn.execute(
        update(patients)
        .where(patients.c.pk == old)
        .values(
            num_studies=patients.c.num_studies - 1,
            num_series=patients.c.num_series - study.num_series,
            num_instances=patients.c.num_instances - study.num_instances,
        )
    )
    conn.execute(patients.delete().where(patients.c.pk == old, patients.c.num_studies <= 0))


def touch_studies(conn: Connection, study_pks: Sequence[int]) -> None:
    """Mark studies changed (their ``updated_at``: the ETag and the "updated" sort)."""
    if study_pks:
        conn.execute(
            update(studies)
            .where(studies.c.pk.in_(list(study_pks)))
            .values(updated_at=datetime.now(UTC))
        )


# -- the corrections tables ----------------------------------------------------------------


@dataclass(frozen=True)
class CorrectionRow:
    pk: int
    study_uid: str
    changes: dict[str, dict[str, str]]
    previous: dict[str, Any]
    applied: dict[str, Any]
    state: str
    reason: str
    message: str
    job_pk: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime


_CORRECTION = (
    corrections.c.pk,
    corrections.c.study_uid,
    corrections.c.changes,
    corrections.c.previous,
    corrections.c.applied,
    corrections.c.state,
    corrections.c.reason,
    corrections.c.message,
    corrections.c.job_pk,
    corrections.c.created_by,
    corrections.c.created_at,
    corrections.c.updated_at,
)


def _correction(r: Any) -> CorrectionRow:
    return CorrectionRow(
        int(r.pk),
        r.study_uid,
        json.loads(r.changes),
        json.loads(r.previous),
        json.loads(r.applied),
        r.state,
        r.reason,
        r.message,
        None if r.job_pk is None else int(r.job_pk),
        r.created_by,
        _utc(r.created_at),
        _utc(r.updated_at),
    )


def add_correction(
    conn: Connection,
    study_uid: str,
    changes: dict[str, dict[str, str]],
    previous: dict[str, Any],
    applied: dict[str, Any],
    reason: str,
    created_by: str,
) -> int:
    now = datetime.now(UTC)
    return int(
        conn.execute(
            insert(corrections)
            .values(
                study_uid=study_uid,
                changes=json.dumps(changes, sort_keys=True),
                previous=json.dumps(previous, sort_keys=True),
                applied=json.dumps(applied, sort_keys=True),
                state="pending",
                reason=reason,
                created_by=created_by,
                created_at=now,
                updated_at=now,
            )
            .returning(corrections.c.pk)
        ).scalar_one()
    )


def get_correction(conn: Connection, pk: int) -> CorrectionRow | None:
    row = conn.execute(select(*_CORRECTION).where(corrections.c.pk == pk)).first()
    return None if row is None else _correction(row)


def list_corrections(
    conn: Connection, study_uid: str, limit: int, before: int | None
) -> tuple[list[CorrectionRow], int]:
    """A study's corrections, newest first (``before``: below this pk), and how many in all."""
    where = corrections.c.study_uid == study_uid
    query = select(*_CORRECTION).where(where)
    if before is not None:
        query = query.where(corrections.c.pk < before)
    rows = conn.execute(query.order_by(corrections.c.pk.desc()).limit(limit)).all()
    total = conn.execute(select(func.count()).select_from(corrections).where(where)).scalar_one()
    return [_correction(r) for r in rows], int(total)


def latest_correction(conn: Connection, study_uid: str) -> CorrectionRow | None:
    row = conn.execute(
        select(*_CORRECTION)
        .where(corrections.c.study_uid == study_uid, corrections.c.state != "failed")
        .order_by(corrections.c.pk.desc())
        .limit(1)
    ).first()
    return None if row is None else _correction(row)


def busy_correction(conn: Connection, study_uids: Sequence[str]) -> int | None:
    """A correction at work on one of ``study_uids`` (pending or undoing), if any."""
    return conn.execute(
        select(corrections.c.pk)
        .where(corrections.c.study_uid.in_(list(study_uids)), corrections.c.state.in_(BUSY))
        .limit(1)
    ).scalar_one_or_none()


def set_correction(conn: Connection, pk: int, **values: Any) -> None:
    conn.execute(
        update(corrections)
        .where(corrections.c.pk == pk)
        .values(updated_at=datetime.now(UTC), **values)
    )


def expired_corrections(conn: Connection, before: datetime, limit: int = 100) -> list[int]:
    """Applied corrections made before ``before``, whose kept files are to purge."""
    rows = conn.execute(
        select(corrections.c.pk)
        .where(
            corrections.c.state == "applied",
            corrections.c.created_at < before,
        )
        .order_by(corrections.c.pk)
        .limit(limit)
    )
    return [int(r.pk) for r in rows]


@dataclass(frozen=True)
class FileRow:
    pk: int
    instance_pk: int
    old: tuple[str, str, int, str]  # key, store, size, SHA-256
    old_charset: str
    new_key: str
    new_store: str
    state: str


def file_rows(conn: Connection, correction_pk: int) -> list[FileRow]:
    c = correction_files.c
    rows = conn.execute(
        select(
            c.pk,
            c.instance_pk,
            c.old_blob_key,
            c.old_blob_store,
            c.old_size,
            c.old_sha256,
            c.old_charset,
            c.new_blob_key,
            c.new_blob_store,
            c.state,
        )
        .where(c.correction_pk == correction_pk)
        .order_by(c.pk)
    )
    return [
        FileRow(
            int(r.pk),
            int(r.instance_pk),
            (r.old_blob_key, r.old_blob_store, int(r.old_size), r.old_sha256),
            r.old_charset,
            r.new_blob_key,
            r.new_blob_store,
            r.state,
        )
        for r in rows
    ]


def note_file(
    conn: Connection, correction_pk: int, stored: StoredFile, new_key: str, new_store: str
) -> int:
    """Note, before its new file is written, that an instance is being rewritten."""
    return int(
        conn.execute(
            insert(correction_files)
            .values(
                correction_pk=correction_pk,
                instance_pk=stored.instance_pk,
                old_blob_key=stored.blob_key,
                old_blob_store=stored.blob_store,
                old_size=stored.size,
                old_sha256=stored.sha256,
                old_charset=stored.charset,
                new_blob_key=new_key,
                new_blob_store=new_store,
                state="pending",
            )
            .returning(correction_files.c.pk)
        ).scalar_one()
    )


def set_file(conn: Connection, pk: int, state: str) -> None:
    conn.execute(update(correction_files).where(correction_files.c.pk == pk).values(state=state))


def drop_file(conn: Connection, pk: int) -> None:
    conn.execute(correction_files.delete().where(correction_files.c.pk == pk))
