"""Backups of the index and the settings file: one archive, checked before anything is restored.

A backup is a gzip-compressed tar holding, in this order:

- ``manifest.json``: the format, the Vesalius version, the time, the database kind, the
  index's schema revision (Alembic) and row counts, and the size and SHA-256 of every other
  member;
- the index: ``index.sqlite`` (SQLite's online backup, or a portable copy of PostgreSQL) or
  ``index.pgdump`` (``pg_dump --format=custom``);
- ``settings.toml``: the settings file, when there is one.

The images are not in it (``docs/operations.md``: back up the blob folder *after* the index).
Restoring checks the manifest and every checksum first, refuses a schema newer than this code
and a non-empty index (unless forced), then restores and runs the migrations.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from vesalius import __version__
from vesalius.errors import VesaliusError
from vesalius.index import backup as index_backup

MANIFEST = "manifest.json"
SETTINGS = "settings.toml"
SQLITE_INDEX = "index.sqlite"
PG_DUMP_INDEX = "index.pgdump"
FORMAT = 1
CHUNK = 1 << 20

#: Called with (phase, done, total) as long work goes on: "index" (rows copied), "archive"
#: and "verify" (bytes).
Progress = Callable[[str, int, int], None]


class BackupError(VesaliusError):
    """A backup cannot be taken, read or restored; the message says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    """What a backup holds (``manifest.json``)."""

    vesalius_version: str
    created: str
    database: str
    index_format: str
    index_file: str
    schema_revision: str
    counts: dict[str, int]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings_file: str | None = None
    pg_dump_version: int | None = None
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {raw.get('format')!r}")
        return cls(**raw)


def _noop(_phase: str, _done: int, _total: int) -> None:
    pass


def _digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return {"sha256": sha.hexdigest(), "size": path.stat().st_size}


def create_backup(
    dest: Path,
    *,
    database_url: str,
    settings_file: Path | None,
    work_dir: Path,
    portable: bool = False,
    progress: Progress = _noop,
) -> Manifest:
    """Write a backup of the index at ``database_url`` (consistent while it serves) and of
    ``settings_file`` to ``dest``, which appears only once complete. ``portable`` copies a
    PostgreSQL index into SQLite (restorable into either) instead of ``pg_dump``-ing it."""
    kind = index_backup.dialect(database_url)
    if kind not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {kind} index: Vesalius runs on SQLite or PostgreSQL")
    dumped_by: int | None = None
    try:
        if kind == "sqlite":
            name = SQLITE_INDEX
            revision, counts = index_backup.backup_sqlite(database_url, work_dir / name)
        elif not portable and index_backup.pg_dump_refusal(database_url) is None:
            name = PG_DUMP_INDEX
            revision, counts, dumped_by = index_backup.backup_pg_dump(database_url, work_dir / name)
        else:
            name = SQLITE_INDEX
            revision, counts = index_backup.export_portable(
                database_url, work_dir / name, lambda d, t: progress("index", d, t)
            )
    except index_backup.IndexBackupError as exc:
        raise BackupError(exc.message) from exc
    if revision is None:
        raise BackupError("the index has no schema yet (never served): nothing to back up")
    members = [name]
    if settings_file is not None:
        try:
            (work_dir / SETTINGS).write_bytes(settings_file.read_bytes())
        except OSError as exc:
            raise BackupError(
                f"cannot read the settings file {settings_file}: {exc.strerror}"
            ) from None
        members.append(SETTINGS)
    manifest = Manifest(
        vesalius_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        database=kind,
        index_format="pg_dump" if name == PG_DUMP_INDEX else "sqlite",
        index_file=name,
        schema_revision=revision,
        counts=counts,
        files={m: _digest(work_dir / m) for m in members},
        settings_file=str(settings_file.resolve()) if settings_file is not None else None,
        pg_dump_version=dumped_by,
    )
    _write_archive(dest, manifest, work_dir, members, progress)
    return manifest


def _write_archive(
    dest: Path, manifest: Manifest, work_dir: Path, members: list[str], progress: Progress
) -> None:
    partial = dest.with_name(f".{dest.name}.partial")
    total = sum(manifest.files[m]["size"] for m in members)
    done = 0
    try:
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            data = manifest.to_json()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(datetime.now(UTC).timestamp()), 0o600
            tar.addfile(info, io.BytesIO(data))
            for member in members:
                path = work_dir / member
                info = tar.gettarinfo(str(path), arcname=member)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as fh:
                    reader = _Counting(fh, lambda n: progress("archive", n, total), done)
                    tar.addfile(info, reader)
                    done = reader.done
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, dest)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot write {dest}: {exc.strerror}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class _Counting:
    """A reader that reports the bytes read so far (``tarfile`` only calls ``read``)."""

    def __init__(self, fh: IO[bytes], report: Callable[[int], None], done: int) -> None:
        self._fh, self._report, self.done = fh, report, done

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self.done += len(chunk)
        self._report(self.done)
        return chunk


