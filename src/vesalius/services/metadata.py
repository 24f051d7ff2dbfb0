"""WADO-RS metadata (PS3.18 10.4.1.2): the DICOM JSON of instances, served from the index.

The JSON is computed at ingest (:func:`metadata_json`, called by ``services/ingest.py``) and kept
in the index, so a study's metadata is one query and no file is opened. Instances stored before
the table existed get theirs computed from the file on first request, and kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset

from vesalius.dicom.header import InstanceHeader, read_instance
from vesalius.dicom.inflate import read_head, write_explicit
from vesalius.dicom.metadata import (
    AVAILABLE_TRANSFER_SYNTAX_UID,
    decode,
    encode,
    instance_json,
    instance_path,
)
from vesalius.dicom.scan import scan_instance
from vesalius.dicom.source import Source, file_meta, opened
from vesalius.dicom.structure import PixelDataElement, find_pixel_data
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, is_valid_uid
from vesalius.errors import (
    InvalidDataError,
    NotFoundError,
    OutOfResourcesError,
    VesaliusError,
)
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import MetadataRow, RetrieveKeys, find_metadata
from vesalius.index.records import store_metadata
from vesalius.services.oversight import Oversight
from vesalius.services.policy import keys_resource
from vesalius.storage import Spool, Stores
from vesalius.storage.staging import create_staging_file

log = logging.getLogger(__name__)


def metadata_json(
    header: InstanceHeader, dataset: Dataset, pixel: PixelDataElement | None
) -> bytes:
    """The stored (compressed) WADO-RS metadata of one instance, from its parsed header."""
    if pixel is not None:
        pixel_ref: tuple[int, str] | None = (pixel.tag, pixel.vr)
    elif header.rows is not None:  # image attributes without pixel data: as dicom/scan.py
        pixel_ref = (0x7FE00010, "OW")
    else:
        pixel_ref = None
    document = instance_json(
        dataset,
        instance_path(header.study_uid, header.series_uid, header.sop_instance_uid),
        transfer_syntax_uid=header.transfer_syntax_uid,
        pixel_data=pixel_ref,
    )
    return encode(document)


def read_with_metadata(
    source: Source,
    check: Callable[[InstanceHeader], None] | None = None,
    *,
    max_inflated: int | None = None,
    scratch: Path | None = None,
) -> tuple[InstanceHeader, bytes]:
    """The indexed attributes and the stored WADO-RS metadata of a Part 10 file, after proving
    it whole: one pass of our own (``dicom/scan.py``), or pydicom's reader for what that
    declines (other encodings, malformed files: it raises the precise error). ``check`` sees
    the header before the metadata is built (ingest refuses a mismatch there).

    A deflated file (PS3.5 A.5) is read through its Explicit VR Little Endian twin, inflated
    as a stream into a staging file in ``scratch`` (default: a temporary file) and removed
    after; past ``max_inflated`` bytes it is :class:`TooLargeError` (0xA700 / 413)."""
    with opened(source) as fh:
        scan = scan_instance(fh)
        if scan is not None:
            if check is not None:
                check(scan.header)
            return scan.header, encode(scan.document)
        if _deflated(fh):
            return _read_deflated(fh, check, max_inflated, scratch)
        header, dataset = read_instance(fh)
        if check is not None:
            check(header)
        pixel = find_pixel_data(fh, header.transfer_syntax_uid)
        return header, metadata_json(header, dataset, pixel)


def _deflated(fh: BinaryIO) -> bool:
    """Whether ``fh`` is deflated; what our File Meta reader cannot parse is left to
    pydicom's error, unless pydicom would read it as deflated: it would inflate it whole."""
    try:
        fh.seek(0)
        return read_head(fh).transfer_syntax == DEFLATED_EXPLICIT_VR_LE
    except (VesaliusError, OSError):
        pass
    try:
        syntax = file_meta(fh).get("TransferSyntaxUID")
    except Exception:  # pydicom raises many kinds on malformed input; its reader says which
        return False
    if syntax != DEFLATED_EXPLICIT_VR_LE:
        return False
    error = InvalidDataError("the File Meta of this deflated file is malformed")
    error.instance = ("", "")  # STOW-RS must not read it to name it
    raise error


