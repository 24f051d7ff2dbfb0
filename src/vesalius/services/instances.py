"""The instances of a series, for the REST API and the UI: a page of them, one, and all the
tags of one as DICOM JSON (PS3.18 F.2), read from its stored file.

The tags are what the file holds now (a correction rewrites files): the data set read as for
WADO-RS metadata (``services/metadata.py``: our own scan, pydicom where it declines, a deflated
file through its inflated twin), sequences nested, private elements with their creators, and
values over 1 KiB and the pixel data as BulkDataURIs (PS3.18 F.2.6) holding the ``{root}/``
placeholder of ``dicom/metadata.py`` for the caller to fill with its DICOMweb root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vesalius.dicom.metadata import decode
from vesalius.errors import NotFoundError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.series_instances import (
    InstanceRow,
    Position,
    SeriesRef,
    find_instance,
    find_series,
    list_instances,
)
from vesalius.services.metadata import metadata_from_file
from vesalius.services.oversight import Oversight
from vesalius.services.policy import Resource
from vesalius.storage import Spool, Stores

__all__ = ["InstancePage", "InstanceRow", "InstanceService", "Position"]


@dataclass(frozen=True)
class InstancePage:
    """A page of a series' instances: ``after`` is the position to continue from (None: the
    last page); ``total`` counts the whole series."""

    items: list[InstanceRow]
    total: int
    after: Position | None


class InstanceService:
    """Lists a series' instances and reads one's tags."""

    def __init__(self, catalog: Catalog, stores: Stores, spool: Spool, *, oversight: Oversight):
        self.catalog = catalog
        self.stores = stores
        self.spool = spool  # scratch space for inflating a deflated instance
        self.oversight = oversight

    def _series(self, study_uid: str, series_uid: str, who: Identity) -> SeriesRef:
        labels = self.oversight.visible_labels(who)
        with self.catalog.read() as conn:
            found = find_series(conn, study_uid, series_uid, labels)
        if found is None:
            raise NotFoundError("no such series in that study")
        return found

    def page(
        self,
        study_uid: str,
        series_uid: str,
        who: Identity,
        *,
        limit: int,
        after: Position | None = None,
    ) -> InstancePage:
        """Up to ``limit`` instances of the series after position ``after``, in instance
        order; :class:`NotFoundError` for a series that is not there (or not visible)."""
        self.oversight.check(who, "query", Resource((study_uid,), (series_uid,)))
        ref = self._series(study_uid, series_uid, who)
        with self.catalog.read() as conn:
            rows = list_instances(conn, ref.pk, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        self._audit_query(who, ref, study_uid, len(rows))
        return InstancePage(rows, ref.instance_count, rows[-1].position if more else None)

    def get(self, study_uid: str, series_uid: str, sop_uid: str, who: Identity) -> InstanceRow:
        """One instance of the series; :class:`NotFoundError` when it is not there."""
        self.oversight.check(who, "query", Resource((study_uid,), (series_uid,), (sop_uid,)))
        ref, row = self._instance(study_uid, series_uid, sop_uid, who)
        self._audit_query(who, ref, study_uid, 1)
        return row

    def _instance(
        self, study_uid: str, series_uid: str, sop_uid: str, who: Identity
    ) -> tuple[SeriesRef, InstanceRow]:
        ref = self._series(study_uid, series_uid, who)
        with self.catalog.read() as conn:
            row = find_instance(conn, ref.pk, sop_uid)
        if row is None:
            raise NotFoundError("no such instance in that series")
        return ref, row

    def _audit_query(self, who: Identity, ref: SeriesRef, study_uid: str, matches: int) -> None:
        self.oversight.record(
            "query",
            who,
            level="IMAGE",
            model="STUDY",
            keys=["StudyInstanceUID", "SeriesInstanceUID"],
            matches=matches,
            patient_ids=[ref.patient_id],
            study_uids=[study_uid],
        )

    def tags(
        self, study_uid: str, series_uid: str, sop_uid: str, who: Identity
    ) -> tuple[InstanceRow, dict[str, Any]]:
        """The instance's row and its data set as DICOM JSON, from its stored file."""
        self.oversight.check(who, "read", Resource((study_uid,), (series_uid,), (sop_uid,)))
        ref, row = self._instance(study_uid, series_uid, sop_uid, who)
        try:
            reader = self.stores.get(row.blob_store).open(row.blob_key)
        except FileNotFoundError as exc:  # removed since the row was read (a delete)
            raise NotFoundError("the instance's stored file is gone") from exc
        with reader:
            stored = metadata_from_file(reader, scratch=self.spool.folder)
        self.oversight.record(
            "metadata-read",
            who,
            level="IMAGE",
            patient_ids=[ref.patient_id],
            study_uids=[study_uid],
            instances=1,
        )
        document = json.loads(decode(stored))
        assert isinstance(document, dict)
        return row, document
