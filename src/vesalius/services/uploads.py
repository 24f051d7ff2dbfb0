"""Uploads (the REST API's ``POST /uploads``, the UI's drag and drop): files a client sent,
already received into the spool, stored through the ingest service one by one, with what was
refused and why.

A file is a Part 10 instance (PS3.10 7.1) or a zip of them (PKWARE APPNOTE), told apart by
their first bytes, never by their names. A zip is checked as a whole before anything from it
is stored: its directory readable, no overlapping members (a zip bomb), its declared size
within ``http.max_upload_mb``, ``http.max_inflation_ratio`` times its own size and the free
space; then every member is extracted into the spool, one at a time, and only when all came
out whole (CRC checked) are they ingested, so a corrupt zip stores nothing. Member and file
names are shown back to the client, never used as paths.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vesalius.errors import VesaliusError
from vesalius.identity import Identity
from vesalius.services.importer import DICOMDIR, HEAD, classify
from vesalius.services.ingest import IngestService

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: A zip's declared content may always reach this; past it ``max_inflation_ratio`` applies.
FREE_INFLATION = 1 << 20
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
#: Longest name shown back for a file or member.
MAX_NAME = 255


@dataclass(frozen=True)
class Received:
    """A file of an upload, received into the spool: the name the client gave it (shown
    back, never a path), the staging file, and its (size, SHA-256) when computed on receipt."""

    name: str
    path: Path
    digest: tuple[int, str] | None = None


@dataclass(frozen=True)
class StoredFile:
    """An instance stored (``outcome``: created, replaced, or kept: already stored as is)."""

    name: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    outcome: str


@dataclass(frozen=True)
class RefusedFile:
    """A file or zip member not stored, and why."""

    name: str
    reason: str


@dataclass
class UploadReport:
    """What an upload stored and refused, in the order the files came."""

    stored: list[StoredFile] = field(default_factory=list)
    refused: list[RefusedFile] = field(default_factory=list)

    @property
    def study_uids(self) -> list[str]:
        return list(dict.fromkeys(item.study_uid for item in self.stored))


def shown_name(name: str) -> str:
    """A client's file name as it is shown back: printable, at most :data:`MAX_NAME`."""
    text = "".join(c if c.isprintable() else "?" for c in name).strip()
    return text[:MAX_NAME] or "(unnamed)"


class _ZipRefused(Exception):
    """The zip as a whole is refused (the reason is the message)."""


