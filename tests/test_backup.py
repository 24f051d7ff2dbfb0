"""``vesalius backup`` / ``restore`` against a real ``vesalius serve`` that is ingesting.

While storescu sends many files, a backup is taken and the blobs copied after it (the
documented order). The backup must be one consistent snapshot: its counters agree with its
rows, its instance count lies between a C-FIND before it and one after it, and every row's file
is in the copy. Restored into a fresh data folder (SQLite; PostgreSQL by pg_dump and by the
portable copy), the archive serves: C-FIND and QIDO-RS answer what the backup held. Then the
refusals: a non-empty index, a newer schema, a running server, a damaged or truncated file —
each one line and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.tools import dcmtk_tool
from sqlalchemy import create_engine, text

from conftest import free_port, run_cli, scratch_database
from find_support import findscu
from served import Served, serve, write_config
from synth import make_instance
from vesalius.index.backup import head_revision
from vesalius.index.database import open_engine

STUDIES, SERIES_PER_STUDY, PER_SERIES = 24, 2, 10  # 480 instances per sender


@dataclass
class Address:
    """What find_support.findscu needs of a server."""

    address: list[str]


def _vesalius(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The command, in this process (conftest.run_cli: what it does is the same, without a
    second of start-up per command); the console script itself is run by test_service.py."""
    run = run_cli(*args)
    if check:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


def _refused(run: subprocess.CompletedProcess[str], words: str) -> None:
    """A refusal: non-zero exit, one line on stderr naming the cause, no traceback."""
    assert run.returncode != 0, run.stdout
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: ") and words in lines[0], lines[0]


def _free_ports() -> dict[str, int]:
    """Ports for a restore target's settings: restore refuses while its ports answer, and the
    defaults (11112, 8080) may be anyone's on a shared machine."""
    return {"dicom.port": free_port(), "http.port": free_port()}


def _corpus(folder: Path, patient: str) -> Path:
    for study in range(STUDIES):
        study_uid = f"2.25.{abs(hash((patient, study))) % 10**30}"
        for series in range(SERIES_PER_STUDY):
            series_uid = f"{study_uid}.{series + 1}"
            for n in range(PER_SERIES):
                make_instance(
                    folder / f"{study:03d}-{series}-{n:02d}.dcm",
                    PatientID=patient,
                    StudyInstanceUID=study_uid,
                    SeriesInstanceUID=series_uid,
                    SOPInstanceUID=f"{series_uid}.{n + 1}",
                    InstanceNumber=n + 1,
                )
    return folder


def _find_instances(served: Served, workdir: Path) -> int:
    """Instances in the archive, as a Study Root C-FIND sees them (NumberOfStudyRelated-
    Instances summed over every study)."""
    outcome = findscu(
        Address(["-aec", served.ae_title, "127.0.0.1", str(served.dicom_port)]),  # type: ignore[arg-type]
        workdir,
        "QueryRetrieveLevel=STUDY",
        "StudyInstanceUID",
        "NumberOfStudyRelatedInstances",
    )
    assert outcome.final == 0x0000, outcome.output[-2000:]
    return sum(int(r.NumberOfStudyRelatedInstances) for r in outcome.responses)


def _qido_studies(served: Served) -> int:
    answer = httpx.get(f"{served.url}/dicom-web/studies", timeout=60)
    assert answer.status_code in (200, 204), answer.text
    return len(answer.json()) if answer.status_code == 200 else 0


