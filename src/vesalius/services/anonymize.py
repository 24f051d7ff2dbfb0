"""De-identification of a stored study (PS3.15 Annex E): into a new study in this archive (through
ingest, so it is indexed like any other), or exported to a folder or a zip file.

``vesalius anonymize`` calls it now, the REST API later. The policy action is ``export`` (and,
into the archive, ``store``: ingest checks it); the work is audited as ``study-anonymized``
(into the archive) or ``study-exported`` (folder, zip), with the original and new Study
Instance UIDs, the original Patient ID and the counts. One instance at a time is read from its
blob store, de-identified (``dicom/deid.py``) and written, so a study is never held in memory;
written file names are generated (``S001/I00001.dcm``), never taken from UIDs or peer input.

Keys come from the site secret (:class:`SiteSecret`): UIDs map to the same ``2.25`` UIDs, a
patient to the same pseudonym and date offset, at every call. Each run records a row of the
pseudonym map (``index/pseudonyms.py``), which only ``admin`` may read back
(:meth:`AnonymizeService.reidentify`, audited as ``study-reidentified``).

Instances whose pixels may show text (Burned In Annotation YES, or absent for ultrasound,
secondary capture, documents...) are flagged for review and left out unless the caller
includes them (still flagged): the profile's Clean Pixel Data Option is not done here.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from vesalius.dicom.deid import (
    Keys,
    Options,
    burned_in_reason,
    date_offset,
    deidentify,
    identifying_values,
    pseudonym,
    remap_uid,
)
from vesalius.errors import (
    ConfigError,
    InvalidDataError,
    NotFoundError,
    OutOfResourcesError,
    QueryError,
)
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import InstanceLocation, RetrieveKeys, find_instances
from vesalius.index.pseudonyms import PseudonymRow, add_pseudonym, find_pseudonyms
from vesalius.services.ingest import IngestService
from vesalius.services.oversight import Oversight
from vesalius.services.policy import Resource
from vesalius.services.retrieve import RetrieveService

log = logging.getLogger(__name__)

SECRET_BYTES = 32


class SiteSecret:
    """The key of every keyed value of de-identification, read from ``path``; made at first
    use (random, mode 0600) when the file does not exist. Whoever holds it can recompute a
    patient's pseudonym from their ID: keep it like a password, and keep it (a new secret
    gives new UIDs and pseudonyms to the same studies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value: bytes | None = None

    def value(self) -> bytes:
        if self._value is None:
            self._value = self._load()
        return self._value

    def _load(self) -> bytes:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the secret {self.path}: {exc.strerror}") from exc
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(SECRET_BYTES) + "\n")
            log.warning("made a new de-identification secret in %s: keep it safe", self.path)
        try:
            text = self.path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret {self.path}: {exc.strerror}") from exc
        if len(text) < 32:
            raise ConfigError(f"the secret {self.path} is shorter than 32 characters")
        if self.path.stat().st_mode & 0o077:
            log.warning("the secret %s is readable by others: chmod 600 it", self.path)
        return text


@dataclass(frozen=True)
class Flagged:
    """An instance set aside for a person to review its pixels."""

    sop_instance_uid: str  # the new UID (what the reviewer finds in the output)
    reason: str
    included: bool


@dataclass
class AnonymizeResult:
    """What one run did."""

    study_uid: str
    new_study_uid: str
    pseudonym: str
    destination: str
    written: int = 0
    flagged: list[Flagged] = field(default_factory=list)
    #: Into the archive: instances that were there already with other content (a run with
    #: other options made the same UIDs); the stored copies were kept.
    discarded: int = 0

    @property
    def excluded(self) -> int:
        return sum(1 for f in self.flagged if not f.included)


class _Writer(Protocol):
    def write(self, name: str, ds: Dataset) -> None: ...
    def close(self) -> None: ...


def _save(ds: Dataset, fh: IO[bytes]) -> None:
    ds.save_as(fh, enforce_file_format=True)


