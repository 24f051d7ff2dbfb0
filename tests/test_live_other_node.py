"""Live updates across nodes, on SQLite and PostgreSQL: a real ``vesalius serve`` process (node
A) and this test process's own archive on the same index and storage (node B, as a second node
or a ``vesalius`` command would be). Studies B deletes, corrects and whose correction it undoes
reach A's ``GET /api/v1/events`` listeners, which are not on B's event bus: they read the change
feed (``study_changes``), each listener hearing only of the studies it may see, a deleted
study's labels included."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import PERMISSIVE, scratch_database, wait_until
from served import Served, serve
from sse import Stream, open_stream
from synth import make_instance
from vesalius.identity import Identity
from vesalius.index import changes
from vesalius.services.retrieve import RetrieveKeys
from vesalius.settings import load_settings
from vesalius.wiring import Assembly, assemble

SECRET = "1.2.826.0.1.3680043.8.498.15201"
PUBLIC = "1.2.826.0.1.3680043.8.498.15202"
FIXED = "1.2.826.0.1.3680043.8.498.15203"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Served, Assembly]]:
    """Node A served in its own process (its job runner looks for work once an hour, so what
    B submits runs in B), node B assembled here; both on one index and one data folder."""
    with scratch_database(request.param, tmp_path) as database:
        settings = {
            "database_url": database,
            "auth.required": True,
            "jobs.poll_interval": 3600.0,
        }
        with serve(tmp_path / "a", settings) as node_a:
            overrides = {
                "data_dir": str(node_a.data_dir),
                "storage.min_free_mb": 0,
                **PERMISSIVE,
                **settings,
            }
            node_b = assemble(load_settings(environ={}, overrides=overrides))
            try:
                yield node_a, node_b
            finally:
                node_b.close()


def test_a_study_deleted_or_corrected_on_another_node_reaches_the_listeners(
    nodes: tuple[Served, Assembly], tmp_path: Path
) -> None:
    node_a, node_b = nodes
    archive, system = node_b.archive, Identity.system()
    bearer = {}
    for name, role in (("boss", "admin"), ("rad", "radiologist")):
        archive.accounts.add_user(name, "a long enough password 1", frozenset({role}), system)
        bearer[name] = {"Authorization": f"Bearer {archive.accounts.create_token(name, system)[1]}"}
    for n, study in enumerate((SECRET, PUBLIC, FIXED)):
        path = tmp_path / f"{n}.dcm"
        make_instance(path, StudyInstanceUID=study, PatientID=f"LIVE-{n}")
        archive.ingest.ingest_copy(path, system)
    archive.labels.add(SECRET, ["oncology"], system)
    boss, rad = (open_stream(node_a.url, bearer[name])[0] for name in ("boss", "rad"))

    def heard(stream: Stream, study: str, change: str) -> int:
        return sum(
            1
            for kind, data in list(stream.events)
            if kind == "study" and data == {"study_uid": study, "change": change}
        )

    for study in (SECRET, PUBLIC):  # in this process: never on node A's event bus
        archive.deletion.delete(RetrieveKeys("STUDY", study_uids=(study,)), system)
    correction = archive.corrections.submit(FIXED, {"study_description": "Corrected"}, system)
    assert correction.job is not None
    ran = archive.jobs.run_job(correction.job.pk)
    assert ran is not None and ran.state == "succeeded", ran

    for stream in (boss, rad):
        wait_until(lambda s=stream: heard(s, PUBLIC, "deleted") == 1, what="public deleted")
        wait_until(lambda s=stream: heard(s, FIXED, "corrected") == 1, what="the correction")
    wait_until(lambda: heard(boss, SECRET, "deleted") == 1, what="the admin hears of secret")
    # The radiologist may not see the labeled study: its deletion, noted before the public
    # study's and so read by then, was not sent to it.
    assert heard(rad, SECRET, "deleted") == 0

    undo = archive.corrections.undo(correction.row.pk, system)
    assert undo.job is not None
    ran = archive.jobs.run_job(undo.job.pk)
    assert ran is not None and ran.state == "succeeded", ran
    for stream in (boss, rad):
        wait_until(lambda s=stream: heard(s, FIXED, "corrected") == 2, what="the undo")
    # Each change once, not again at the hub's later looks (the feed overlaps them).
    assert heard(boss, PUBLIC, "deleted") == heard(boss, SECRET, "deleted") == 1
    assert node_a.alive()

    with node_b.catalog.read() as conn:  # the feed as written: a row per study and change
        noted = [(c.study_uid, c.change, c.labels) for c in changes.since(conn, EPOCH)]
    assert noted == [
        (SECRET, "deleted", frozenset({"oncology"})),
        (PUBLIC, "deleted", frozenset()),
        (FIXED, "corrected", frozenset()),
        (FIXED, "corrected", frozenset()),
    ]
    with node_b.catalog.write() as conn:
        assert changes.prune(conn, EPOCH) == 0  # nothing that old