def _read_deflated(
    fh: BinaryIO,
    check: Callable[[InstanceHeader], None] | None,
    max_inflated: int | None,
    scratch: Path | None,
) -> tuple[InstanceHeader, bytes]:
    """:func:`read_with_metadata` of a deflated file: its twin is scanned (or read by
    pydicom), and the header and metadata name the stored syntax, as before inflation."""
    if scratch is None:
        fd, name = tempfile.mkstemp(prefix="inflate-", suffix=".part")
        twin = Path(name)
    else:  # named as staging names its files, so a crash's leftover is recovered as theirs
        fd, twin = create_staging_file(scratch)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                write_explicit(fh, out, limit=max_inflated)
        except OSError as exc:  # disk full, most likely
            raise OutOfResourcesError(f"cannot inflate into staging: {exc.strerror}") from exc
        scan = scan_instance(twin)
        if scan is not None:
            header = dataclasses.replace(scan.header, transfer_syntax_uid=DEFLATED_EXPLICIT_VR_LE)
            if check is not None:
                check(header)
            document = scan.document
            document[AVAILABLE_TRANSFER_SYNTAX_UID] = {
                "vr": "UI",
                "Value": [DEFLATED_EXPLICIT_VR_LE],
            }
            return header, encode(document)
        header, dataset = read_instance(twin)
        header = dataclasses.replace(header, transfer_syntax_uid=DEFLATED_EXPLICIT_VR_LE)
        if check is not None:
            check(header)
        return header, metadata_json(header, dataset, find_pixel_data(twin, EXPLICIT_VR_LE))
    except VesaliusError as exc:
        exc.instance = exc.instance or _meta_uids(fh)  # STOW-RS then names it unread
        raise
    finally:
        twin.unlink(missing_ok=True)


def _meta_uids(fh: BinaryIO) -> tuple[str, str]:
    """The File Meta's SOP Class and Instance UIDs ('' when not valid): what a STOW-RS
    response names a refused deflated instance by, since reading its data set to find them
    (``stow._peek``, pydicom) would inflate it whole."""
    try:
        fh.seek(0)
        head = read_head(fh)
    except (VesaliusError, OSError):
        return "", ""
    uids = head.sop_class_uid, head.sop_instance_uid
    sop_class, sop_instance = (uid if is_valid_uid(uid) else "" for uid in uids)
    return sop_class, sop_instance


def metadata_from_file(source: Source, *, scratch: Path | None = None) -> bytes:
    """:func:`read_with_metadata`'s metadata, for a stored file."""
    return read_with_metadata(source, scratch=scratch)[1]


class MetadataService:
    """Serves the DICOM JSON of studies, series and instances."""

    def __init__(
        self, catalog: Catalog, stores: Stores, spool: Spool, *, oversight: Oversight
    ) -> None:
        self.catalog = catalog
        self.stores = stores
        self.spool = spool  # scratch space for inflating a deflated instance
        self.oversight = oversight

    def documents(self, keys: RetrieveKeys, who: Identity) -> list[str]:
        """The JSON text of every instance ``keys`` name (a study, series or instance UID),
        in series and instance order (BulkDataURIs still hold the root placeholder, see
        ``dicom/metadata.with_root``). :class:`NotFoundError` when nothing matches."""
        self.oversight.check(who, "read", keys_resource(keys))
        labels = self.oversight.visible_labels(who)
        with self.catalog.read() as conn:
            found = find_metadata(conn, keys, labels)
        if not found:
            raise NotFoundError(f"no {keys.level.lower()} found for the given UIDs")
        self.oversight.record(
            "metadata-read",
            who,
            level=keys.level,
            patient_ids=sorted({row.patient_id for row in found}),
            study_uids=sorted({row.study_uid for row in found}),
            instances=len(found),
        )
        return [decode(row.metadata or self._backfill(row)) for row in found]

    def _backfill(self, row: MetadataRow) -> bytes:
        with self.stores.get(row.blob_store).open(row.blob_key) as reader:
            computed = metadata_from_file(reader, scratch=self.spool.folder)
        with self.catalog.write() as conn:
            store_metadata(conn, row.pk, computed)
        log.debug("metadata computed for %s (stored before metadata existed)", row.sop_instance_uid)
        return computed