class _ArchiveWriter:
    def __init__(self, ingest: IngestService, who: Identity) -> None:
        self.ingest = ingest
        self.who = who
        #: Instances stored before with other content (an earlier run, other options): the
        #: archive kept the stored copy (ingest.duplicate_policy).
        self.discarded = 0

    def write(self, name: str, ds: Dataset) -> None:
        staged = self.ingest.staging_path()
        try:
            with open(staged, "wb") as fh:
                _save(ds, fh)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        outcome = self.ingest.ingest_staged(staged, self.who).outcome
        if outcome == "discarded":
            self.discarded += 1

    def close(self) -> None:
        return None


class _FolderWriter:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, ds: Dataset) -> None:
        path = self.folder / name
        path.parent.mkdir(exist_ok=True)
        with open(path, "xb") as fh:  # never overwrite what is there
            _save(ds, fh)

    def close(self) -> None:
        return None


class _ZipWriter:
    def __init__(self, target: Path | IO[bytes]) -> None:
        # a path: a new file; a stream (a download) may not seek: zipfile then writes data
        # descriptors after each member
        if isinstance(target, Path):
            self.archive = zipfile.ZipFile(target, "x", compression=zipfile.ZIP_DEFLATED)
        else:
            self.archive = zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED)

    def write(self, name: str, ds: Dataset) -> None:
        # pydicom seeks while it writes; a zip member cannot: through a spooled file (one
        # instance at most, on disk past a few MiB), then streamed into the member
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spooled:
            _save(ds, spooled)
            spooled.seek(0)
            with self.archive.open(name, "w", force_zip64=True) as member:
                shutil.copyfileobj(spooled, member, 1 << 20)

    def close(self) -> None:
        self.archive.close()


Progress = Callable[[int, int], None]


