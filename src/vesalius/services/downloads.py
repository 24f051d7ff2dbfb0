"""Downloads: a study, or a selection of studies and series, as a streamed ZIP of its stored
files, or as DICOM media (a PS3.10 file set with its DICOMDIR, PS3.11 general purpose
interchange) in a streamed ZIP.

The stored files go out byte for byte (stored ZIP entries: no recompression), read a chunk at
a time from their blob stores; the index is read a page at a time; the DICOMDIR is built from
the index (never from the files) onto a spooled temporary file (memory up to a few MiB, disk
past that) and sent last. So memory stays bounded whatever the size of the download.

Names inside the ZIP come from the index (patient, study and series descriptions, which are
peer input) through :func:`vesalius.services.names.folder_name`: no path separators, no
``..``, no control characters; on media, File IDs are generated (PS3.10 8.5), never derived
from the data. The policy action is ``retrieve``; each download is audited when it ends, as
an Export (PS3.15 A.5.3.8), with how it ended (``success``, or ``incomplete`` when the client
went away).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from vesalius.dicom.dicomdir import (
    DicomdirWriter,
    element,
    file_id_component,
    file_record_keys,
    record_type,
)
from vesalius.dicom.uids import is_valid_uid
from vesalius.errors import NotFoundError, QueryError, VesaliusError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.downloads import DownloadRow, download_page, download_totals
from vesalius.services.download_layout import (
    image_record,
    patient_label,
    patient_record,
    series_label,
    series_record,
    study_label,
    study_record,
)
from vesalius.services.names import NameSpace, folder_name, instance_name
from vesalius.services.oversight import Oversight
from vesalius.services.policy import Resource
from vesalius.services.zipstream import ZipStream
from vesalius.storage import Stores

log = logging.getLogger(__name__)

Format = Literal["zip", "media"]
FORMATS: tuple[Format, ...] = ("zip", "media")
#: UIDs one selection may name (studies and series together).
MAX_SELECTED = 1000
#: Index rows read per page.
PAGE = 500
#: The DICOMDIR stays in memory up to this size, then goes to a temporary file.
SPOOL_BYTES = 4 << 20
CHUNK = 1 << 20


@dataclass(frozen=True)
class Selection:
    """What to download: whole studies and single series (either may be empty)."""

    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()

    def check(self) -> None:
        """:class:`QueryError` (400) unless the selection names 1 to :data:`MAX_SELECTED`
        valid UIDs."""
        uids = self.study_uids + self.series_uids
        if not uids:
            raise QueryError("name at least one study or series to download")
        if len(uids) > MAX_SELECTED:
            raise QueryError(f"at most {MAX_SELECTED} studies and series per download")
        for uid in uids:
            if not is_valid_uid(uid):
                raise QueryError(f"{uid[:80]!r} is not a valid UID")


@dataclass
class Download:
    """A download ready to stream: its file name, what it holds, and its bytes (:attr:`chunks`,
    an iterator to send as it comes)."""

    filename: str
    instances: int
    size: int
    #: Close it when the client goes away: the download is then audited as incomplete.
    chunks: Generator[bytes, None, None]


@dataclass
class _Progress:
    written: int = 0
    bytes: int = 0
    outcome: str = "incomplete"
    reason: str = ""


@dataclass
class _Tree:
    """Folder names (ZIP) or File ID numbers (media) of the patients, studies and series met
    so far: one entry per series, not per instance."""

    names: dict[tuple[str, int], str] = field(default_factory=dict)
    spaces: dict[tuple[str, int], NameSpace] = field(default_factory=dict)

    def space(self, level: str, pk: int) -> NameSpace:
        return self.spaces.setdefault((level, pk), NameSpace())


class DownloadService:
    """Streams downloads of stored studies and series (see the module's text)."""

    def __init__(
        self, catalog: Catalog, stores: Stores, *, oversight: Oversight, page: int = PAGE
    ) -> None:
        self.catalog = catalog
        self.stores = stores
        self.oversight = oversight
        self.page = page

    def download(self, selection: Selection, who: Identity, fmt: Format = "zip") -> Download:
        """Check and resolve ``selection`` for ``who``; the download to stream.
        :class:`NotFoundError` when nothing visible to ``who`` matches."""
        if fmt not in FORMATS:
            raise QueryError(f"format must be one of {', '.join(FORMATS)}")
        selection.check()
        resource = Resource(
            selection.study_uids, selection.series_uids, details={"operation": "download"}
        )
        self.oversight.check(who, "retrieve", resource)
        labels = self.oversight.visible_labels(who)
        with self.catalog.read() as conn:
            count, size, study_uids, patient_ids = download_totals(
                conn, selection.study_uids, selection.series_uids, labels=labels
            )
        if not count:
            self._audit(who, fmt, [], [], _Progress(outcome="failure", reason="not found"))
            raise NotFoundError("no stored study or series matches")
        if len(study_uids) == 1 and not selection.series_uids:
            stem = f"study-{study_uids[0]}"
        else:
            stem = f"download-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        filename = f"{stem}{'-media' if fmt == 'media' else ''}.zip"
        chunks = self._stream(selection, who, fmt, labels, study_uids, patient_ids)
        return Download(filename, count, size, coalesce(chunks))

    def _stream(
        self,
        selection: Selection,
        who: Identity,
        fmt: Format,
        labels: frozenset[str] | None,
        study_uids: list[str],
        patient_ids: list[str],
    ) -> Generator[bytes, None, None]:
        progress = _Progress()
        try:
            stream = ZipStream()
            try:
                if fmt == "media":
                    yield from self._media(stream, selection, labels, progress)
                else:
                    yield from self._zip(stream, selection, labels, progress)
            finally:
                stream.close()
            progress.outcome = "success"
        except VesaliusError as exc:
            progress.outcome, progress.reason = "failure", exc.message
            log.warning("download cut short: %s", exc.message)
            raise
        except OSError as exc:
            progress.outcome, progress.reason = "failure", str(exc.strerror or exc)
            log.warning("download cut short: %s", progress.reason)
            raise
        finally:
            self._audit(who, fmt, study_uids, patient_ids, progress)

    def _rows(self, selection: Selection, labels: frozenset[str] | None) -> Iterator[DownloadRow]:
        """The selection's rows, a page (and a short read) at a time."""
        after: tuple[int, int, int, int] | None = None
        while True:
            with self.catalog.read() as conn:
                rows = download_page(
                    conn,
                    selection.study_uids,
                    selection.series_uids,
                    labels=labels,
                    after=after,
                    limit=self.page,
                )
            yield from rows
            if len(rows) < self.page:
                return
            after = rows[-1].position

    def _file(self, row: DownloadRow, progress: _Progress) -> Iterator[bytes]:
        store = self.stores.get(row.blob_store)
        try:
            for chunk in store.open_range(row.blob_key, 0, None):
                progress.bytes += len(chunk)
                yield chunk
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"the stored file of instance {row.sop_instance_uid} is missing"
            ) from exc
        progress.written += 1

    def _zip(
        self,
        stream: ZipStream,
        selection: Selection,
        labels: frozenset[str] | None,
        progress: _Progress,
    ) -> Iterator[bytes]:
        """Patient / study / series folders named from the index, one file per instance."""
        tree = _Tree()
        top = NameSpace()
        for row in self._rows(selection, labels):
            patient = tree.names.get(("patient", row.patient_pk))
            if patient is None:
                patient = top.claim(folder_name(patient_label(row), "Patient"))
                tree.names[("patient", row.patient_pk)] = patient
            study = tree.names.get(("study", row.study_pk))
            if study is None:
                study = tree.space("patient", row.patient_pk).claim(
                    folder_name(study_label(row), "Study")
                )
                tree.names[("study", row.study_pk)] = study
            series = tree.names.get(("series", row.series_pk))
            if series is None:
                series = tree.space("study", row.study_pk).claim(
                    folder_name(series_label(row), "Series")
                )
                tree.names[("series", row.series_pk)] = series
            counter = tree.space("series", row.series_pk)
            name = instance_name(counter.next_number())
            yield from stream.entry(
                f"{patient}/{study}/{series}/{name}", self._file(row, progress), row.size
            )
        yield from stream.finish()

    def _media(
        self,
        stream: ZipStream,
        selection: Selection,
        labels: frozenset[str] | None,
        progress: _Progress,
    ) -> Iterator[bytes]:
        """``DICOM/Pnnnnnnn/Snnnnnnn/Ennnnnnn/Innnnnnn`` files and the ``DICOMDIR``
        describing them (PS3.10 7.2, PS3.3 F), last."""
        numbers: dict[tuple[str, int], str] = {}
        counters: dict[tuple[str, int], int] = {}
        now = datetime.now()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spooled:
            writer = DicomdirWriter(spooled, f"2.25.{uuid.uuid4().int}")  # type: ignore[arg-type]
            writer.start()
            last: tuple[int, int, int] = (-1, -1, -1)
            for row in self._rows(selection, labels):
                path: list[str] = ["DICOM"]
                for level, pk, parent, prefix in (
                    ("patient", row.patient_pk, ("top", 0), "P"),
                    ("study", row.study_pk, ("patient", row.patient_pk), "S"),
                    ("series", row.series_pk, ("study", row.study_pk), "E"),
                ):
                    if (level, pk) not in numbers:
                        counters[parent] = counters.get(parent, 0) + 1
                        numbers[(level, pk)] = file_id_component(prefix, counters[parent])
                    path.append(numbers[(level, pk)])
                if row.patient_pk != last[0]:
                    patient_record(writer, row)
                if row.study_pk != last[1]:
                    study_record(writer, row, counters[("patient", row.patient_pk)], now)
                if row.series_pk != last[2]:
                    series_record(writer, row, counters[("study", row.study_pk)])
                last = (row.patient_pk, row.study_pk, row.series_pk)
                counters[("series", row.series_pk)] = number = (
                    counters.get(("series", row.series_pk), 0) + 1
                )
                path.append(file_id_component("I", number))
                self._leaf_record(writer, row, path, number)
                yield from stream.entry("/".join(path), self._file(row, progress), row.size)
            writer.finish()
            size = spooled.tell()
            spooled.seek(0)
            yield from stream.entry("DICOMDIR", iter(lambda: spooled.read(CHUNK), b""), size)
        yield from stream.finish()

    def _leaf_record(
        self, writer: DicomdirWriter, row: DownloadRow, path: list[str], number: int
    ) -> None:
        """The record of one instance: IMAGE from the index; another type (SR DOCUMENT,
        PRESENTATION...) with keys from the file's header, read for these few instances."""
        kind = record_type(row.sop_class_uid)
        if kind == "IMAGE":
            image_record(writer, row, path, number)
            return
        try:
            with self.stores.get(row.blob_store).open(row.blob_key) as fh:
                keys = file_record_keys(kind, fh)
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"the stored file of instance {row.sop_instance_uid} is missing"
            ) from exc
        except ValueError as exc:  # a Type 1 key missing: the keys the index has
            log.warning("DICOMDIR: %s record of %s: %s", kind, row.sop_instance_uid, exc)
            instance_number = row.instance_number if row.instance_number is not None else number
            keys = [element(0x00200013, "IS", str(instance_number))]
        writer.add(
            kind,
            keys,
            file_id=path,
            sop_class_uid=row.sop_class_uid,
            sop_instance_uid=row.sop_instance_uid,
            transfer_syntax_uid=row.transfer_syntax_uid,
        )

    def _audit(
        self,
        who: Identity,
        fmt: Format,
        study_uids: Sequence[str],
        patient_ids: Sequence[str],
        progress: _Progress,
    ) -> None:
        details: dict[str, object] = {
            "destination": "download (DICOM media)" if fmt == "media" else "download (ZIP)",
            "format": fmt,
            "study_uids": list(study_uids),
            "patient_ids": list(patient_ids),
            "instances": progress.written,
            "bytes": progress.bytes,
            "deidentified": False,
        }
        if progress.reason:
            details["reason"] = progress.reason
        self.oversight.record("study-exported", who, progress.outcome, **details)


def coalesce(
    chunks: Generator[bytes, None, None], size: int = CHUNK
) -> Generator[bytes, None, None]:
    """``chunks`` joined into pieces of about ``size`` bytes (a ZIP's headers and small files
    are many small pieces; each piece costs the server a hand-over to its event loop).
    Closing it closes ``chunks`` (so a download cut short is audited at once)."""
    pending: list[bytes] = []
    held = 0
    try:
        for chunk in chunks:
            pending.append(chunk)
            held += len(chunk)
            if held >= size:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending, held = [], 0
        if pending:
            yield b"".join(pending)
    finally:
        chunks.close()
