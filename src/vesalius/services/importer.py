"""Bulk import (``vesalius import``): files, folders and zip archives into the archive.

Every instance goes through :class:`IngestService` like a C-STORE does: a loose file is copied
into staging (:meth:`IngestService.ingest_copy`), a zip member is extracted straight into
staging, one member at a time (:meth:`IngestService.staging_path`,
:meth:`IngestService.ingest_staged`), so a large archive is never unpacked whole. Member names
are never used as paths. Work runs on a thread pool; outcomes are reported one by one.

What is skipped is classified: ``not DICOM`` (no Part 10 header and no data set), ``DICOMDIR``
(a media directory, PS3.10 8.6, not an instance), ``not Part 10`` (a data set without File Meta,
PS3.10 7.1), ``unreadable`` (the source could not be read) and ``rejected: <reason>`` (the
ingest service refused it). The first two are expected in a folder of images; the rest mean
DICOM data was not imported.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from vesalius.errors import OutOfResourcesError, VesaliusError
from vesalius.identity import Identity
from vesalius.services.ingest import IngestResult, IngestService

CHUNK = 1 << 20
HEAD = 132  # preamble (128) + "DICM" (PS3.10 7.1)
NOT_DICOM = "not DICOM"
NOT_PART10 = "not Part 10 (no File Meta)"
DICOMDIR = "DICOMDIR"
#: Skip reasons that are not failures: such files are expected next to images.
BENIGN = frozenset({NOT_DICOM, DICOMDIR})

Outcome = Literal["created", "replaced", "kept", "discarded", "skipped"]


@dataclass(frozen=True)
class ImportItem:
    """What happened to one file or zip member."""

    source: str
    outcome: Outcome
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "skipped" and self.reason not in BENIGN


@dataclass
class ImportReport:
    """Counts by outcome and skip reason."""

    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    failed_sources: list[tuple[str, str]] = field(default_factory=list)

    def add(self, item: ImportItem) -> None:
        self.outcomes[item.outcome] += 1
        if item.outcome == "skipped":
            self.skipped[item.reason] += 1
        if item.failed:
            self.failed_sources.append((item.source, item.reason))

    @property
    def failed(self) -> int:
        return sum(n for reason, n in self.skipped.items() if reason not in BENIGN)


def _looks_like_data_set(head: bytes) -> bool:
    """A raw data set without preamble starts with a group 0002 or 0008 element (PS3.5 7.1)."""
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack(order + "HH", head[:4])
        if group in (0x0002, 0x0008) and element < 0x0100:
            return True
    return False


def classify(head: bytes) -> str | None:
    """None for a Part 10 file, else the skip reason, from the first 132 bytes."""
    if len(head) >= HEAD and head[128:132] == b"DICM":
        return None
    if _looks_like_data_set(head):
        return NOT_PART10
    return NOT_DICOM


# ---------------------------------------------------------------------------------------------
# Sources


@dataclass
class _Zip:
    """An open zip archive shared by the tasks extracting its members; closed after the last."""

    path: Path
    archive: zipfile.ZipFile
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self) -> None:
        with self.lock:
            self.pending -= 1
            last = self.pending == 0
        if last:
            self.archive.close()


@dataclass(frozen=True)
class _File:
    path: Path


@dataclass(frozen=True)
class _Member:
    zip: _Zip
    info: zipfile.ZipInfo


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip" and zipfile.is_zipfile(path)


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    yield Path(root) / name
        else:
            yield path


def _members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [info for info in archive.infolist() if not info.is_dir()]


def _overlapping(archive: zipfile.ZipFile) -> bool:
    """Whether two members share bytes: the "non-recursive" zip bomb, whose entries all point
    into one compressed stream, each inflating to the whole. A member's local header and data
    (PKWARE APPNOTE 4.3.7) end before the next member's header in any zip a tool wrote;
    Python's zipfile checks this itself only from 3.11.8 and 3.12.2."""
    entries = sorted(archive.infolist(), key=lambda info: info.header_offset)
    return any(
        this.header_offset + 30 + this.compress_size > after.header_offset
        for this, after in itertools.pairwise(entries)
    )


