"""Retrieve: which stored instances a C-MOVE, C-GET or WADO request sends, and their files.

A retrieve names its instances by :class:`RetrieveKeys` (unique keys: a Patient ID, or lists
of Study, Series or SOP Instance UIDs at the level retrieved and optionally above, PS3.4
C.4.2.2.1); each front door reads its own request into them (``dimse/identifiers.py``,
``dicomweb/retrieve.py``). The adapter sends the files; this service resolves, checks the
policy, opens each instance's file in the blob store its row names (:meth:`RetrieveService.open`,
a seekable reader, or :meth:`RetrieveService.open_range`, chunks of a byte range; never a local
path) and audits each transfer (PS3.15 A.5.3.3/A.5.3.4 in spirit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from opentelemetry import trace

from vesalius.dicom.model import Level, Model
from vesalius.errors import NotFoundError, QueryError, VesaliusError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import InstanceLocation, RetrieveKeys, find_instances
from vesalius.services.oversight import Oversight
from vesalius.services.policy import keys_resource
from vesalius.storage import Stores

#: OpenTelemetry (API only: spans are recorded when the wiring installs the SDK).
tracer = trace.get_tracer(__name__)

__all__ = [
    "MAX_SUBOPERATIONS",
    "InstanceLocation",
    "Level",
    "Model",
    "RetrieveKeys",
    "RetrievePlan",
    "RetrieveService",
    "RetrieveTally",
]

#: Sub-operation counts are US (PS3.7 9.3.3.2, 9.3.4.2), so one retrieve moves at most this many.
MAX_SUBOPERATIONS = 65535
#: Operations audited as they begin too (PS3.15 A.5.3.3 Begin Transferring DICOM Instances):
#: those that send instances as sub-operations, which may take a while.
BEGUN = frozenset({"C-MOVE", "C-GET", "send"})


@dataclass
class RetrievePlan:
    """A resolved retrieve: who asked, for what, and the instances to send in order."""

    operation: str
    who: Identity
    keys: RetrieveKeys
    instances: list[InstanceLocation]
    destination: str = ""


@dataclass
class RetrieveTally:
    """What became of the sub-operations (PS3.4 C.4.2.1.4, C.4.3.1.3)."""

    completed: int = 0
    warning: int = 0
    failed: int = 0
    cancelled: bool = False
    #: Instances not attempted (yet): the transfer counts them down.
    remaining: int = 0

    #: Stored bytes of the instances sent whole (as the adapters report them).
    bytes: int = 0

    def sent(self, size: int = 0) -> None:
        """One instance (or piece) went out whole; ``size``: its stored bytes, if an instance."""
        self.completed += 1
        self.bytes += size
        self.remaining = max(0, self.remaining - 1)

    def not_sent(self) -> None:
        """One instance (or piece) could not be sent."""
        self.failed += 1
        self.remaining = max(0, self.remaining - 1)

    def record(self, status: int | None, size: int = 0) -> None:
        """Count one C-STORE sub-operation by its response status (None: no response);
        ``size``: the stored bytes of the instance, counted if it was stored."""
        self.remaining = max(0, self.remaining - 1)
        if status == 0x0000:
            self.completed += 1
            self.bytes += size
        elif status is not None and (0xB000 <= status <= 0xBFFF or status in (0x0001, 0x0107)):
            self.warning += 1
            self.bytes += size
        else:
            self.failed += 1


class RetrieveService:
    """Resolves retrieve keys to stored instances, opens their files, and audits each
    transfer (:meth:`transfer`), so no adapter can forget to."""

    def __init__(
        self,
        catalog: Catalog,
        stores: Stores,
        *,
        oversight: Oversight,
        max_matches: int = MAX_SUBOPERATIONS,
    ) -> None:
        self.catalog = catalog
        self.stores = stores
        self.oversight = oversight
        self.max_matches = max_matches

    def plan(
        self, keys: RetrieveKeys, who: Identity, operation: str, destination: str = ""
    ) -> RetrievePlan:
        """The instances ``keys`` name, in order; :class:`QueryError` (0xC000) when more match
        than one retrieve can count (``max_matches``, 65535 by default). A refusal (the policy,
        too many matches) is audited here."""
        try:
            resource = keys_resource(keys)
            if destination:
                resource.details["destination"] = destination
            resource.details["operation"] = operation
            self.oversight.check(who, "retrieve", resource)
            labels = self.oversight.visible_labels(who)
            with self.catalog.read() as conn:
                found = find_instances(conn, keys, limit=self.max_matches, labels=labels)
            if len(found) > self.max_matches:
                raise QueryError(f"over {self.max_matches} instances match: retrieve fewer at once")
        except Exception as exc:
            reason = exc.message if isinstance(exc, VesaliusError) else type(exc).__name__
            self.refuse(who, operation, reason, destination)
            raise
        plan = RetrievePlan(operation, who, keys, found, destination)
        if found and operation in BEGUN:
            self.oversight.record(
                "transfer-begun",
                who,
                **self._details(operation, destination, keys),
                **_objects(plan),
            )
        return plan

    @contextmanager
    def transfer(self, plan: RetrievePlan, items: int | None = None) -> Iterator[RetrieveTally]:
        """Run a transfer of ``plan``'s instances (or of ``items`` pieces of them, such as
        frames): the caller counts each on the tally yielded; the transfer is audited when the
        context ends, however it ends, with what was never sent counted as remaining."""
        tally = RetrieveTally(remaining=len(plan.instances) if items is None else items)
        # not made current: a streamed answer ends the transfer in another context
        span = tracer.start_span("retrieve", attributes={"vesalius.operation": plan.operation})
        try:
            yield tally
        finally:
            self._finish(plan, tally)
            span.set_attribute("vesalius.completed", tally.completed)
            span.set_attribute("vesalius.failed", tally.failed)
            span.end()

    @contextmanager
    def open(self, instance: InstanceLocation) -> Iterator[BinaryIO]:
        """The stored file of ``instance`` as a seekable binary reader at its first byte,
        closed when the context ends; :class:`NotFoundError` when the blob is missing."""
        store = self.stores.get(instance.blob_store)
        try:
            reader = store.open(instance.blob_key)
        except FileNotFoundError as exc:
            raise NotFoundError(_missing(instance)) from exc
        with reader:
            yield reader

    def open_range(
        self, instance: InstanceLocation, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """The bytes ``start`` to ``end`` (exclusive; None: to the end) of ``instance``'s
        stored file, in chunks, as its store streams them."""
        store = self.stores.get(instance.blob_store)
        try:
            yield from store.open_range(instance.blob_key, start, end)
        except FileNotFoundError as exc:
            raise NotFoundError(_missing(instance)) from exc

    def _finish(self, plan: RetrievePlan, tally: RetrieveTally) -> None:
        """Audit a retrieve that ran: fully, partly, cancelled, or cut short (instances never
        attempted, e.g. the association ended)."""
        remaining = tally.remaining
        if tally.cancelled:
            outcome = "cancelled"
        elif remaining:
            outcome = "incomplete"
        elif tally.failed and not (tally.completed or tally.warning):
            outcome = "failure"
        elif tally.failed or tally.warning:
            outcome = "partial"
        else:
            outcome = "success"
        self.oversight.record(
            "instances-transferred",
            plan.who,
            outcome=outcome,
            **self._details(plan.operation, plan.destination, plan.keys),
            **_objects(plan),
            matched=len(plan.instances),
            completed=tally.completed,
            warning=tally.warning,
            failed=tally.failed,
            remaining=remaining,
            bytes=tally.bytes,
        )

    def refuse(self, who: Identity, operation: str, reason: str, destination: str = "") -> None:
        """Audit a retrieve refused before any sub-operation."""
        self.oversight.record(
            "instances-transferred",
            who,
            outcome="failure",
            reason=reason,
            **self._details(operation, destination, None),
        )

    @staticmethod
    def _details(operation: str, destination: str, keys: RetrieveKeys | None) -> dict[str, Any]:
        details: dict[str, Any] = {"operation": operation}
        if destination:
            details["destination"] = destination
        if keys is not None:
            details["level"] = keys.level
        return details


def _objects(plan: RetrievePlan) -> dict[str, Any]:
    """The patients and studies ``plan`` names, and its instances by study and SOP Class (the
    audit message's objects, PS3.15 A.5.3.5)."""
    classes: dict[str, Counter[str]] = {}
    for i in plan.instances:
        classes.setdefault(i.study_uid, Counter())[i.sop_class_uid] += 1
    return {
        "patient_ids": sorted({i.patient_id for i in plan.instances}),
        "study_uids": sorted(classes),
        "sop_classes": {study: dict(counts) for study, counts in sorted(classes.items())},
    }


def _missing(instance: InstanceLocation) -> str:
    return f"the stored file of instance {instance.sop_instance_uid} is missing"
