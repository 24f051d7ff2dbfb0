"""Blob storage: the stores where the DICOM files live (a folder by default), by id, and the
local spool where arriving files are written first."""

from vesalius.storage.base import BlobStorage, new_blob_key
from vesalius.storage.folder import FolderStorage
from vesalius.storage.spool import Spool, StagingRecovery
from vesalius.storage.stores import FOLDER_STORE, Stores

__all__ = [
    "FOLDER_STORE",
    "BlobStorage",
    "FolderStorage",
    "Spool",
    "StagingRecovery",
    "Stores",
    "new_blob_key",
]