class AnonymizeService:
    """De-identifies stored studies; keeps and answers the pseudonym map."""

    def __init__(
        self,
        catalog: Catalog,
        retrieve: RetrieveService,
        ingest: IngestService,
        *,
        oversight: Oversight,
        secret: SiteSecret,
    ) -> None:
        self.catalog = catalog
        self.retrieve = retrieve
        self.ingest = ingest
        self.oversight = oversight
        self.secret = secret

    def anonymize(
        self,
        study_uid: str,
        who: Identity,
        options: Options | None = None,
        *,
        output: Path | None = None,
        zip_file: Path | None = None,
        include_burned_in: bool = False,
        progress: Progress | None = None,
        zip_stream: IO[bytes] | None = None,
    ) -> AnonymizeResult:
        """De-identify study ``study_uid`` into the archive (no ``output`` nor ``zip_file``),
        a folder or a zip file (or a zip written to ``zip_stream``, a download);
        ``progress(done, total)`` is called as instances are done."""
        options = options or Options()
        zipped = zip_file is not None or zip_stream is not None
        destination = "zip" if zipped else "folder" if output else "archive"
        kind = "study-anonymized" if destination == "archive" else "study-exported"
        result = AnonymizeResult(study_uid, "", "", destination)
        patient_id = ""
        writer: _Writer | None = None
        try:
            self.oversight.check(who, "export", Resource((study_uid,)))
            if destination == "archive" and options.retain_uids:
                raise QueryError(
                    "a study keeping its UIDs cannot be a new study in the same archive: export it"
                )
            with self.catalog.read() as conn:
                found = find_instances(conn, RetrieveKeys("STUDY", study_uids=(study_uid,)))
            if not found:
                raise NotFoundError(f"no study {study_uid} in the archive")
            patient_id = found[0].patient_id
            secret = self.secret.value()
            result.new_study_uid = (
                study_uid if options.retain_uids else remap_uid(secret, study_uid)
            )
            try:
                if zip_file is not None:
                    writer = _ZipWriter(zip_file)
                elif zip_stream is not None:
                    writer = _ZipWriter(zip_stream)
                elif output is not None:
                    writer = _FolderWriter(output)
                else:
                    writer = _ArchiveWriter(self.ingest, who)
                self._run(found, options, writer, result, who, include_burned_in, progress)
                if isinstance(writer, _ArchiveWriter):
                    result.discarded = writer.discarded
            except OSError as exc:
                where = zip_file or output or "the archive's spool"
                raise OutOfResourcesError(f"cannot write {where}: {exc.strerror or exc}") from exc
            finally:
                if writer is not None:
                    writer.close()
        except Exception as exc:
            self.oversight.record(
                kind,
                who,
                outcome="failure",
                reason=getattr(exc, "message", type(exc).__name__),
                study_uid=study_uid,
                new_study_uid=result.new_study_uid,
                patient_id=patient_id,
                instances=result.written,
                destination=destination,
            )
            raise
        new_study = result.new_study_uid
        self.oversight.record(
            kind,
            who,
            study_uid=study_uid,
            new_study_uid=new_study,
            patient_id=patient_id,
            pseudonym=result.pseudonym,
            instances=result.written,
            flagged=len(result.flagged),
            excluded=result.excluded,
            discarded=result.discarded,
            destination=destination,
            options=",".join(options.chosen()),
        )
        return result

    def _run(
        self,
        found: list[InstanceLocation],
        options: Options,
        writer: _Writer,
        result: AnonymizeResult,
        who: Identity,
        include_burned_in: bool,
        progress: Progress | None,
    ) -> None:
        secret = self.secret.value()
        series_numbers: dict[str, int] = {}
        counts: dict[str, int] = {}
        keys: Keys | None = None
        if progress:
            progress(0, len(found))
        for done, instance in enumerate(found, 1):
            ds = self._read(instance)
            if keys is None:
                keys = self._keys(ds, secret, options, result, who)
            reason = burned_in_reason(ds)
            keys.identifying = identifying_values(ds)
            kept = deidentify(ds, options, keys).review  # bitmaps kept by Clean Graphics
            if "PatientName" in ds:
                # the pseudonym as family name (not the empty Z; "^": not the retired
                # one-component form dciodvfy warns about)
                ds.PatientName = keys.patient_pseudonym + "^"
            new_uid = str(ds.get("SOPInstanceUID", ""))
            if reason:
                result.flagged.append(Flagged(new_uid, reason, include_burned_in))
            elif kept:
                result.flagged.append(Flagged(new_uid, "; ".join(kept), True))
            if not reason or include_burned_in:
                series = series_numbers.setdefault(instance.series_uid, len(series_numbers) + 1)
                counts[instance.series_uid] = counts.get(instance.series_uid, 0) + 1
                writer.write(f"S{series:03d}/I{counts[instance.series_uid]:05d}.dcm", ds)
                result.written += 1
            if progress:
                progress(done, len(found))

    def _read(self, instance: InstanceLocation) -> Dataset:
        with self.retrieve.open(instance) as reader:
            try:
                return dcmread(reader)
            except (InvalidDicomError, ValueError, EOFError) as exc:
                raise InvalidDataError(f"a stored instance cannot be read: {exc}") from exc

    def _keys(
        self, ds: Dataset, secret: bytes, options: Options, result: AnonymizeResult, who: Identity
    ) -> Keys:
        """The patient's pseudonym and date offset, and the pseudonym map's row for this run."""
        patient_id = str(ds.get("PatientID", "") or "")
        issuer = str(ds.get("IssuerOfPatientID", "") or "")
        alias = pseudonym(secret, patient_id, issuer)
        days = date_offset(secret, patient_id, issuer) if options.modify_dates else 0
        result.pseudonym = alias
        row = PseudonymRow(
            patient_id,
            issuer,
            str(ds.get("PatientName", "") or ""),
            alias,
            result.study_uid,
            result.new_study_uid,
            days,
            ",".join(options.chosen()),
            str(who),
            datetime.now(UTC),
        )
        with self.catalog.write() as conn:
            add_pseudonym(conn, row)
        return Keys(secret, alias, days)

    def reidentify(self, key: str, who: Identity) -> list[PseudonymRow]:
        """Who a pseudonym or a new Study Instance UID stands for (administrators only)."""
        self.oversight.check(who, "admin", Resource(details={"pseudonym": key}))
        with self.catalog.read() as conn:
            rows = find_pseudonyms(conn, key.strip())
        self.oversight.record(
            "study-reidentified",
            who,
            outcome="success" if rows else "not-found",
            key=key,
            patient_ids=sorted({r.patient_id for r in rows}),
            study_uids=sorted({r.study_uid for r in rows}),
        )
        return rows