def verify(path: Path, into: Path, progress: Progress = _noop) -> Manifest:
    """Read the backup ``path`` into the folder ``into``, checking the manifest and every
    member's size and SHA-256; any fault is a one-line :class:`BackupError`."""
    try:
        return _extract(path, into, progress)
    except BackupError:
        raise
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or _first_line(exc)
        raise BackupError(f"{path} is not a complete Vesalius backup: {reason}") from None


def _extract(path: Path, into: Path, progress: Progress) -> Manifest:
    with tarfile.open(path, "r:gz") as tar:
        first = tar.next()
        if first is None or first.name != MANIFEST or not first.isfile():
            raise BackupError(f"{path} is not a Vesalius backup (no {MANIFEST} first)")
        manifest = Manifest.from_json(_read_member(tar, first))
        expected = dict(manifest.files)
        if manifest.index_file not in expected:
            raise BackupError(f"{path}: the manifest names no index file")
        total = sum(int(f["size"]) for f in expected.values())
        done = 0
        while (member := tar.next()) is not None:
            wanted = expected.pop(member.name, None)
            if wanted is None or not member.isfile():
                raise BackupError(f"{path}: unexpected member {member.name!r}")
            sha = hashlib.sha256()
            size = 0
            with _member(tar, member) as source, open(into / member.name, "wb") as out:
                while chunk := source.read(CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    done += len(chunk)
                    progress("verify", done, total)
            if size != wanted["size"] or sha.hexdigest() != wanted["sha256"]:
                raise BackupError(f"{path}: {member.name} does not match its checksum")
        if expected:
            raise BackupError(f"{path} is truncated: {', '.join(sorted(expected))} missing")
    return manifest


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > CHUNK:
        raise ValueError(f"{member.name} is too large")
    with _member(tar, member) as fh:
        return fh.read()


@contextlib.contextmanager
def _member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[IO[bytes]]:
    fh = tar.extractfile(member)
    if fh is None:
        raise ValueError(f"{member.name} is not a file")
    try:
        yield fh
    finally:
        fh.close()


def check_restorable(manifest: Manifest, database_url: str, *, force: bool) -> None:
    """Refuse a backup this code cannot restore into ``database_url``: a newer schema, a
    non-empty index (unless ``force``), a database other sessions use, a dump for PostgreSQL
    into SQLite."""
    head = index_backup.head_revision()
    if not index_backup.known_revision(manifest.schema_revision):
        raise BackupError(
            f"the backup's index schema ({manifest.schema_revision}) is newer than this "
            f"Vesalius {__version__} knows (up to {head}): upgrade Vesalius, then restore"
        )
    target = index_backup.dialect(database_url)
    if manifest.index_format == "pg_dump" and target != "postgresql":
        raise BackupError(
            "this backup is a pg_dump of a PostgreSQL index: restore it into PostgreSQL "
            "(database_url), or take a portable one with `vesalius backup --portable`"
        )
    try:
        sessions = index_backup.other_sessions(database_url)
        empty = index_backup.is_empty(database_url)
    except index_backup.IndexBackupError as exc:
        raise BackupError(exc.message) from exc
    if sessions:
        raise BackupError(
            f"{sessions} other session(s) use the index database (a running server or "
            "import?): stop them before restoring"
        )
    if not empty and not force:
        raise BackupError(
            "the index is not empty: restore into an empty one, or pass --force to replace "
            "its content"
        )


def restore(
    manifest: Manifest,
    folder: Path,
    database_url: str,
    *,
    force: bool,
    progress: Progress = _noop,
) -> None:
    """Restore the verified backup in ``folder`` into ``database_url`` and migrate it."""
    check_restorable(manifest, database_url, force=force)
    try:
        index_backup.clear(database_url)  # empty, or replaced (force): start from nothing
        index_file = folder / manifest.index_file
        if manifest.index_format == "pg_dump":
            index_backup.restore_pg_dump(index_file, database_url, manifest.pg_dump_version or 0)
        else:
            index_backup.restore_sqlite_file(
                index_file, database_url, lambda d, t: progress("index", d, t)
            )
        index_backup.upgrade(database_url)
    except index_backup.IndexBackupError as exc:
        raise BackupError(exc.message) from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
