"""Deleting stored instances: a study, series or instances, or all of a patient's.

Rows and files go consistently: each batch of instance rows is deleted in one transaction that
also notes their blobs (table ``deleted_blobs``); the files are removed after the commit and the
notes cleared. A crash between the two leaves notes that :meth:`DeleteService.sweep` (run by
every job runner) finishes, so no file outlives its row unnoticed and no row points at a missing
file. Counters, the study's modality and SOP class lists, and parents left empty are fixed in
the same transaction (``index.records.delete_instance_row``), and each study touched is noted in
the change feed there too (``index/changes.py``: the live updates of every node read it). Each
deletion is audited (event ``instances-deleted``: who, the patients and studies, how many, how
it ended; PS3.15 A.5.3.6 "Patient Record" / DICOM Instances Accessed, action D), and a refusal
too.

A deletion runs in the caller's thread (:meth:`DeleteService.delete`) or as a job of kind
``delete`` (:meth:`DeleteService.submit`), which the queue retries and resumes; deleting again
what is already gone is a no-op, so a retried job simply finishes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vesalius.errors import NotFoundError, QueryError, VesaliusError
from vesalius.identity import Identity
from vesalius.index import changes
from vesalius.index import jobs as table
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import InstanceLocation, RetrieveKeys, find_instances
from vesalius.index.records import delete_instance_if_present
from vesalius.services.jobs import JobContext, JobRow, JobService, keys_payload, payload_keys
from vesalius.services.oversight import Oversight
from vesalius.services.policy import keys_resource
from vesalius.storage import Stores

log = logging.getLogger(__name__)

#: Instance rows deleted per transaction: short transactions, so storing and querying go on.
BATCH = 200
#: The job kind.
KIND = "delete"


@dataclass
class Deletion:
    """What a deletion did."""

    matched: int = 0
    deleted: int = 0
    files_removed: int = 0
    #: Files whose removal failed (kept noted; :meth:`DeleteService.sweep` tries again).
    files_left: int = 0

    def describe(self) -> str:
        text = f"{self.deleted} of {self.matched} instance(s) deleted"
        if self.files_left:
            text += f"; {self.files_left} file(s) still to remove"
        return text


Progress = Callable[[int, int], None]


class DeleteService:
    """Deletes what retrieve keys name (see the module's text)."""

    def __init__(
        self, catalog: Catalog, stores: Stores, *, oversight: Oversight, jobs: JobService
    ) -> None:
        self.catalog = catalog
        self.stores = stores
        self.oversight = oversight
        self.jobs = jobs
        jobs.register(KIND, self._run_job, "delete")

    def submit(self, keys: RetrieveKeys, who: Identity) -> JobRow:
        """Queue the deletion of what ``keys`` name as a job."""
        _check_keys(keys)
        return self.jobs.submit(KIND, keys_payload(keys), who, keys_resource(keys))

    def matches(self, keys: RetrieveKeys, who: Identity) -> list[InstanceLocation]:
        """What a deletion of ``keys`` would delete (to show before asking to confirm)."""
        _check_keys(keys)
        self.oversight.check(who, "delete", keys_resource(keys))
        with self.catalog.read() as conn:
            return find_instances(conn, keys, labels=self.oversight.visible_labels(who))

    def delete(
        self, keys: RetrieveKeys, who: Identity, on_progress: Progress | None = None
    ) -> Deletion:
        """Delete what ``keys`` name now; :class:`NotFoundError` when nothing matches."""
        try:
            _check_keys(keys)
            self.oversight.check(who, "delete", keys_resource(keys))
            labels = self.oversight.visible_labels(who)  # an invisible study: not found
            with self.catalog.read() as conn:
                found = find_instances(conn, keys, labels=labels)
            if not found:
                raise NotFoundError("nothing stored matches")
        except VesaliusError as exc:
            self._audit(who, keys, [], Deletion(), "failure", reason=exc.message)
            raise
        return self._delete(who, keys, found, on_progress)

    def _delete(
        self,
        who: Identity,
        keys: RetrieveKeys,
        found: list[InstanceLocation],
        on_progress: Progress | None,
    ) -> Deletion:
        done = Deletion(matched=len(found))
        outcome = "failure"
        try:
            for start in range(0, len(found), BATCH):
                batch = found[start : start + BATCH]
                with self.catalog.write() as conn:
                    labels = changes.label_sets(conn, {i.study_uid for i in batch})
                    gone = [delete_instance_if_present(conn, i.pk) for i in batch]
                    blobs = [blob for blob in gone if blob is not None]
                    table.note_deleted_blobs(conn, [(blob.key, blob.store) for blob in blobs])
                    touched = {
                        i.study_uid for i, blob in zip(batch, gone, strict=True) if blob is not None
                    }
                    changes.note(conn, "deleted", {u: labels.get(u, "") for u in touched})
                done.deleted += len(blobs)
                self.sweep()
                if on_progress is not None:
                    on_progress(start + len(batch), len(found))
            outcome = "success"
        finally:
            self._audit(who, keys, found, done, outcome if done.deleted else "failure")
        return done

    def sweep(self) -> tuple[int, int]:
        """Remove the files of deleted rows still noted; (removed, left) — a file that cannot
        be removed now stays noted for the next sweep."""
        removed = left = 0
        while True:
            with self.catalog.read() as conn:
                pending = table.pending_blob_deletions(conn)
            cleared: list[int] = []
            for pk, key, store in pending:
                try:
                    self.stores.get(store).delete(key)  # the store the row named
                except (OSError, VesaliusError) as exc:
                    log.warning("cannot remove blob %s from store %s yet: %s", key, store, exc)
                    left += 1
                    continue
                cleared.append(pk)
            if cleared:
                with self.catalog.write() as conn:
                    table.clear_blob_deletions(conn, cleared)
            removed += len(cleared)
            if len(pending) < 1000 or not cleared:
                return removed, left

    def _run_job(self, context: JobContext) -> str:
        keys = payload_keys(context.payload)
        labels = self.oversight.visible_labels(context.who)
        with self.catalog.read() as conn:
            found = find_instances(conn, keys, labels=labels)
        if not found:
            self.sweep()
            return "nothing (left) to delete"
        context.progress(0, len(found), force=True)
        result = self._delete(context.who, keys, found, lambda n, total: context.progress(n, total))
        return result.describe()

    def _audit(
        self,
        who: Identity,
        keys: RetrieveKeys,
        found: list[InstanceLocation],
        done: Deletion,
        outcome: str,
        **extra: Any,
    ) -> None:
        self.oversight.record(
            "instances-deleted",
            who,
            outcome,
            level=keys.level,
            patient_ids=sorted({i.patient_id for i in found}),
            study_uids=sorted({i.study_uid for i in found} or set(keys.study_uids)),
            series_uids=sorted({i.series_uid for i in found} or set(keys.series_uids)),
            matched=done.matched,
            deleted=done.deleted,
            **extra,
        )


def _check_keys(keys: RetrieveKeys) -> None:
    """A deletion names what it deletes: never "everything"."""
    if keys.level == "PATIENT" and not keys.patient_id:
        raise QueryError("deleting a patient needs its Patient ID")
    if keys.level != "PATIENT" and not (
        keys.study_uids or keys.series_uids or keys.sop_instance_uids
    ):
        raise QueryError(f"deleting at {keys.level} level needs its UIDs")
