"""Staging files made ahead of need (vesalius.storage.staging): each taken file is new, empty
and the caller's alone; stale spares are replaced; closing leaves nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import wait_until
from vesalius.storage.staging import StagingFiles


def _close(taken: list[tuple[int, Path]]) -> None:
    for fd, path in taken:
        os.close(fd)
        path.unlink()


def test_taken_files_are_new_empty_and_private(tmp_path: Path) -> None:
    pool = StagingFiles(tmp_path, ahead=3)
    try:
        taken = [pool.take() for _ in range(10)]  # more than are ever ready: some made inline
        paths = [path for _, path in taken]
        assert len(set(paths)) == 10
        for fd, path in taken:
            assert path.parent == tmp_path and path.stat().st_size == 0
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert os.fstat(fd).st_ino == path.stat().st_ino
        wait_until(lambda: len(pool.ready()) == 3, what="the pool refilled")
        spare = pool.ready()
        assert spare.isdisjoint(paths)
        _close(taken)
    finally:
        pool.close()
    assert list(tmp_path.iterdir()) == []  # the spares are removed on close


def test_stale_spares_are_replaced(tmp_path: Path) -> None:
    pool = StagingFiles(tmp_path, ahead=2, max_age=0.0)
    try:
        first = pool.take()
        wait_until(lambda: len(pool.ready()) == 2, what="the pool filled")
        stale = pool.ready()
        fresh = pool.take()  # every spare is older than max_age: removed, one made inline
        assert fresh[1] not in stale
        assert not any(path.exists() for path in stale)
        _close([first, fresh])
    finally:
        pool.close()
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_an_oserror_for_the_caller(tmp_path: Path) -> None:
    pool = StagingFiles(tmp_path / "gone", ahead=1)
    try:
        with pytest.raises(OSError):
            pool.take()
    finally:
        pool.close()


def test_no_filler_when_nothing_is_made_ahead(tmp_path: Path) -> None:
    pool = StagingFiles(tmp_path, ahead=0)
    fd, path = pool.take()
    _close([(fd, path)])
    assert pool.ready() == set()
    pool.close()
