"""Corrections of patient and study attributes: Patient's Name, Patient ID, Patient's Birth
Date, Patient's Sex, Accession Number and Study Description, in the index and in every stored
file they concern, with undo.

What a correction covers: the study's own attributes concern its files only. The patient's
name, birth date and sex are the patient's: they change in the patient's row and in the files
of every study of that patient, so the index and the files agree. A new Patient ID moves the
study alone: to the patient who has that ID (the study's files then take that patient's name,
birth date and sex; other values given are a conflict, 409, since they would contradict the
patient's other studies), or to a new patient. Counters move along and a patient left without
studies is removed (``index/corrections.py``).

How a file is rewritten: the few elements change, every other byte (the pixel data included)
is copied (``dicom/rewrite.py``) into a new blob; the instance's row is switched to it, with its
size, SHA-256 and WADO-RS metadata, in one transaction. The previous blob is kept for
``corrections.keep_days`` so the correction can be undone, then purged by :meth:`purge` (run by
every job runner's housekeeping) through the deletion notes. Undo switches the rows back to the
kept blobs and restores the index values. Both run as jobs (kinds ``correction``,
``correction-undo``; action ``admin``), with progress; a correction that fails for good puts
back what it had switched. Audited as ``study-corrected`` / ``study-correction-undone`` (PS3.15
A.5.3.4 DICOM Instances Accessed, action Update) and, where the patient's attributes changed,
``patient-record-updated`` (A.5.3.9 Patient Record, action Update). The transaction that applies
a correction, or ends its undo, notes each study concerned in the change feed
(``index/changes.py``), which the live updates of every node read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from vesalius.dicom.rewrite import check_encodable, rewrite_attributes
from vesalius.errors import InvalidDataError, NotFoundError, VesaliusError
from vesalius.identity import Identity
from vesalius.index import changes
from vesalius.index import corrections as table
from vesalius.index import jobs as job_table
from vesalius.index.catalog import Catalog
from vesalius.index.corrections import CorrectionRow, StoredFile, StudyState
from vesalius.services.jobs import (
    JobCancelled,
    JobContext,
    JobFailed,
    JobInterrupted,
    JobRow,
    JobService,
)
from vesalius.services.metadata import read_with_metadata
from vesalius.services.oversight import Oversight
from vesalius.services.policy import Resource
from vesalius.storage import Spool, Stores, new_blob_key

log = logging.getLogger(__name__)

KIND = "correction"
UNDO_KIND = "correction-undo"
#: The attributes a correction may change: the API's name -> DICOM keyword.
FIELDS: dict[str, str] = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "accession_number": "AccessionNumber",
    "study_description": "StudyDescription",
}
#: Longest value of each (PS3.5 6.2: SH 16, LO 64; PN 64 per component group).
_MAX = {"patient_id": 64, "accession_number": 16, "study_description": 64}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class ConflictError(VesaliusError):
    """The change contradicts the archive as it is (HTTP 409)."""

    http_status = 409


@dataclass(frozen=True)
class Correction:
    """A correction and the job doing it (or its undo)."""

    row: CorrectionRow
    job: JobRow | None


def normalise(field: str, value: str) -> str:
    """``value`` of ``field`` as stored in DICOM; :class:`InvalidDataError` (400) says why
    not (PS3.5 6.2 value representations)."""
    if field not in FIELDS:
        raise InvalidDataError(f"{field}: not an attribute a correction changes")
    text = _text(value.strip(), field)
    if _CONTROL.search(text):
        raise InvalidDataError(f"{field}: no control characters or backslashes")
    if field == "patient_birth_date":
        digits = text.replace("-", "")
        if not digits:
            return ""
        try:
            if len(digits) != 8 or not digits.isdigit():
                raise ValueError
            date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            raise InvalidDataError(f"{field}: a date as YYYY-MM-DD, not {value!r}") from None
        return digits
    if field == "patient_sex":
        text = text.upper()
        if text not in ("", "M", "F", "O"):
            raise InvalidDataError(f"{field}: M, F, O or empty")
        return text
    if field == "patient_name":
        for group in text.split("="):
            if len(group) > 64 or group.count("^") > 4:
                raise InvalidDataError(
                    f"{field}: at most 5 components (^) and 64 characters per group"
                )
        return text
    if len(text) > _MAX[field]:
        raise InvalidDataError(f"{field}: at most {_MAX[field]} characters")
    if field == "patient_id" and not text:
        raise InvalidDataError("patient_id: a Patient ID cannot be emptied")
    return text


def _text(value: str, field: str) -> str:
    """``value`` if it is text a database keeps (no NUL, no lone surrogate), else 400."""
    try:
        value.encode("utf-8")
    except UnicodeError:
        raise InvalidDataError(f"{field}: not valid Unicode text") from None
    if "\0" in value:
        raise InvalidDataError(f"{field}: no NUL characters")
    return value


def _current(state: StudyState, field: str) -> str:
    if field == "patient_id":
        return state.patient_id
    return state.patient.get(field, state.study.get(field, ""))


class CorrectionService:
    """Submits, runs, undoes and purges corrections (see the module's text)."""

    def __init__(
        self,
        catalog: Catalog,
        stores: Stores,
        spool: Spool,
        *,
        oversight: Oversight,
        jobs: JobService,
        keep_days: float = 30,
    ) -> None:
        self.catalog = catalog
        self.stores = stores
        self.spool = spool
        self.oversight = oversight
        self.jobs = jobs
        self.keep_days = keep_days
        jobs.register(KIND, self._run_apply, "admin")
        jobs.register(UNDO_KIND, self._run_undo, "admin")

    # -- the door ---------------------------------------------------------------------------

    def study(self, study_uid: str, who: Identity) -> StudyState:
        """The study and its patient as the index has them (what a correction starts from)."""
        self.oversight.check(who, "read", Resource((study_uid,)))
        with self.catalog.read() as conn:
            state = table.study_state(conn, study_uid)
        if state is None:
            raise NotFoundError(f"no study {study_uid} in the archive")
        return state

    def submit(
        self, study_uid: str, values: Mapping[str, str], who: Identity, reason: str = ""
    ) -> Correction:
        """Correct study ``study_uid`` with ``values`` (the API's field names); the work runs
        as a job. :class:`ConflictError` while another correction of it runs."""
        self.oversight.check(who, "admin", Resource((study_uid,)))
        wanted = {field: normalise(field, str(value)) for field, value in values.items()}
        reason = _text(reason.strip(), "reason")[:1000]
        with self.catalog.write() as conn:
            # One transaction: nothing else at work on the studies concerned, then the values
            # as they are now (an undo that ended a moment ago included) become "previous".
            state = table.study_state(conn, study_uid)
            if state is None:
                raise NotFoundError(f"no study {study_uid} in the archive")
            scope = self._plan(conn, state, wanted)["applied"]["scope"]
            busy = table.busy_correction(conn, [uid for _, uid in scope])
            if busy is not None:
                raise ConflictError(f"correction {busy} of this study is still at work")
            state = table.study_state(conn, study_uid)
            if state is None:
                raise NotFoundError(f"no study {study_uid} in the archive")
            plan = self._plan(conn, state, wanted)
            applied = plan["applied"]
            for charset in table.character_sets(conn, [pk for pk, _ in applied["scope"]]):
                for keyword, value in {**applied["patient_file"], **applied["study_file"]}.items():
                    check_encodable(keyword, value, charset)  # 400 now, not a failed job
            pk = table.add_correction(
                conn,
                study_uid,
                plan["changes"],
                plan["previous"],
                plan["applied"],
                reason,
                str(who),
            )
        job = self.jobs.submit(KIND, {"correction": pk}, who, Resource((study_uid,)))
        with self.catalog.write() as conn:
            table.set_correction(conn, pk, job_pk=job.pk)
        return self.get(pk, who)

    def _plan(self, conn: Any, state: StudyState, wanted: dict[str, str]) -> dict[str, Any]:
        """What a correction changes: in the index and in the files of which studies."""
        changes = {
            f: {"old": _current(state, f), "new": v}
            for f, v in wanted.items()
            if v != _current(state, f)
        }
        if not changes:
            raise InvalidDataError("nothing to correct: the values given are the current ones")
        new_id = changes.get("patient_id", {}).get("new", state.patient_id)
        given = {f: c["new"] for f, c in changes.items() if f in table.PATIENT_FIELDS}
        scope = [(state.study_pk, state.study_uid)]
        if new_id != state.patient_id:
            target_pk, existing = table.find_patient(conn, new_id, state.issuer)
            if target_pk:
                differing = sorted(f for f, v in given.items() if v != existing[f])
                if differing:
                    raise ConflictError(
                        f"Patient ID {new_id} is another patient's, whose "
                        f"{', '.join(differing)} differ: move the study without changing them "
                        "(it takes that patient's), or correct that patient first"
                    )
                patient = existing
                for f in table.PATIENT_FIELDS:  # what the study's files take on
                    if existing[f] != state.patient[f]:
                        changes[f] = {"old": state.patient[f], "new": existing[f]}
            else:
                patient = {**state.patient, **given}
        else:
            patient = {**state.patient, **given}
            if given:
                scope = table.patient_studies(conn, state.patient_pk)
        patient_file = {
            FIELDS[f]: c["new"] for f, c in changes.items() if f not in table.STUDY_FIELDS
        }
        study_file = {FIELDS[f]: c["new"] for f, c in changes.items() if f in table.STUDY_FIELDS}
        study = {
            **state.study,
            **{f: c["new"] for f, c in changes.items() if f in table.STUDY_FIELDS},
        }
        return {
            "changes": changes,
            "previous": {
                "patient_id": state.patient_id,
                "issuer": state.issuer,
                "patient": state.patient,
                "study": state.study,
            },
            "applied": {
                "study_pk": state.study_pk,
                "patient_id": new_id,
                "issuer": state.issuer,
                "patient": patient,
                "study": study,
                "scope": scope,
                "patient_file": patient_file,
                "study_file": study_file,
            },
        }

    def get(self, pk: int, who: Identity) -> Correction:
        """Correction ``pk`` and its job."""
        with self.catalog.read() as conn:
            row = table.get_correction(conn, pk)
            if row is None:
                raise NotFoundError(f"no correction {pk}")
            self.oversight.check(who, "read", Resource((row.study_uid,)))
            job = job_table.get(conn, row.job_pk) if row.job_pk is not None else None
        return Correction(row, job)

    def list(
        self, study_uid: str, who: Identity, *, limit: int = 50, before: int | None = None
    ) -> tuple[list[Correction], int]:
        """A study's corrections, newest first, and how many in all."""
        self.oversight.check(who, "read", Resource((study_uid,)))
        with self.catalog.read() as conn:
            rows, total = table.list_corrections(conn, study_uid, limit, before)
            found = [
                Correction(r, job_table.get(conn, r.job_pk) if r.job_pk is not None else None)
                for r in rows
            ]
        return found, total

    def undo(self, pk: int, who: Identity) -> Correction:
        """Undo correction ``pk`` (the latest applied one of its study) as a job."""
        with self.catalog.read() as conn:
            row = table.get_correction(conn, pk)
        if row is None:
            raise NotFoundError(f"no correction {pk}")
        self.oversight.check(who, "admin", Resource((row.study_uid,)))
        if row.state != "applied":
            raise ConflictError(
                f"only an applied correction can be undone; this one is {row.state}"
            )
        with self.catalog.write() as conn:
            latest = table.latest_correction(conn, row.study_uid)
            if latest is not None and latest.pk != pk:
                raise ConflictError(
                    f"correction {latest.pk} of this study came after: undo it first"
                )
            table.set_correction(conn, pk, state="undoing", message="")
        job = self.jobs.submit(UNDO_KIND, {"correction": pk}, who, Resource((row.study_uid,)))
        with self.catalog.write() as conn:
            table.set_correction(conn, pk, job_pk=job.pk)
        return self.get(pk, who)

    def purge(self) -> int:
        """Remove the kept previous files of corrections older than ``keep_days`` (they can no
        longer be undone); how many corrections expired."""
        before = datetime.now(UTC) - timedelta(days=self.keep_days)
        with self.catalog.read() as conn:
            expired = table.expired_corrections(conn, before)
        for pk in expired:
            with self.catalog.write() as conn:
                rows = table.file_rows(conn, pk)
                kept = [(r.old[0], r.old[1]) for r in rows if r.state == "applied"]
                job_table.note_deleted_blobs(conn, kept)
                for r in rows:
                    table.set_file(conn, r.pk, "purged")
                table.set_correction(conn, pk, state="expired")
            log.info("correction %d expired: %d previous file(s) to remove", pk, len(kept))
        return len(expired)

    # -- the jobs -----------------------------------------------------------------------------

    def _run_apply(self, context: JobContext) -> str:
        pk = int(context.payload["correction"])
        with self.catalog.read() as conn:
            row = table.get_correction(conn, pk)
        if row is None or row.state != "pending":
            return f"nothing to do: the correction is {row.state if row else 'gone'}"
        try:
            rewritten = self._rewrite_files(context, row)
            self._finish_apply(row)
        except JobInterrupted:
            raise  # the server stops: the job runs again from where it was, no attempt spent
        except (JobFailed, JobCancelled) as exc:
            self._abandon(row, context.who, exc.message)
            raise
        except Exception as exc:
            if context.job.attempts >= context.job.max_attempts:
                reason = getattr(exc, "message", f"{type(exc).__name__}: {exc}")
                self._abandon(row, context.who, reason)
            raise
        message = f"{rewritten} file(s) rewritten"
        with self.catalog.write() as conn:
            table.set_correction(conn, pk, message=message)
        self._audit("study-corrected", context.who, row)
        return message

    def _rewrite_files(self, context: JobContext, row: CorrectionRow) -> int:
        applied = row.applied
        study_pk = int(applied["study_pk"])
        scope = [int(pk) for pk, _ in applied["scope"]]
        with self.catalog.read() as conn:
            files = table.study_files(conn, scope)
            noted = {f.instance_pk: f for f in table.file_rows(conn, row.pk)}
        for note in noted.values():  # a retried job: what an earlier attempt left half done
            if note.state == "pending":
                self.stores.get(note.new_store).delete(note.new_key)
                with self.catalog.write() as conn:
                    table.drop_file(conn, note.pk)
        done = {pk for pk, note in noted.items() if note.state == "applied"}
        context.progress(0, len(files), force=True)
        rewritten = 0
        for count, stored in enumerate(files, 1):
            if stored.instance_pk not in done:
                values = dict(applied["patient_file"])
                if stored.study_pk == study_pk:
                    values.update(applied["study_file"])
                if values and self._rewrite(row.pk, stored, values):
                    rewritten += 1
            context.progress(count, len(files))
        return rewritten

    def _rewrite(self, correction_pk: int, stored: StoredFile, values: dict[str, str]) -> bool:
        """Rewrite one file into a new blob and switch its row to it; False when the instance
        was deleted or replaced meanwhile (the new blob is then removed)."""
        key, store_id = new_blob_key(), self.stores.current_id
        with self.catalog.write() as conn:
            note = table.note_file(conn, correction_pk, stored, key, store_id)
        fd, staged = self.spool.staging_file()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                self.stores.get(stored.blob_store).open(stored.blob_key) as source,
            ):
                rewritten = rewrite_attributes(source, out, values)
            header, metadata = read_with_metadata(staged, scratch=staged.parent)
            size, sha256 = _digest(staged)
            self.stores.get(store_id).put_file(key, staged)
        finally:
            staged.unlink(missing_ok=True)
        charset = rewritten.specific_character_set or header.specific_character_set
        with self.catalog.write() as conn:
            switched = table.switch_file(
                conn,
                stored.instance_pk,
                stored.blob_key,
                (key, store_id, size, sha256),
                charset,
                metadata,
            )
            if switched:
                table.set_file(conn, note, "applied")
            else:
                table.drop_file(conn, note)
                job_table.note_deleted_blobs(conn, [(key, store_id)])
        return switched

    def _finish_apply(self, row: CorrectionRow) -> None:
        applied = row.applied
        study_pk = int(applied["study_pk"])
        with self.catalog.write() as conn:
            table.assign_patient(
                conn,
                study_pk,
                applied["patient_id"],
                applied["issuer"],
                applied["patient"],
                applied["study"],
            )
            table.touch_studies(conn, [int(pk) for pk, _ in applied["scope"] if pk != study_pk])
            table.set_correction(conn, row.pk, state="applied")
            changes.note_existing(conn, "corrected", [uid for _, uid in applied["scope"]])

    def _restore_files(self, context: JobContext | None, row: CorrectionRow) -> int:
        """Switch the files a correction rewrote back to their kept previous versions; the
        rewritten ones are noted for removal. How many were restored."""
        with self.catalog.read() as conn:
            notes = table.file_rows(conn, row.pk)
        if context is not None:
            context.progress(0, len(notes), force=True)
        restored = 0
        for count, note in enumerate(notes, 1):
            if note.state in ("applied", "pending"):
                restored += self._restore(note)
            if context is not None:
                context.progress(count, len(notes))
        return restored

    def _restore(self, note: table.FileRow) -> int:
        key, store_id, _, _ = note.old
        with self.stores.get(store_id).open(key) as kept:
            _, metadata = read_with_metadata(kept, scratch=self.spool.folder)
        with self.catalog.write() as conn:
            switched = table.switch_file(
                conn, note.instance_pk, note.new_key, note.old, note.old_charset, metadata
            )
            table.set_file(conn, note.pk, "restored")
            # the rewritten file goes; so does the kept one when its instance moved on
            gone = [(note.new_key, note.new_store)]
            if not switched and table.current_blob(conn, note.instance_pk) != key:
                gone.append((key, store_id))
            job_table.note_deleted_blobs(conn, gone)
        return int(switched)

    def _abandon(self, row: CorrectionRow, who: Identity, reason: str) -> None:
        """A correction that cannot finish: its files back as they were, marked failed."""
        try:
            self._restore_files(None, row)
        finally:
            with self.catalog.write() as conn:
                table.set_correction(conn, row.pk, state="failed", message=reason)
            self._audit("study-corrected", who, row, outcome="failure", reason=reason)

    def _run_undo(self, context: JobContext) -> str:
        pk = int(context.payload["correction"])
        with self.catalog.read() as conn:
            row = table.get_correction(conn, pk)
        if row is None or row.state != "undoing":
            return f"nothing to do: the correction is {row.state if row else 'gone'}"
        restored = self._restore_files(context, row)
        previous, applied = row.previous, row.applied
        study_pk = int(applied["study_pk"])
        with self.catalog.write() as conn:
            if table.study_state(conn, row.study_uid) is not None:
                table.assign_patient(
                    conn,
                    study_pk,
                    previous["patient_id"],
                    previous["issuer"],
                    previous["patient"],
                    previous["study"],
                )
                table.touch_studies(conn, [int(p) for p, _ in applied["scope"] if p != study_pk])
            changes.note_existing(conn, "corrected", [uid for _, uid in applied["scope"]])
            message = f"{restored} file(s) restored"
            table.set_correction(conn, pk, state="undone", message=message)
        self._audit("study-correction-undone", context.who, row)
        return message

    def _audit(
        self, kind: str, who: Identity, row: CorrectionRow, outcome: str = "success", **extra: Any
    ) -> None:
        patient_ids = sorted({row.previous["patient_id"], row.applied["patient_id"]})
        study_uids = sorted(uid for _, uid in row.applied["scope"])
        attributes = sorted(row.changes)
        self.oversight.record(
            kind,
            who,
            outcome,
            correction=row.pk,
            patient_ids=patient_ids,
            study_uids=study_uids,
            attributes=attributes,
            **extra,
        )
        if any(f not in table.STUDY_FIELDS for f in attributes):
            self.oversight.record(
                "patient-record-updated",
                who,
                outcome,
                correction=row.pk,
                patient_ids=patient_ids,
                attributes=[a for a in attributes if a not in table.STUDY_FIELDS],
            )


def _digest(path: Any) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()