class UploadService:
    """Stores uploaded files through ``ingest``."""

    def __init__(
        self, ingest: IngestService, *, max_bytes: int = 4096 << 20, max_inflation_ratio: int = 100
    ) -> None:
        self.ingest = ingest
        #: Largest request body and largest zip content (0: no limit; ``http.max_upload_mb``).
        self.max_bytes = max_bytes
        #: Largest ratio of a zip's content to its size (``http.max_inflation_ratio``).
        self.max_inflation_ratio = max_inflation_ratio

    def may_upload(self, who: Identity) -> None:
        """Raise before any byte is received: :class:`~vesalius.errors.ForbiddenError` unless
        ``who`` may store, :class:`~vesalius.errors.OutOfResourcesError` when storage is
        nearly full."""
        self.ingest.may_store(who)
        self.ingest.check_space()

    def staging_path(self) -> Path:
        """A new empty file in the spool to receive one uploaded file into."""
        return self.ingest.staging_path()

    def store(self, files: list[Received], who: Identity) -> UploadReport:
        """Store every received file (blocking); each staging file is gone afterwards."""
        report = UploadReport()
        try:
            for received in files:
                self._store_file(received, who, report)
        finally:
            for received in files:
                received.path.unlink(missing_ok=True)
        self.ingest.oversight.record(
            "upload",
            who,
            "success" if report.stored or not report.refused else "failure",
            files=len(files),
            stored=len(report.stored),
            refused=len(report.refused),
            study_uids=report.study_uids,
        )
        return report

    def _store_file(self, received: Received, who: Identity, report: UploadReport) -> None:
        name = shown_name(received.name)
        try:
            with open(received.path, "rb") as fh:
                head = fh.read(HEAD)
        except OSError as exc:
            report.refused.append(RefusedFile(name, f"unreadable: {exc.strerror}"))
            return
        if head[:4] in ZIP_MAGIC:
            self._store_zip(name, received.path, who, report)
            return
        reason = self._skip_reason(name, head)
        if reason:
            report.refused.append(RefusedFile(name, reason))
            received.path.unlink(missing_ok=True)
            return
        self._ingest(name, received.path, received.digest, who, report)

    @staticmethod
    def _skip_reason(name: str, head: bytes) -> str:
        if PurePosixPath(name).name.upper() == DICOMDIR:
            return "DICOMDIR: a media directory (PS3.10 8.6), not an instance"
        reason = classify(head)
        if reason and not head:
            return "empty file"
        return reason or ""

    def _ingest(
        self,
        name: str,
        path: Path,
        digest: tuple[int, str] | None,
        who: Identity,
        report: UploadReport,
    ) -> None:
        try:
            result = self.ingest.ingest_staged(path, who, digest=digest)
        except VesaliusError as exc:
            report.refused.append(RefusedFile(name, exc.message))
            return
        except Exception:
            log.exception("upload: ingest failed unexpectedly")
            report.refused.append(RefusedFile(name, "processing failure"))
            return
        finally:
            path.unlink(missing_ok=True)  # moved into storage, or refused
        header = result.header
        if result.outcome == "discarded":
            reason = "an instance with this SOP Instance UID is stored with other content (kept)"
            report.refused.append(RefusedFile(name, reason))
            return
        report.stored.append(
            StoredFile(
                name, header.sop_instance_uid, header.study_uid, header.series_uid, result.outcome
            )
        )

    # ------------------------------------------------------------------------------ zips

    def _store_zip(self, name: str, path: Path, who: Identity, report: UploadReport) -> None:
        extracted: list[tuple[str, Path]] = []
        refused: list[RefusedFile] = []
        try:
            with zipfile.ZipFile(path) as archive:
                members = self._check_zip(archive, path.stat().st_size)
                for info in members:
                    member = shown_name(f"{name}/{info.filename}")
                    staged = self._extract(archive, info, member, refused)
                    if staged is not None:
                        extracted.append((member, staged))
        except (_ZipRefused, zipfile.BadZipFile, OSError) as exc:
            for _member, staged in extracted:
                staged.unlink(missing_ok=True)
            report.refused.append(RefusedFile(name, _zip_reason(exc)))
            return
        finally:
            path.unlink(missing_ok=True)
        report.refused.extend(refused)
        for member, staged in extracted:
            self._ingest(member, staged, None, who, report)

    def _check_zip(self, archive: zipfile.ZipFile, size: int) -> list[zipfile.ZipInfo]:
        """The members to extract, after the checks of the whole zip."""
        members = [info for info in archive.infolist() if not info.is_dir()]
        if not members:
            raise _ZipRefused("the zip holds no files")
        entries = sorted(archive.infolist(), key=lambda info: info.header_offset)
        if any(
            this.header_offset + 30 + this.compress_size > after.header_offset
            for this, after in itertools.pairwise(entries)
        ):
            raise _ZipRefused("its members overlap (a zip bomb)")
        content = sum(info.file_size for info in members)
        if self.max_bytes and content > self.max_bytes:
            raise _ZipRefused(
                f"it expands to more than {self.max_bytes >> 20} MiB (http.max_upload_mb)"
            )
        ratio = self.max_inflation_ratio
        if ratio and content > FREE_INFLATION and content > ratio * size:
            raise _ZipRefused(
                f"it expands to more than {ratio} times its size (http.max_inflation_ratio): "
                "refused as a zip bomb"
            )
        if content + self.ingest.min_free_bytes > self.ingest.free_bytes():
            raise _ZipRefused("its content is larger than the free space")
        return members

    def _extract(
        self,
        archive: zipfile.ZipFile,
        info: zipfile.ZipInfo,
        member: str,
        refused: list[RefusedFile],
    ) -> Path | None:
        """Extract one member into a staging file (None: refused on its first bytes);
        :class:`_ZipRefused` when it cannot be read whole."""
        try:
            with archive.open(info) as src:
                head = src.read(HEAD)
                reason = self._skip_reason(info.filename, head)
                if reason:
                    refused.append(RefusedFile(member, reason))
                    return None
                staged = self.staging_path()
                try:
                    with open(staged, "wb") as dst:
                        dst.write(head)
                        shutil.copyfileobj(src, dst, CHUNK)
                except BaseException:
                    staged.unlink(missing_ok=True)
                    raise
        except (zipfile.BadZipFile, zlib.error, RuntimeError, EOFError, NotImplementedError) as exc:
            raise _ZipRefused(f"member {member} cannot be read: {exc}") from exc
        return staged


def _zip_reason(exc: Exception) -> str:
    if isinstance(exc, _ZipRefused):
        return f"zip refused: {exc}"
    if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile):
        return f"zip refused: cannot extract into staging: {exc.strerror or exc}"
    return f"not a readable zip: {exc}"
