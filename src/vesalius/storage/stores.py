"""The blob stores of an archive, by id.

Each instance row records the id of the store that holds its blob (``instances.blob_store``),
so reading or deleting a blob resolves its store by that id (:meth:`Stores.get`), while new
blobs go to one store (:attr:`Stores.current`). Today there is one, the folder store, whose id
is :data:`FOLDER_STORE`; an object store (S3) would be another entry, added by the wiring.
"""

from __future__ import annotations

from collections.abc import Mapping

from vesalius.errors import ConfigError
from vesalius.storage.base import BlobStorage

#: The id of the folder store under ``<data_dir>/storage``. Fixed: it names where the blobs
#: are, not which store receives new ones, so rows keep pointing at the folder when another
#: store becomes current. Rows written before stores had ids read as this (migration 0006).
FOLDER_STORE = "folder"
#: Longest store id (the width of ``instances.blob_store``).
MAX_STORE_ID = 32


class Stores:
    """Blob stores by id, and the one new blobs are put in (``current``)."""

    def __init__(self, stores: Mapping[str, BlobStorage], current: str) -> None:
        for store_id in stores:
            if not store_id or len(store_id) > MAX_STORE_ID:
                raise ConfigError(f"a store id has 1 to {MAX_STORE_ID} characters: {store_id!r}")
        if current not in stores:
            raise ConfigError(f"the current store {current!r} is not one of the stores")
        self._stores = dict(stores)
        self.current_id = current

    @property
    def current(self) -> BlobStorage:
        """The store new blobs go to (its id: :attr:`current_id`)."""
        return self._stores[self.current_id]

    def get(self, store_id: str) -> BlobStorage:
        """The store with id ``store_id``; :class:`ConfigError` when none is configured (a row
        written by a node that has a store this one lacks)."""
        try:
            return self._stores[store_id]
        except KeyError:
            raise ConfigError(f"blob store {store_id!r} is not configured here") from None

    def ids(self) -> list[str]:
        return list(self._stores)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
