"""``/healthz`` and ``/readyz`` of a real ``vesalius serve``: alive while it serves; ready only
while the database answers, the storage is writable, the disk has ``storage.min_free_mb``
free and jobs have a live runner, else 503 naming the check that failed and why."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text, update

from conftest import PG_ADMIN_URL, scratch_database
from served import serve
from vesalius.index import jobs as job_table
from vesalius.settings import load_settings
from vesalius.wiring import assemble, job_runner


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(url + "/readyz", timeout=30)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def test_alive_and_ready(tmp_path: Path) -> None:
    with serve(tmp_path, {"dicom.workers": 2}) as served:
        alive = httpx.get(served.url + "/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "alive"})
        status, report = readyz(served.url)
        assert status == 200, report
        assert report["status"] == "ready"
        assert set(report["checks"]) == {"database", "storage", "disk", "jobs"}
        assert all(check["ok"] for check in report["checks"].values())
        assert httpx.get(served.url + "/health").status_code == 200  # the documented one stays
        assert httpx.head(served.url + "/readyz").status_code == 200


def test_not_ready_when_the_disk_is_short_of_min_free_mb(tmp_path: Path) -> None:
    with serve(tmp_path, {"storage.min_free_mb": 1 << 40}) as served:
        status, report = readyz(served.url)
        assert status == 503
        assert report["status"] == "not ready"
        disk = report["checks"]["disk"]
        assert disk["ok"] is False and "storage.min_free_mb" in disk["detail"]
        assert report["checks"]["database"]["ok"] is True
        assert httpx.get(served.url + "/healthz").status_code == 200  # alive all the same


def test_not_ready_when_the_data_folder_is_removed_while_serving(tmp_path: Path) -> None:
    """Removal rather than chmod: the tests may run as root, whom no mode stops."""
    with serve(tmp_path, {"dicom.workers": 2}) as served:
        assert readyz(served.url)[0] == 200
        shutil.rmtree(served.data_dir)
        for _ in range(4):  # whichever process answers
            status, report = readyz(served.url)
            assert status == 503, report
            storage = report["checks"]["storage"]
            assert storage["ok"] is False
            assert "No such file or directory" in storage["detail"], storage
        assert httpx.get(served.url + "/healthz").status_code == 200


def test_not_ready_when_the_database_goes_away(tmp_path: Path) -> None:
    """PostgreSQL: the index database dropped under a serving server (its connections cut)."""
    with (
        scratch_database("postgresql", tmp_path) as url,
        serve(tmp_path / "pacs", {"database_url": url, "dicom.workers": 2}) as served,
    ):
        assert readyz(served.url)[0] == 200
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()
        for _ in range(4):  # whichever process answers
            status, report = readyz(served.url)
            assert status == 503, report
            database = report["checks"]["database"]
            assert database["ok"] is False and "does not exist" in database["detail"]
            assert report["checks"]["storage"]["ok"] is True
        assert httpx.get(served.url + "/healthz").status_code == 200


def test_jobs_check_sees_a_stopped_runner_and_an_abandoned_job(tmp_path: Path) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "storage.min_free_mb": 0,
            "jobs.stale_after": 1.0,
        },
    )
    assembly = assemble(settings)
    archive = assembly.archive
    try:
        # a process without a runner (a worker on SQLite) sees a job claimed by a runner that
        # went silent long ago and that nobody took back
        with assembly.catalog.write() as conn:
            pk = job_table.enqueue(conn, "send", {}, max_attempts=3, submitted_by="test")
            job_table.claim(conn, "gone@elsewhere", ["send"], pk=pk)
            conn.execute(
                update(job_table.jobs)
                .where(job_table.jobs.c.pk == pk)
                .values(heartbeat_at=job_table.now() - timedelta(seconds=60))
            )
        jobs = archive.health.readiness()["checks"]["jobs"]
        assert jobs["ok"] is False and "no job runner is alive" in jobs["detail"]
        with assembly.catalog.write() as conn:
            conn.execute(update(job_table.jobs).values(state="failed"))
        assert archive.health.readiness()["checks"]["jobs"]["ok"] is True

        runner = job_runner(archive, settings)
        runner.start()
        assert archive.health.readiness()["checks"]["jobs"] == {"ok": True, "detail": "ok"}
        runner.stop()
        report = archive.health.readiness()
        assert report["status"] == "not ready"
        assert report["checks"]["jobs"] == {
            "ok": False,
            "detail": "the job runner of this process has stopped",
        }
    finally:
        assembly.close()
