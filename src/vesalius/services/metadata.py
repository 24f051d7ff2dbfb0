"""WADO-RS metadata (PS3.18 10.4.1.2): the DICOM JSON of instances, served from the index.

The JSON is computed at ingest (:func:`metadata_json`, called by ``services/ingest.py``) and kept
in the index, so a study's metadata is one query and no file is opened. Instances stored before
the table existed get theirs computed from the file on first request, and kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from vesalius.dicom.header import InstanceHeader, read_instance
from vesalius.dicom.metadata import decode, encode, instance_json, instance_path
from vesalius.dicom.scan import scan_instance
from vesalius.dicom.structure import PixelDataElement, find_pixel_data
from vesalius.errors import NotFoundError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import MetadataRow, RetrieveKeys, find_metadata
from vesalius.index.records import store_metadata
from vesalius.services.audit import audit
from vesalius.storage import BlobStorage

log = logging.getLogger(__name__)


def metadata_json(
    header: InstanceHeader, dataset: Dataset, pixel: PixelDataElement | None
) -> bytes:
    """The stored (compressed) WADO-RS metadata of one instance, from its parsed header."""
    if pixel is not None:
        pixel_ref: tuple[int, str] | None = (pixel.tag, pixel.vr)
    elif header.rows is not None:  # deflated data sets: the structure walk sees no elements
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
    path: Path, check: Callable[[InstanceHeader], None] | None = None
) -> tuple[InstanceHeader, bytes]:
    """The indexed attributes and the stored WADO-RS metadata of a Part 10 file, after proving
    it whole: one pass of our own (``dicom/scan.py``), or pydicom's reader for what that
    declines (other encodings, malformed files: it raises the precise error). ``check`` sees
    the header before the metadata is built (ingest refuses a mismatch there)."""
    scan = scan_instance(path)
    if scan is not None:
        if check is not None:
            check(scan.header)
        return scan.header, encode(scan.document)
    header, dataset = read_instance(path)
    if check is not None:
        check(header)
    return header, metadata_json(header, dataset, find_pixel_data(path, header.transfer_syntax_uid))


def metadata_from_file(path: Path) -> bytes:
    """:func:`read_with_metadata`'s metadata, for a stored file."""
    return read_with_metadata(path)[1]


class MetadataService:
    """Serves the DICOM JSON of studies, series and instances."""

    def __init__(self, catalog: Catalog, storage: BlobStorage) -> None:
        self.catalog = catalog
        self.storage = storage

    def documents(self, keys: RetrieveKeys, who: Identity) -> list[str]:
        """The JSON text of every instance ``keys`` name (a study, series or instance UID),
        in series and instance order (BulkDataURIs still hold the root placeholder, see
        ``dicom/metadata.with_root``). :class:`NotFoundError` when nothing matches."""
        with self.catalog.read() as conn:
            found = find_metadata(conn, keys)
        if not found:
            raise NotFoundError(f"no {keys.level.lower()} found for the given UIDs")
        audit(
            "metadata-read",
            who,
            level=keys.level,
            patient_ids=sorted({row.patient_id for row in found}),
            study_uids=sorted({row.study_uid for row in found}),
            instances=len(found),
        )
        return [decode(row.metadata or self._backfill(row)) for row in found]

    def _backfill(self, row: MetadataRow) -> bytes:
        with self.storage.local_path(row.blob_key) as path:
            computed = metadata_from_file(path)
        with self.catalog.write() as conn:
            store_metadata(conn, row.pk, computed)
        log.info("metadata computed for %s (stored before metadata existed)", row.sop_instance_uid)
        return computed
