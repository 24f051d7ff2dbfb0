"""The index migrations build the schema ``index/schema.py`` declares, on SQLite and
PostgreSQL; an archive whose database is at 0005 (before instances named their blob store)
upgrades at start, and its instances read as the folder store's."""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydicom import dcmread
from sqlalchemy import insert, inspect, select, text

from conftest import make_server
from synth import make_instance
from vesalius.identity import Identity
from vesalius.index.backup import head_revision
from vesalius.index.catalog import Catalog
from vesalius.index.database import alembic_config, open_engine
from vesalius.index.schema import deleted_blobs, instances, metadata, patients, series, studies
from vesalius.services.retrieve import RetrieveKeys
from vesalius.storage import FOLDER_STORE


def _differences(url: str) -> list[Any]:
    catalog = Catalog.open(url)  # migrated to the head
    try:
        with catalog.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            found = compare_metadata(context, metadata)
    finally:
        catalog.close()
    # PostgreSQL's text_pattern_ops indexes (migration 0003) serve LIKE; schema.py omits them.
    return [
        d for d in found if not (d[0] == "remove_index" and str(d[1].name).endswith("_pattern"))
    ]


def test_migrations_build_the_declared_schema(database_url: str) -> None:
    assert _differences(database_url) == []
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            columns = {c["name"]: c for c in inspect(conn).get_columns("instances")}
            blob_store = columns["blob_store"]
            assert not blob_store["nullable"] and "folder" in str(blob_store["default"])
            command.downgrade(alembic_config(conn), "0005")  # and back
            conn.commit()
            assert "blob_store" not in {c["name"] for c in inspect(conn).get_columns("instances")}
    finally:
        engine.dispose()
    assert _differences(database_url) == []


def test_an_archive_at_0005_upgrades_and_reads_its_blobs(tmp_path: Path, database_url: str) -> None:
    """Rows and files as an archive left them at 0005: the file in the folder layout
    (``storage/blobs/ab/cd/<key>.dcm``), the row without a store; a note of a blob left to
    delete with an empty store. After the upgrade at start the row names the folder store and
    the instance is served; the note names the folder store and the sweep removes its file."""
    data = tmp_path / "data"
    source = tmp_path / "old.dcm"
    ds = make_instance(source, PatientID="OLD")
    key, gone = "0123" + "ab" * 14, "0123" + "cd" * 14
    for blob in (key, gone):
        target = data / "storage" / "blobs" / blob[:2] / blob[2:4] / f"{blob}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    content = source.read_bytes()
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(conn), "0005")
            conn.commit()
            _insert_0005_rows(conn, ds, key, content)
            conn.execute(insert(deleted_blobs), [{"blob_key": gone, "created_at": _now()}])
            conn.commit()
            assert "blob_store" not in {c["name"] for c in inspect(conn).get_columns("instances")}
    finally:
        engine.dispose()

    running = make_server(data, database_url)
    try:
        with running.catalog.read() as conn:
            assert (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                == head_revision()
            )
            assert conn.execute(select(instances.c.blob_store)).scalars().all() == [FOLDER_STORE]
            assert conn.execute(select(deleted_blobs.c.store)).scalars().all() == [FOLDER_STORE]
        keys = RetrieveKeys("IMAGE", sop_instance_uids=(str(ds.SOPInstanceUID),))
        [found] = running.archive.retrieve.plan(keys, Identity.system("test"), "test").instances
        assert (found.blob_store, found.blob_key) == (FOLDER_STORE, key)
        with running.archive.retrieve.open(found) as reader:
            assert reader.read() == content
        assert running.archive.deletion.sweep() == (1, 0)
        assert [p.stem for p in running.stored_files()] == [key]
        assert dcmread(running.stored_files()[0]).SOPInstanceUID == ds.SOPInstanceUID
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _insert_0005_rows(conn: Any, ds: Any, key: str, content: bytes) -> None:
    """One instance as 0005's schema holds it (no ``blob_store``)."""
    now = _now()
    patient = conn.execute(
        insert(patients).values(patient_id=str(ds.PatientID)).returning(patients.c.pk)
    ).scalar_one()
    study = conn.execute(
        insert(studies)
        .values(
            patient_pk=patient,
            study_uid=str(ds.StudyInstanceUID),
            created_at=now,
            updated_at=now,
            num_series=1,
            num_instances=1,
        )
        .returning(studies.c.pk)
    ).scalar_one()
    serie = conn.execute(
        insert(series)
        .values(study_pk=study, series_uid=str(ds.SeriesInstanceUID), num_instances=1)
        .returning(series.c.pk)
    ).scalar_one()
    conn.execute(
        insert(instances).values(
            series_pk=serie,
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            blob_key=key,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            received_at=now,
        )
    )


def test_0019_moves_a_login_out_of_a_peers_dicomweb_url(database_url: str) -> None:
    """A user and password written into a peer's DICOMweb URL (the only way before 0019)
    become the peer's Basic login; the URL is kept without them."""
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(conn), "0016")
            conn.commit()
            for name, url in (
                ("locked", "https://al%40ice:p%3Ass@pacs.example:8443/dicom-web"),
                ("open", "https://pacs.example/dicom-web"),
            ):
                conn.execute(
                    text(
                        "INSERT INTO peers (name, ae_title, host, port, updated_at, dicomweb_url)"
                        " VALUES (:name, 'AE', 'h', 104, :now, :url)"
                    ),
                    {"name": name, "url": url, "now": _now()},
                )
            conn.commit()
            command.upgrade(alembic_config(conn), "0019")
            conn.commit()
            found = conn.execute(
                text(
                    "SELECT name, dicomweb_url, dicomweb_auth, dicomweb_user, dicomweb_secret"
                    " FROM peers ORDER BY name"
                )
            ).all()
            assert [tuple(row) for row in found] == [
                ("locked", "https://pacs.example:8443/dicom-web", "basic", "al@ice", "p:ss"),
                ("open", "https://pacs.example/dicom-web", "", "", ""),
            ]
    finally:
        engine.dispose()