def count_sources(paths: Iterable[Path]) -> int:
    """How many files and zip members an import of ``paths`` will look at."""
    total = 0
    for path in _files(paths):
        if _is_zip(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    total += len(_members(archive))
                continue
            except (zipfile.BadZipFile, OSError):
                pass
        total += 1
    return total


def _sources(
    paths: Iterable[Path], broken: Callable[[ImportItem], None]
) -> Iterator[_File | _Member]:
    for path in _files(paths):
        if not _is_zip(path):
            yield _File(path)
            continue
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            broken(ImportItem(str(path), "skipped", f"unreadable: {exc}"))
            continue
        members = _members(archive)
        if members and _overlapping(archive):
            archive.close()
            broken(ImportItem(str(path), "skipped", "unreadable: members overlap (a zip bomb)"))
            continue
        if not members:
            archive.close()
            continue
        shared = _Zip(path, archive, pending=len(members))
        for info in members:
            yield _Member(shared, info)


# ---------------------------------------------------------------------------------------------
# One item


class Importer:
    """Runs an import through ``ingest`` as ``who``."""

    def __init__(self, ingest: IngestService, who: Identity) -> None:
        self.ingest = ingest
        self.who = who

    def _ingested(self, source: str, run: Callable[[], IngestResult]) -> ImportItem:
        try:
            result = run()
        except VesaliusError as exc:
            return ImportItem(source, "skipped", f"rejected: {exc.message}")
        return ImportItem(source, result.outcome)

    def import_file(self, path: Path) -> ImportItem:
        source = str(path)
        if path.name.upper() == "DICOMDIR":
            return ImportItem(source, "skipped", DICOMDIR)
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEAD)
        except OSError as exc:
            return ImportItem(source, "skipped", f"unreadable: {exc.strerror}")
        reason = classify(head)
        if reason:
            return ImportItem(source, "skipped", reason)
        return self._ingested(source, lambda: self.ingest.ingest_copy(path, self.who))

    def _extract(self, src: IO[bytes], head: bytes, target: Path) -> None:
        try:
            with open(target, "wb") as dst:
                dst.write(head)
                shutil.copyfileobj(src, dst, CHUNK)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise OutOfResourcesError(f"cannot extract into staging: {exc.strerror}") from exc

    def import_member(self, member: _Member) -> ImportItem:
        info = member.info
        source = f"{member.zip.path}:{info.filename}"
        if Path(info.filename).name.upper() == "DICOMDIR":
            return ImportItem(source, "skipped", DICOMDIR)
        if info.file_size + self.ingest.min_free_bytes > self.ingest.free_bytes():
            return ImportItem(source, "skipped", "rejected: larger than the free space")
        try:
            with member.zip.archive.open(info) as src:
                head = src.read(HEAD)
                reason = classify(head)
                if reason:
                    return ImportItem(source, "skipped", reason)
                staged = self.ingest.staging_path()
                try:
                    self._extract(src, head, staged)
                except (zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError):
                    staged.unlink(missing_ok=True)
                    raise
        except OutOfResourcesError as exc:
            return ImportItem(source, "skipped", f"rejected: {exc.message}")
        except (zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError, OSError) as exc:
            return ImportItem(source, "skipped", f"unreadable: {exc}")
        return self._ingested(source, lambda: self.ingest.ingest_staged(staged, self.who))

    def _run(self, source: _File | _Member) -> ImportItem:
        if isinstance(source, _File):
            return self.import_file(source.path)
        try:
            return self.import_member(source)
        finally:
            source.zip.done()

    # -----------------------------------------------------------------------------------------

    def run(
        self,
        paths: Iterable[Path],
        *,
        workers: int = 4,
        on_item: Callable[[ImportItem], None] | None = None,
    ) -> ImportReport:
        """Import everything under ``paths`` with ``workers`` threads; ``on_item`` is called
        in this thread for each file or member as it finishes."""
        report = ImportReport()

        def finished(item: ImportItem) -> None:
            report.add(item)
            if on_item is not None:
                on_item(item)

        window = max(1, workers) * 4
        running: set[Future[ImportItem]] = set()
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="import") as pool:
            try:
                for source in _sources(paths, finished):
                    if len(running) >= window:
                        done, running = wait(running, return_when=FIRST_COMPLETED)
                        for future in done:
                            finished(future.result())
                    running.add(pool.submit(self._run, source))
                for future in as_completed(running):
                    finished(future.result())
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return report
