"""Query: the engine behind C-FIND, and behind QIDO-RS later (PS3.4 C.4.1, C.6.1, C.6.2).

A :class:`Query` is protocol-neutral: a level, an information model, key values by keyword
(raw DICOM text, or a sequence item's keys), extra return keys, paging and matching options.
The service checks it against the model (PS3.4 C.4.1.3.1: the level must exist in the model
and, unless relational queries were negotiated, each level above must be pinned by its unique
key with a single value), runs one SELECT, and yields one record per match, lazily, checking
for cancellation between rows. A record maps keywords to values: every requested key (keys the
index does not hold are ``None``, returned zero-length), the unique keys of the levels down to
the query level, Query/Retrieve Level, Retrieve AE Title and Instance Availability (ONLINE).

``query.max_results`` caps the matches returned. PS3.4 Table C.4-1 has a warning for this
(B001, "matching reached response limit"), but pynetdicom 3.0 sends a final success after any
handler warning, so the C-FIND ends in success and the cap is logged (:attr:`QueryResult.truncated`
tells other front doors, e.g. QIDO-RS's Warning header).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from vesalius.dicom.model import MODEL_LEVELS, UNIQUE_KEYS, Level, Model
from vesalius.errors import CancelledError, DataSetMismatchError, QueryError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.matching import MatchOptions, has_wildcard
from vesalius.index.queries import (
    ATTRIBUTES,
    SEQUENCES,
    FilterValue,
    attribute_at,
    search,
    sequence_at,
)
from vesalius.services.oversight import Oversight

__all__ = [
    "FilterValue",
    "Level",
    "Model",
    "Query",
    "QueryResult",
    "QueryService",
]

log = logging.getLogger(__name__)
#: OpenTelemetry (API only: spans are recorded when the wiring installs the SDK).
tracer = trace.get_tracer(__name__)

#: Keys the service answers itself and never matches (PS3.4 C.4.1.1.3.2).
SERVICE_KEYS = frozenset(
    {"QueryRetrieveLevel", "RetrieveAETitle", "InstanceAvailability", "SpecificCharacterSet"}
)


@dataclass(frozen=True)
class Query:
    """A query at ``level`` of the Patient Root or Study Root ``model``.

    ``filters`` maps keywords to raw key values ('' = universal matching: return only);
    every filter key is also returned, as are ``return_keys``. ``limit`` 0 means no limit.
    ``relational``, ``combined_datetime`` and ``fuzzy`` are the C-FIND extended negotiation
    options of PS3.4 C.5.1.1.2 (bytes 1-3).
    """

    level: Level
    model: Model = "STUDY"
    filters: Mapping[str, FilterValue] = field(default_factory=dict)
    return_keys: tuple[str, ...] = ()
    limit: int = 0
    offset: int = 0
    fuzzy: bool = False
    relational: bool = False
    combined_datetime: bool = False

    def unique_keys(self) -> list[str]:
        """The unique keys of the model's levels down to the query level."""
        levels = MODEL_LEVELS[self.model]
        return [UNIQUE_KEYS[lvl] for lvl in levels[: levels.index(self.level) + 1]]

    def requested(self) -> list[str]:
        """Every key a record carries besides the service keys, in a stable order."""
        keys = [*self.unique_keys(), *self.filters, *self.return_keys]
        return [k for k in dict.fromkeys(keys) if k not in SERVICE_KEYS]


def _single_value(raw: FilterValue | None) -> bool:
    return isinstance(raw, str) and bool(raw.strip()) and "\\" not in raw and not has_wildcard(raw)


