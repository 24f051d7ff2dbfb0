"""Ingest: every way an instance arrives (C-STORE, STOW-RS, import) ends here.

Each door writes the file into the local spool (``storage/spool.py``). There it is checked
(Part 10 header, required UIDs, complete structure) without decoding pixel data, in one pass
that also yields the index values and the WADO-RS metadata; hashed, put into the current blob
store under a generated key (a rename for the folder store), and indexed with that store's id;
the index commit is the last step, so a success means the instance is stored and findable
(PS3.4 B.2.3). A deflated data set (PS3.5 A.5) is read through its inflated twin, streamed
into the spool next to the file and removed after; past ``max_inflated_bytes`` it is refused
(0xA700 / 413) and nothing is stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace

from vesalius.dicom.header import InstanceHeader
from vesalius.dicom.structure import dataset_offset_in
from vesalius.dicom.uids import STORAGE_SOP_CLASS_UIDS
from vesalius.errors import (
    DataSetMismatchError,
    OutOfResourcesError,
    SOPClassNotSupportedError,
    VesaliusError,
)
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.records import BlobInfo, BlobRef, DuplicatePolicy, Outcome
from vesalius.services.metadata import read_with_metadata
from vesalius.services.oversight import Oversight
from vesalius.storage import Spool, Stores, new_blob_key

log = logging.getLogger(__name__)
#: OpenTelemetry (API only: spans are recorded when the wiring installs the SDK).
tracer = trace.get_tracer(__name__)
CHUNK = 1 << 20
#: The access labels the rules give the study of an arriving instance (``services/labels.py``).
Labeler = Callable[[InstanceHeader, bytes, Identity], frozenset[str]]


@dataclass(frozen=True)
class IngestResult:
    """What happened to one instance."""

    header: InstanceHeader
    outcome: Outcome
    size: int


class ContentHash:
    """The size and SHA-256 of a file being staged, computed as it is written: the one
    convention by which the archive records (and later verifies) what it stores, whichever
    door the file came in by."""

    def __init__(self, first: bytes = b"") -> None:
        self._sha = hashlib.sha256(first)
        self.size = len(first)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)
        self.size += len(data)

    def digest(self) -> tuple[int, str]:
        """``(size, SHA-256 hex)``, as :meth:`IngestService.ingest_staged` takes it."""
        return self.size, self._sha.hexdigest()


def _digest(path: Path) -> tuple[int, str]:
    content = ContentHash()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            content.update(chunk)
    return content.digest()


class IngestService:
    """Stores instances: validate, hash, move from the spool into the current blob store,
    index."""

    def __init__(
        self,
        catalog: Catalog,
        spool: Spool,
        stores: Stores,
        *,
        oversight: Oversight,
        duplicate_policy: DuplicatePolicy = "keep",
        min_free_bytes: int = 0,
        max_inflated_bytes: int = 256 << 20,
        labeler: Labeler | None = None,
    ) -> None:
        self.catalog = catalog
        #: The access labels an arriving instance gives its study (the label rules).
        self.labeler = labeler
        self.spool = spool
        self.stores = stores
        self.oversight = oversight
        self.duplicate_policy: DuplicatePolicy = duplicate_policy
        self.min_free_bytes = min_free_bytes
        #: Largest data set a deflated instance may inflate to (0: no limit).
        self.max_inflated_bytes = max_inflated_bytes

    def free_bytes(self) -> int:
        """Bytes free for new instances: in the spool they are written to and the store they
        go to, whichever has less (one filesystem for the folder store)."""
        return min(self.spool.free_bytes(), self.stores.current.free_bytes())

    def may_store(self, who: Identity) -> None:
        """Raise :class:`~vesalius.errors.ForbiddenError` unless ``who`` may store at all (a
        STOW-RS request is refused with 403 before its body is read)."""
        self.oversight.check(who, "store")

    def check_space(self) -> None:
        """Raise :class:`OutOfResourcesError` (0xA700) when storage is nearly full."""
        if self.min_free_bytes and self.free_bytes() < self.min_free_bytes:
            raise OutOfResourcesError("storage is full")

    def staging_file(self) -> tuple[int, Path]:
        """A new empty file in the spool (made ahead of need, see
        :mod:`vesalius.storage.staging`), open for writing: its descriptor and path. The caller
        fills it (hashing with :class:`ContentHash` as it writes) and hands it to
        :meth:`ingest_staged`, or removes it. ``OSError`` when none can be created."""
        return self.spool.staging_file()

    def staging_path(self) -> Path:
        """:meth:`staging_file`, for a caller that opens the file itself."""
        fd, path = self.staging_file()
        os.close(fd)
        return path

    @tracer.start_as_current_span("ingest")
    def ingest_staged(
        self,
        path: Path,
        who: Identity,
        *,
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
        expected_study: str | None = None,
        digest: tuple[int, str] | None = None,
        keep_refused: bool = False,
    ) -> IngestResult:
        """Ingest a Part 10 file already in the spool; it is moved into the current store or
        removed (left in the spool for the caller when refused and ``keep_refused``).

        ``digest`` is the file's (size, SHA-256 hex) when the receiver computed it while
        writing the file, which saves reading it again."""
        try:
            self.oversight.check(who, "store")
            self.check_space()

            def check(header: InstanceHeader) -> None:
                problem = ""
                if expected_sop_instance and expected_sop_instance != header.sop_instance_uid:
                    problem = "SOP Instance UID differs from the command's"
                elif expected_sop_class and expected_sop_class != header.sop_class_uid:
                    if header.sop_class_uid not in STORAGE_SOP_CLASS_UIDS:
                        unsupported = SOPClassNotSupportedError(
                            f"SOP Class {header.sop_class_uid} is not supported"
                        )
                        unsupported.instance = (header.sop_class_uid, header.sop_instance_uid)
                        raise unsupported
                    problem = "SOP Class UID differs from the command's"
                elif expected_study and expected_study != header.study_uid:
                    problem = f"instance is not in study {expected_study}"
                if problem:
                    error = DataSetMismatchError(problem)
                    error.instance = (header.sop_class_uid, header.sop_instance_uid)
                    raise error

            header, metadata = read_with_metadata(
                path, check, max_inflated=self.max_inflated_bytes or None, scratch=path.parent
            )
            size, sha256 = digest if digest is not None else _digest(path)
            blob = BlobRef(self.stores.current_id, new_blob_key())
            store = self.stores.get(blob.store)
            store.put_file(blob.key, path)
        except Exception:
            if not keep_refused:
                path.unlink(missing_ok=True)
            raise
        try:
            labels = self.labeler(header, metadata, who) if self.labeler else frozenset()
            result = self.catalog.record(
                header,
                BlobInfo(blob.key, size, sha256, blob.store),
                self.duplicate_policy,
                who.name,  # the sender: calling AE title, or the user (statistics)
                metadata,
                labels,
            )
        except BaseException as exc:
            store.delete(blob.key)
            if isinstance(exc, VesaliusError):
                exc.instance = (header.sop_class_uid, header.sop_instance_uid)
            raise
        outcome = result.outcome
        if outcome == "discarded" and self._same_data_set(blob, result.stored_blob):
            outcome = "kept"  # only the File Meta differs (e.g. the Source AE Title)
        if outcome in ("kept", "discarded"):
            store.delete(blob.key)
        elif result.old_blob:
            self._delete(result.old_blob)
        if outcome == "discarded":
            log.warning(
                "%s sent an instance again with other content; the stored copy is kept "
                "(ingest.duplicate_policy = keep)",
                who,
            )
            log.debug("the instance sent again: %s", header.sop_instance_uid)  # UIDs at debug
        trace.get_current_span().set_attribute("vesalius.outcome", outcome)
        self.oversight.record(
            "instance-stored",
            who,
            outcome=outcome,
            patient_id=header.patient_id,
            study_uid=header.study_uid,
            sop_class_uid=header.sop_class_uid,
            sop_instance_uid=header.sop_instance_uid,
            sha256=sha256,
            size=size,
        )
        return IngestResult(header, outcome, size)

    def _delete(self, blob: BlobRef) -> None:
        """Remove a blob no row references any more (after the commit)."""
        try:
            self.stores.get(blob.store).delete(blob.key)
        except (OSError, VesaliusError) as exc:
            log.warning("cannot remove blob %s from store %s: %s", blob.key, blob.store, exc)

    def _same_data_set(self, one: BlobRef, other: BlobRef | None) -> bool:
        """Whether two stored blobs hold the same data set (their File Meta may differ),
        read through their stores."""
        if other is None:
            return False
        try:
            with (
                self.stores.get(one.store).open(one.key) as a,
                self.stores.get(other.store).open(other.key) as b,
            ):
                starts = dataset_offset_in(a), dataset_offset_in(b)
                sizes = a.seek(0, 2) - starts[0], b.seek(0, 2) - starts[1]
                if sizes[0] != sizes[1]:
                    return False
                a.seek(starts[0])
                b.seek(starts[1])
                while chunk := a.read(CHUNK):
                    if chunk != b.read(len(chunk)):
                        return False
        except (OSError, VesaliusError):
            return False
        return True

    def ingest_copy(self, source: Path, who: Identity) -> IngestResult:
        """Ingest a file that stays where it is (``vesalius import``): copy, then ingest."""
        staged = self.staging_path()
        try:
            shutil.copyfile(source, staged)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise OutOfResourcesError(f"cannot copy into staging: {exc.strerror}") from exc
        return self.ingest_staged(staged, who)
