"""Browsing: the study list, a study and its series, patients, and deleting from them, for the
REST API and the web UI.

Each call checks the policy first (``query`` to read, ``delete`` to delete), restricts what it
reads to the studies the identity may see (per-study access labels, inside the one SQL
statement, as C-FIND and QIDO-RS do: ``index/browse.py`` reuses their matching and filter),
and leaves an audit record of whose data it showed (event ``query``, PS3.15 A.5.3.12, with the
patients and studies named), so "who accessed this patient" sees the UI's reads too.
A deletion is the delete service's job (``services/deletion.py``), audited when it runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from vesalius.errors import NotFoundError, VesaliusError
from vesalius.identity import Identity
from vesalius.index import browse
from vesalius.index.browse import (
    SORT_KINDS,
    STUDY_SORTS,
    PatientRow,
    SeriesRow,
    StudyFilters,
    StudyRow,
)
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import RetrieveKeys
from vesalius.index.matching import MatchOptions
from vesalius.index.queries import FilterValue
from vesalius.services.deletion import DeleteService
from vesalius.services.jobs import JobRow
from vesalius.services.oversight import Oversight
from vesalius.services.policy import Resource

__all__ = [
    "SORT_KINDS",
    "STUDY_SORTS",
    "AmbiguousError",
    "BrowseService",
    "Listed",
    "PatientRow",
    "SeriesRow",
    "StudyFilters",
    "StudyRow",
]


T = TypeVar("T")


class AmbiguousError(VesaliusError):
    """The request names more than one thing where it must name one (HTTP 409)."""

    dimse_status = 0xC000
    http_status = 409


@dataclass(frozen=True)
class Listed(Generic[T]):
    """One page of a list: its rows, how many match in all, and the sort position of the last
    row when more follow (None: this is the last page)."""

    rows: list[T]
    total: int
    after: list[Any] | None


class BrowseService:
    """Lists and reads studies, series and patients; deletes through the delete service."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        oversight: Oversight,
        deletion: DeleteService,
        case_insensitive_pn: bool = True,
    ) -> None:
        self.catalog = catalog
        self.oversight = oversight
        self.deletion = deletion
        self.options = MatchOptions(case_insensitive_pn=case_insensitive_pn)

    # -- studies ------------------------------------------------------------------------------

    def studies(
        self,
        filters: StudyFilters,
        who: Identity,
        *,
        sort: str = "-study_date",
        after: Sequence[Any] | None = None,
        limit: int = 50,
    ) -> Listed[StudyRow]:
        """A page of the studies matching ``filters``, in ``sort`` order (``-`` for
        descending; :data:`vesalius.index.browse.STUDY_SORTS`), after the position ``after``."""
        self.oversight.check(who, "query")
        started = time.monotonic()
        labels = self.oversight.visible_labels(who)
        with self.catalog.read() as conn:
            narrowed = browse.narrowed(conn, filters)  # a rare description: its studies' keys
            rows = browse.list_studies(
                conn,
                narrowed,
                sort=sort,
                after=after,
                limit=limit + 1,
                options=self.options,
                labels=labels,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            if after is None and not more:
                total = len(rows)
            else:
                total = browse.count_studies(conn, narrowed, options=self.options, labels=labels)
        self._audit(who, "STUDY", _criteria(filters), rows, started)
        return Listed(rows, total, browse.sort_key(rows[-1], sort) if more else None)

    def study(self, study_uid: str, who: Identity) -> StudyRow:
        """The study ``study_uid``; :class:`NotFoundError` when it is not stored or may not be
        seen."""
        self.oversight.check(who, "query", Resource(study_uids=(study_uid,)))
        started = time.monotonic()
        with self.catalog.read() as conn:
            found = browse.get_study(conn, study_uid, self.oversight.visible_labels(who))
        if found is None:
            raise NotFoundError(f"no study {study_uid}")
        self._audit(who, "STUDY", {"StudyInstanceUID": study_uid}, [found], started)
        return found

    def series(
        self, study_uid: str, who: Identity, series_uid: str | None = None
    ) -> tuple[StudyRow, list[SeriesRow]]:
        """The study and its series by Series Number (or the one ``series_uid``)."""
        self.oversight.check(who, "query", Resource(study_uids=(study_uid,)))
        started = time.monotonic()
        with self.catalog.read() as conn:
            study = browse.get_study(conn, study_uid, self.oversight.visible_labels(who))
            if study is None:
                raise NotFoundError(f"no study {study_uid}")
            found = browse.list_series(conn, study.pk, series_uid)
        if series_uid is not None and not found:
            raise NotFoundError(f"no series {series_uid} in study {study_uid}")
        criteria = {"StudyInstanceUID": study_uid}
        if series_uid is not None:
            criteria["SeriesInstanceUID"] = series_uid
        self._audit(who, "SERIES", criteria, [study], started, matches=len(found))
        return study, found

    # -- patients -----------------------------------------------------------------------------

    def patients(
        self,
        matching: Mapping[str, FilterValue],
        who: Identity,
        *,
        after: Sequence[Any] | None = None,
        limit: int = 50,
    ) -> Listed[PatientRow]:
        """A page of the patients matching ``matching`` (PatientName, PatientID), by name."""
        self.oversight.check(who, "query")
        started = time.monotonic()
        labels = self.oversight.visible_labels(who)
        with self.catalog.read() as conn:
            rows = browse.list_patients(
                conn, matching, after=after, limit=limit + 1, options=self.options, labels=labels
            )
            more = len(rows) > limit
            rows = rows[:limit]
            if after is None and not more:
                total = len(rows)
            else:
                total = browse.count_patients(conn, matching, options=self.options, labels=labels)
        self._audit_patients(who, matching, rows, started)
        return Listed(rows, total, [rows[-1].name_folded, rows[-1].pk] if more else None)

    def patient(self, patient_id: str, issuer: str | None, who: Identity) -> PatientRow:
        """The patient ``patient_id`` (of ``issuer``); :class:`AmbiguousError` (409) when several
        issuers have that ID and none is given."""
        self.oversight.check(who, "query", Resource(details={"patient_id": patient_id}))
        started = time.monotonic()
        with self.catalog.read() as conn:
            found = browse.get_patients(
                conn, patient_id, issuer, self.oversight.visible_labels(who)
            )
        if not found:
            raise NotFoundError(f"no patient {patient_id}")
        if len(found) > 1:
            raise AmbiguousError(
                f"{len(found)} patients have the ID {patient_id}: give the issuer (?issuer=)"
            )
        self._audit_patients(who, {"PatientID": patient_id}, found, started)
        return found[0]

    # -- deleting -----------------------------------------------------------------------------

    def delete(
        self,
        who: Identity,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> JobRow:
        """Queue the deletion of a study, a series of it or an instance of that series as a
        job of the delete service; :class:`NotFoundError` when it is not stored or may not be
        seen (checked now, so a client hears of a wrong UID at once)."""
        keys = RetrieveKeys(
            "IMAGE" if sop_instance_uid else "SERIES" if series_uid else "STUDY",
            study_uids=(study_uid,),
            series_uids=(series_uid,) if series_uid else (),
            sop_instance_uids=(sop_instance_uid,) if sop_instance_uid else (),
        )
        resource = Resource(keys.study_uids, keys.series_uids, keys.sop_instance_uids)
        self.oversight.check(who, "delete", resource)
        labels = self.oversight.visible_labels(who)
        with self.catalog.read() as conn:
            study = browse.get_study(conn, study_uid, labels)
            exists = study is not None
            if study is not None and series_uid is not None:
                exists = browse.has_member(conn, study.pk, series_uid, sop_instance_uid)
        if not exists:
            what = sop_instance_uid or series_uid or study_uid
            self.oversight.record(
                "instances-deleted",
                who,
                "failure",
                level=keys.level,
                study_uids=[study_uid],
                reason=f"not found: {what}",
            )
            raise NotFoundError(f"nothing stored matches {what}")
        return self.deletion.submit(keys, who)

    # -- audit --------------------------------------------------------------------------------

    def _audit(
        self,
        who: Identity,
        level: str,
        criteria: dict[str, str],
        rows: Sequence[StudyRow],
        started: float,
        matches: int | None = None,
    ) -> None:
        self.oversight.record(
            "query",
            who,
            "success",
            level=level,
            model="STUDY",
            keys=sorted(criteria),
            criteria=criteria,
            matches=len(rows) if matches is None else matches,
            truncated=False,
            patient_ids=list(dict.fromkeys(r.patient_id for r in rows if r.patient_id)),
            study_uids=[r.study_uid for r in rows],
            seconds=round(time.monotonic() - started, 6),
            via="rest",
        )

    def _audit_patients(
        self,
        who: Identity,
        matching: Mapping[str, FilterValue],
        rows: Sequence[PatientRow],
        started: float,
    ) -> None:
        criteria = {k: v for k, v in matching.items() if isinstance(v, str) and v}
        self.oversight.record(
            "query",
            who,
            "success",
            level="PATIENT",
            model="PATIENT",
            keys=sorted(criteria),
            criteria=criteria,
            matches=len(rows),
            truncated=False,
            patient_ids=list(dict.fromkeys(r.patient_id for r in rows if r.patient_id)),
            study_uids=[],
            seconds=round(time.monotonic() - started, 6),
            via="rest",
        )


def _criteria(filters: StudyFilters) -> dict[str, str]:
    found = {k: v for k, v in filters.matching.items() if isinstance(v, str) and v}
    if filters.description:
        found["StudyDescription"] = filters.description
    if filters.text:
        found["text"] = filters.text
    return found