@contextlib.contextmanager
def _senders(served: Served, folders: list[Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    storescu = dcmtk_tool("storescu")
    if storescu is None:
        pytest.fail("storescu not found: install Debian's dcmtk package")
    procs = [
        subprocess.Popen(
            [
                storescu,
                "-aec",
                served.ae_title,
                "127.0.0.1",
                str(served.dicom_port),
                "+sd",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        for folder in folders
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(300)
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def _long_reader(served: Served, kind: str) -> Iterator[None]:
    """SQLite: a read transaction held open over the ingest and the backup (a long query), so
    no checkpoint moves what is committed from the WAL into the database file: a backup that
    copied the file alone would miss it."""
    if kind != "sqlite":
        yield
        return
    reader = sqlite3.connect(served.data_dir / "index.sqlite")
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM instances").fetchone()
        yield
    finally:
        reader.close()


def _check_index(url: str, blobs: Path) -> dict[str, int]:
    """The index at ``url`` agrees with itself (each study's and series' counters with its
    rows) and every row's file is in ``blobs``; its counts."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            wrong = conn.execute(
                text(
                    "SELECT count(*) FROM studies s WHERE s.num_instances <> (SELECT count(*) "
                    "FROM instances i JOIN series r ON i.series_pk = r.pk "
                    "WHERE r.study_pk = s.pk)"
                )
            ).scalar_one()
            assert wrong == 0
            keys = [row[0] for row in conn.execute(text("SELECT blob_key FROM instances"))]
            counts = {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ("patients", "studies", "series", "instances")
            }
    finally:
        engine.dispose()
    missing = [k for k in keys if not (blobs / k[:2] / k[2:4] / f"{k}.dcm").is_file()]
    assert missing == []
    return counts


def _manifest(path: Path) -> dict[str, Any]:
    with tarfile.open(path, "r:gz") as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return dict(json.load(member))


BACKENDS = ["sqlite", "postgresql", "postgresql-portable"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backup_while_ingesting_restores_a_consistent_archive(tmp_path: Path, backend: str) -> None:
    folders = [_corpus(tmp_path / f"in{n}", f"PAT{n}") for n in range(2)]
    kind = "sqlite" if backend == "sqlite" else "postgresql"
    portable = backend.endswith("portable")
    with (
        scratch_database(kind, tmp_path / "old") as old_url,
        scratch_database(kind, tmp_path / "new") as new_url,
    ):
        settings = {} if kind == "sqlite" else {"database_url": old_url}
        backup = tmp_path / "pacs.backup"
        copy = tmp_path / "copied-blobs"
        with (
            serve(tmp_path / "old", settings) as served,
            _long_reader(served, kind),
            _senders(served, folders) as procs,
        ):
            # some instances are in before the backup starts
            while _find_instances(served, tmp_path) == 0:
                assert all(p.poll() in (None, 0) for p in procs)
            before = _find_instances(served, tmp_path)
            args = ["backup", str(backup), "--config", str(tmp_path / "old" / "vesalius.toml")]
            made = _vesalius(*args, *(["--portable"] if portable else []))
            after = _find_instances(served, tmp_path)
            # the documented order: the blobs after the index (rows never lack their files)
            shutil.copytree(served.data_dir / "storage" / "blobs", copy)
            for proc in procs:
                assert proc.wait(300) == 0, proc.stderr.read() if proc.stderr else ""
            total = _find_instances(served, tmp_path)
        assert "backup written to" in made.stdout
        manifest = _manifest(backup)
        assert manifest["database"] == kind
        assert manifest["index_format"] == ("pg_dump" if backend == "postgresql" else "sqlite")
        assert manifest["schema_revision"] == head_revision()
        assert "settings.toml" in manifest["files"]
        assert before <= manifest["counts"]["instances"] <= after
        assert total == 2 * STUDIES * SERIES_PER_STUDY * PER_SERIES

        # restore into a fresh data folder (and a fresh database), then serve from it
        fresh = tmp_path / "new"
        config = fresh / "vesalius.toml"
        fresh.mkdir(exist_ok=True)
        ports = {"dicom.port": free_port(), "http.port": free_port()}
        write_config(
            config,
            {
                "data_dir": str(fresh / "data"),
                "dicom.host": "127.0.0.1",
                **ports,
                "storage.min_free_mb": 0,
                **({} if kind == "sqlite" else {"database_url": new_url}),
            },
        )
        restored = _vesalius("restore", str(backup), "--config", str(config))
        assert "restored" in restored.stdout
        assert (config.parent / "vesalius.toml.restored").is_file()  # ours kept, theirs beside
        shutil.copytree(copy, fresh / "data" / "storage" / "blobs")
        url = new_url if kind == "postgresql" else f"sqlite:///{fresh / 'data' / 'index.sqlite'}"
        counts = _check_index(url, fresh / "data" / "storage" / "blobs")
        assert counts == manifest["counts"]
        with serve(
            fresh, {**ports, **({} if kind == "sqlite" else {"database_url": new_url})}
        ) as again:
            assert _find_instances(again, tmp_path) == manifest["counts"]["instances"]
            assert _qido_studies(again) == manifest["counts"]["studies"]


def _small_config(folder: Path) -> Path:
    config = folder / "vesalius.toml"
    write_config(
        config,
        {
            "data_dir": str(folder / "data"),
            "dicom.host": "127.0.0.1",
            "dicom.port": free_port(),
            "http.port": free_port(),
            "storage.min_free_mb": 0,
        },
    )
    return config


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small archive (3 instances imported, their files in ``in``) and a backup of it, made
    once per module; :func:`archive` gives each test a copy of its own."""
    folder = tmp_path_factory.mktemp("small-archive")
    for n in range(3):
        make_instance(folder / "in" / f"{n}.dcm", PatientID="SMALL")
    config = _small_config(folder)
    _vesalius("import", str(folder / "in"), "--config", str(config))
    _vesalius("backup", str(folder / "small.backup"), "--config", str(config))
    config.unlink()
    return folder


@pytest.fixture
def archive(small_archive: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A small archive (settings file, 3 instances imported) and a backup of it, in
    ``tmp_path``: a copy of :func:`small_archive` with a settings file naming it."""
    for name in ("in", "data"):
        shutil.copytree(small_archive / name, tmp_path / name)
    backup = tmp_path / "small.backup"
    shutil.copyfile(small_archive / "small.backup", backup)
    yield _small_config(tmp_path), backup


def test_restore_refuses_a_non_empty_index_unless_forced(archive: tuple[Path, Path]) -> None:
    config, backup = archive
    _refused(_vesalius("restore", str(backup), "--config", str(config), check=False), "not empty")
    forced = _vesalius("restore", str(backup), "--config", str(config), "--force")
    assert "restored 3 studies, 3 instances" in forced.stdout


def test_restore_refuses_a_newer_schema(archive: tuple[Path, Path], tmp_path: Path) -> None:
    _config, backup = archive
    newer = tmp_path / "newer.backup"
    with tarfile.open(backup, "r:gz") as source, tarfile.open(newer, "w:gz") as out:
        for member in source.getmembers():
            data = source.extractfile(member)
            assert data is not None
            content = data.read()
            if member.name == "manifest.json":
                manifest = json.loads(content)
                manifest["schema_revision"] = "9999"
                content = json.dumps(manifest).encode()
                member.size = len(content)
            out.addfile(member, io.BytesIO(content))
    fresh = tmp_path / "fresh.toml"
    run = _vesalius("restore", str(newer), "--config", str(fresh), check=False)
    _refused(run, "newer than this Vesalius")
    assert not fresh.exists()  # nothing written on a refusal


def test_restore_refuses_while_the_server_runs(archive: tuple[Path, Path], tmp_path: Path) -> None:
    config, backup = archive
    with serve(tmp_path / "running") as served:
        write_config(
            config,
            {
                "data_dir": str(served.data_dir),
                "dicom.host": "127.0.0.1",
                "dicom.port": served.dicom_port,
                "http.port": served.http_port,
            },
        )
        run = _vesalius("restore", str(backup), "--config", str(config), "--force", check=False)
        _refused(run, "stop it before restoring")
        assert served.alive()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "empty", "missing"])
def test_restore_refuses_a_damaged_backup(
    archive: tuple[Path, Path], tmp_path: Path, damage: str
) -> None:
    _config, backup = archive
    data = backup.read_bytes()
    bad = tmp_path / f"{damage}.backup"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # a bit flipped inside the index file: the checksum tells
        raw = bytearray(gzip.decompress(data))
        raw[len(raw) // 2] ^= 0x01
        bad.write_bytes(gzip.compress(bytes(raw)))
    elif damage == "garbage":
        bad.write_bytes(b"not a backup at all\n" * 100)
    elif damage == "empty":
        bad.write_bytes(b"")
    fresh = tmp_path / "fresh" / "vesalius.toml"
    run = _vesalius("restore", str(bad), "--config", str(fresh), check=False)
    _refused(run, str(bad))
    assert not fresh.exists()


def test_backup_refuses_to_overwrite_and_a_pg_dump_into_sqlite(
    archive: tuple[Path, Path], tmp_path: Path
) -> None:
    config, backup = archive
    _refused(_vesalius("backup", str(backup), "--config", str(config), check=False), "exists")
    with scratch_database("postgresql", tmp_path) as url:
        engine = open_engine(url)
        try:  # sessions answer times in Tokyo's zone: the copy must still hold UTC
            with engine.begin() as conn:
                name = conn.execute(text("SELECT current_database()")).scalar_one()
                conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Tokyo'"))
        finally:
            engine.dispose()
        pg_config = tmp_path / "pg.toml"
        write_config(pg_config, {"data_dir": str(tmp_path / "pgdata"), "database_url": url})
        _vesalius("import", str(tmp_path / "in"), "--config", str(pg_config))
        engine = open_engine(url)
        try:
            with engine.connect() as conn:
                stamps = conn.execute(text("SELECT received_at FROM instances")).scalars().all()
        finally:
            engine.dispose()
        expected = sorted(t.astimezone(UTC).replace(tzinfo=None) for t in stamps)
        dump = tmp_path / "pg.backup"
        _vesalius("backup", str(dump), "--config", str(pg_config))
        assert _manifest(dump)["index_format"] == "pg_dump"
        portable = tmp_path / "pg-portable.backup"
        _vesalius("backup", str(portable), "--config", str(pg_config), "--portable")
        assert _manifest(portable)["index_format"] == "sqlite"
    target = tmp_path / "sqlite-target.toml"
    write_config(target, {"data_dir": str(tmp_path / "sqlite-target"), **_free_ports()})
    _refused(
        _vesalius("restore", str(dump), "--config", str(target), check=False),
        "restore it into PostgreSQL",
    )
    # a portable backup of the same PostgreSQL index does restore into SQLite
    restored = _vesalius("restore", str(portable), "--config", str(target))
    assert "restored 3 studies, 3 instances" in restored.stdout
    engine = open_engine(f"sqlite:///{tmp_path / 'sqlite-target' / 'index.sqlite'}")
    try:
        with engine.connect() as conn:
            received = conn.execute(text("SELECT received_at FROM instances")).scalars().all()
    finally:
        engine.dispose()
    assert sorted(datetime.fromisoformat(t) for t in received) == expected


def test_a_sqlite_backup_restores_into_postgresql(
    archive: tuple[Path, Path], tmp_path: Path
) -> None:
    """Cross-database: the rows of a SQLite backup copied into PostgreSQL at the backup's
    revision, the sequences moved past them (a later import adds rows), then served."""
    _config, backup = archive
    with scratch_database("postgresql", tmp_path) as url:
        config = tmp_path / "pg.toml"
        write_config(
            config, {"data_dir": str(tmp_path / "pgdata"), "database_url": url, **_free_ports()}
        )
        restored = _vesalius("restore", str(backup), "--config", str(config))
        assert "restored 3 studies, 3 instances" in restored.stdout
        more = tmp_path / "more"
        make_instance(more / "x.dcm", PatientID="LATER")
        _vesalius("import", str(more), "--config", str(config))
        engine = open_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM instances")).scalar_one() == 4
                assert conn.execute(text("SELECT count(*) FROM patients")).scalar_one() == 2
        finally:
            engine.dispose()
        # a PostgreSQL index other sessions use is not restored into
        holder = open_engine(url)
        try:
            with holder.connect():
                run = _vesalius(
                    "restore", str(backup), "--config", str(config), "--force", check=False
                )
                _refused(run, "other session(s)")
        finally:
            holder.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_restore_as_root_gives_the_index_to_the_data_folder_owner(
    archive: tuple[Path, Path], tmp_path: Path
) -> None:
    """Restored by root for a service that runs as its own user: that user must write it."""
    _config, backup = archive
    data = tmp_path / "service-data"
    data.mkdir()
    os.chown(data, 65534, 65534)
    config = tmp_path / "service.toml"
    write_config(
        config, {"data_dir": str(data), "dicom.port": free_port(), "http.port": free_port()}
    )
    _vesalius("restore", str(backup), "--config", str(config))
    index = data / "index.sqlite"
    assert (index.stat().st_uid, index.stat().st_gid) == (65534, 65534)


def test_backup_and_restore_with_the_database_down_say_so(
    archive: tuple[Path, Path], tmp_path: Path
) -> None:
    _config, backup = archive
    down = tmp_path / "down.toml"
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    write_config(down, {"data_dir": str(tmp_path / "d"), "database_url": url, **_free_ports()})
    run = _vesalius("backup", str(tmp_path / "x.vbk"), "--config", str(down), check=False)
    _refused(run, "Connection refused")
    assert not (tmp_path / "x.vbk").exists()
    run = _vesalius("restore", str(backup), "--config", str(down), check=False)
    _refused(run, "Connection refused")


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_a_backup_of_an_older_schema_is_migrated_on_restore(
    archive: tuple[Path, Path], tmp_path: Path, target: str
) -> None:
    """An index left at 0005 by an older Vesalius, backed up as it is, comes back at the head
    (0006: instances name their blob store), into SQLite or PostgreSQL."""
    from alembic import command

    from vesalius.index.database import alembic_config

    config, _backup = archive
    index = tmp_path / "data" / "index.sqlite"
    engine = create_engine(f"sqlite:///{index}")  # without foreign keys: 0006 down rebuilds
    try:
        with engine.connect() as conn:
            command.downgrade(alembic_config(conn), "0005")
            conn.commit()
    finally:
        engine.dispose()
    older = tmp_path / "older.backup"
    _vesalius("backup", str(older), "--config", str(config))
    assert _manifest(older)["schema_revision"] == "0005"
    with scratch_database(target, tmp_path / "target") as url:
        fresh = tmp_path / "fresh.toml"
        write_config(
            fresh,
            {
                "data_dir": str(tmp_path / "target" / "data"),
                **({} if target == "sqlite" else {"database_url": url}),
                **_free_ports(),
            },
        )
        _vesalius("restore", str(older), "--config", str(fresh))
        restored = (
            url
            if target == "postgresql"
            else f"sqlite:///{tmp_path / 'target' / 'data' / 'index.sqlite'}"
        )
        engine = open_engine(restored)
        try:
            with engine.connect() as conn:
                assert (
                    conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                    == head_revision()
                )
                stores = conn.execute(text("SELECT blob_store FROM instances")).scalars().all()
        finally:
            engine.dispose()
        assert stores == ["folder"] * 3
