"""Blob storage: where the DICOM files themselves live (a folder by default)."""

from vesalius.storage.base import BlobStorage, new_blob_key
from vesalius.storage.folder import FolderStorage

__all__ = ["BlobStorage", "FolderStorage", "new_blob_key"]