class QueryResult:
    """The matches of one query, produced lazily as records.

    ``unsupported`` (requested keys the index neither matches nor returns) is known at once;
    ``count`` and ``truncated`` (more matched than ``query.max_results``) once iteration ends.
    Iterating raises :class:`CancelledError` when ``cancelled()`` turns true between rows.
    """

    def __init__(
        self,
        service: QueryService,
        query: Query,
        who: Identity,
        cancelled: Callable[[], bool],
        unsupported: frozenset[str],
    ) -> None:
        self.service = service
        self.query = query
        self.who = who
        self.cancelled = cancelled
        self.unsupported = unsupported
        self.count = 0
        self.truncated = False

    def _fixed(self) -> dict[str, Any]:
        """The part of every record that does not come from the index."""
        fixed: dict[str, Any] = dict.fromkeys(self.query.requested())
        fixed["QueryRetrieveLevel"] = self.query.level
        return fixed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        query, service = self.query, self.service
        cap = service.max_results
        limit = query.limit or None
        capped = bool(cap) and (limit is None or limit > cap)
        if capped:
            limit = cap + 1  # one more than allowed tells "there were more"
        fixed = self._fixed()
        trailer = {"RetrieveAETitle": service.ae_title, "InstanceAvailability": "ONLINE"}
        self.count, self.truncated = 0, False
        # Whose data the answer showed, for the audit trail's "who accessed this patient"
        # (the first MAX_NAMED of each; the records carry them when the query returns them).
        patients: dict[str, None] = {}
        studies: dict[str, None] = {}
        outcome = "failure"
        started = time.monotonic()
        # not made current: a generator may be resumed in another thread or context
        span = tracer.start_span("query", attributes={"dicom.level": query.level})
        try:
            if self.cancelled():
                raise CancelledError("C-FIND cancelled")
            labels = service.oversight.visible_labels(self.who)
            with service.catalog.read() as conn:
                for found in search(
                    conn,
                    query.level,
                    query.filters,
                    query.requested(),
                    options=service.options(query),
                    combined=query.combined_datetime,
                    limit=limit,
                    offset=query.offset,
                    labels=labels,
                ):
                    if self.cancelled():
                        raise CancelledError("C-FIND cancelled")
                    if capped and self.count >= cap:
                        self.truncated = True
                        log.warning(
                            "query by %s matched more than query.max_results (%d); "
                            "returned the first %d",
                            self.who,
                            cap,
                            cap,
                        )
                        break
                    self.count += 1
                    _note(patients, found.get("PatientID"))
                    _note(studies, found.get("StudyInstanceUID"))
                    yield {**fixed, **found, **trailer}
            outcome = "success"
        except CancelledError:
            outcome = "cancelled"
            raise
        except GeneratorExit:
            outcome = "incomplete"  # the consumer stopped (e.g. the association ended)
            raise
        finally:
            service.oversight.record(
                "query",
                self.who,
                outcome=outcome,
                level=query.level,
                model=query.model,
                keys=sorted(k for k, v in query.filters.items() if v),
                criteria={k: v for k, v in query.filters.items() if v},  # A.5.3.12
                matches=self.count,
                truncated=self.truncated,
                patient_ids=list(patients),
                study_uids=list(studies),
                seconds=round(time.monotonic() - started, 6),
            )
            span.set_attribute("vesalius.matches", self.count)
            span.set_attribute("vesalius.outcome", outcome)
            span.end()


#: Most distinct patients and studies a query's audit record names.
MAX_NAMED = 1000


def _note(seen: dict[str, None], value: Any) -> None:
    if isinstance(value, str) and value and len(seen) < MAX_NAMED:
        seen[value] = None


class QueryService:
    """Answers queries against the index: C-FIND now, QIDO-RS later."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        oversight: Oversight,
        ae_title: str,
        case_insensitive_pn: bool = True,
        max_results: int = 0,
    ) -> None:
        self.catalog = catalog
        self.oversight = oversight
        self.ae_title = ae_title
        self.case_insensitive_pn = case_insensitive_pn
        self.max_results = max(0, max_results)

    def options(self, query: Query) -> MatchOptions:
        return MatchOptions(case_insensitive_pn=self.case_insensitive_pn, fuzzy=query.fuzzy)

    @staticmethod
    def check(query: Query) -> None:
        """Refuse a query the information model cannot answer (PS3.4 C.4.1.3.1, C.4.1.1.4):
        0xA900 for a level outside the model or a missing higher-level unique key."""
        levels = MODEL_LEVELS[query.model]
        if query.level not in levels:
            raise DataSetMismatchError(f"QueryRetrieveLevel {query.level} is not in the model")
        if query.limit < 0 or query.offset < 0:
            raise QueryError("limit and offset must not be negative")
        if query.relational:
            return
        for level in levels[: levels.index(query.level)]:
            key = UNIQUE_KEYS[level]
            if not _single_value(query.filters.get(key)):
                raise DataSetMismatchError(f"{key} (one value) needed for a {query.level} query")

    @staticmethod
    def unsupported(query: Query) -> frozenset[str]:
        """Requested keys this index cannot match or return at the query's level
        (``Sequence.Key`` for an item key)."""
        missing: set[str] = set()
        for keyword in query.requested():
            if attribute_at(keyword, query.level) is not None:
                continue
            items = sequence_at(keyword, query.level)
            if items is None:
                missing.add(keyword)
                continue
            wanted = query.filters.get(keyword)
            if isinstance(wanted, Mapping):
                missing.update(f"{keyword}.{k}" for k in wanted if k not in items)
        return frozenset(missing)

    def find(
        self, query: Query, who: Identity, cancelled: Callable[[], bool] | None = None
    ) -> QueryResult:
        """Check ``query`` and return its matches, to be iterated (the SQL runs then)."""
        self.oversight.check(who, "query")
        self.check(query)
        ignored = self.unsupported(query)
        if ignored:
            log.debug("query by %s: not supported at %s level: %s", who, query.level, ignored)
        return QueryResult(self, query, who, cancelled or (lambda: False), ignored)

    def supported_keys(self, level: Level) -> list[str]:
        """Every key a query at ``level`` can match and return (QIDO-RS ``includefield=all``)."""
        keys = [k for k in ATTRIBUTES if attribute_at(k, level) is not None]
        return keys + [k for k in SEQUENCES if sequence_at(k, level) is not None]
