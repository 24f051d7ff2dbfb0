"""storage/: the folder store's atomic put (a rename from the spool beside it, else a copy made
durable before it is renamed into place), its readers, and the registry of stores by id."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vesalius.errors import ConfigError, OutOfResourcesError
from vesalius.storage import FOLDER_STORE, FolderStorage, Spool, Stores, new_blob_key
from vesalius.storage import folder as folder_module


def _spooled(spool: Spool, data: bytes) -> Path:
    fd, path = spool.staging_file()
    os.write(fd, data)
    os.close(fd)
    return path


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Spool, FolderStorage]]:
    spool = Spool(tmp_path / "storage" / "staging")
    yield spool, FolderStorage(tmp_path / "storage")
    spool.close()


def test_put_is_a_rename_from_the_spool_beside_the_store(
    parts: tuple[Spool, FolderStorage],
) -> None:
    spool, store = parts
    source = _spooled(spool, b"DICM data")
    inode = source.stat().st_ino
    key = new_blob_key()
    store.put_file(key, source)
    assert not source.exists()
    with store.open(key) as reader:
        assert os.fstat(reader.fileno()).st_ino == inode  # the same file, moved
        assert reader.read() == b"DICM data"
    assert b"".join(store.open_range(key, 2, 6)) == b"CM d"
    assert b"".join(store.open_range(key, 5)) == b"data"
    assert store.exists(key)
    store.delete(key)
    store.delete(key)  # a missing blob is not an error
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.open(key)


def test_put_from_another_filesystem_copies_flushes_then_renames(
    parts: tuple[Spool, FolderStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool on another filesystem (the rename fails with EXDEV): the file is copied beside
    its place, flushed to disk, renamed into place, and the spool file removed."""
    spool, store = parts
    source = _spooled(spool, b"x" * 100_000)
    real_replace, real_fsync = os.replace, os.fsync
    synced: list[int] = []

    def replace(src: Path, dst: Path) -> None:
        if Path(src) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        assert synced, "renamed into place before it was flushed"
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(folder_module.os, "replace", replace)
    monkeypatch.setattr(folder_module.os, "fsync", fsync)
    key = new_blob_key()
    store.put_file(key, source)
    assert not source.exists()
    with store.open(key) as reader:
        assert reader.read() == b"x" * 100_000
    assert not list((store.root / "blobs").rglob("*.part"))


def test_a_failed_copy_leaves_no_blob(
    parts: tuple[Spool, FolderStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, store = parts
    source = _spooled(spool, b"y" * 1000)

    def replace(src: Path, dst: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def copyfile(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(b"y" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder_module.os, "replace", replace)
    monkeypatch.setattr(folder_module.shutil, "copyfile", copyfile)
    key = new_blob_key()
    with pytest.raises(OutOfResourcesError):
        store.put_file(key, source)
    assert not store.exists(key)
    assert not [p for p in (store.root / "blobs").rglob("*") if p.is_file()]
    assert source.exists()  # still the caller's, who removes it


def test_put_across_real_filesystems(tmp_path: Path) -> None:
    """Where /dev/shm is another filesystem than the store's, a real cross-device put."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("no writable /dev/shm")
    store = FolderStorage(tmp_path / "storage")
    if os.stat(shm).st_dev == os.stat(store.root).st_dev:
        pytest.skip("/dev/shm is on the store's filesystem")
    spool = Spool(shm / f"vesalius-test-{os.getpid()}")
    try:
        source = _spooled(spool, b"z" * 5000)
        key = new_blob_key()
        store.put_file(key, source)
        assert not source.exists()
        with store.open(key) as reader:
            assert reader.read() == b"z" * 5000
    finally:
        spool.close()
        spool.folder.rmdir()


def test_stores_by_id(tmp_path: Path) -> None:
    folder = FolderStorage(tmp_path / "storage")
    stores = Stores({FOLDER_STORE: folder}, current=FOLDER_STORE)
    assert stores.current is folder and stores.get("folder") is folder
    assert stores.current_id == "folder" and stores.ids() == ["folder"]
    with pytest.raises(ConfigError, match="'s3' is not configured"):
        stores.get("s3")
    with pytest.raises(ConfigError):
        Stores({FOLDER_STORE: folder}, current="s3")
    with pytest.raises(ConfigError):
        Stores({"x" * 33: folder}, current="x" * 33)
