"""The statistics summary's snapshot (``index/statistics.py``): the answer equals what the
rows say, read whole, through every way the snapshot is used — taken, read with what arrived
since, folded forward, found broken by a deletion, by a replaced instance or by instances
stamped before its cutoff — on SQLite and PostgreSQL. The service's clock is moved, never
slept on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from conftest import RunningServer
from synth import make_instance
from vesalius.identity import Identity
from vesalius.index.lookup import RetrieveKeys
from vesalius.index.schema import instances, series
from vesalius.index.statistics_snapshot import load
from vesalius.services.statistics import FOLD_AFTER, RETAKE_AFTER, StatisticsService

SYSTEM = Identity.system()


def _truth(server: RunningServer) -> dict[str, Any]:
    """What the rows say, read whole (as the summary did before the snapshot)."""
    with server.catalog.read() as conn:
        n, size = conn.execute(
            select(func.count(), func.coalesce(func.sum(instances.c.size), 0))
        ).one()
        senders = conn.execute(
            select(instances.c.source_ae, func.count(), func.sum(instances.c.size)).group_by(
                instances.c.source_ae
            )
        ).all()
        modalities = conn.execute(
            select(
                series.c.modality,
                func.count(func.distinct(series.c.study_pk)),
                func.sum(series.c.num_instances),
            ).group_by(series.c.modality)
        ).all()
    return {
        "instances": int(n),
        "bytes": int(size),
        "senders": sorted((str(a), int(c), int(b)) for a, c, b in senders),
        "modalities": sorted((str(m), int(s), int(c)) for m, s, c in modalities),
    }


def _answer(stats: StatisticsService) -> dict[str, Any]:
    found = stats.summary(SYSTEM)
    return {
        "instances": found.instances,
        "bytes": found.bytes,
        "senders": sorted((t.name, t.instances, t.bytes) for t in found.senders),
        "modalities": sorted((t.name, t.studies, t.instances) for t in found.modalities),
    }


def _store(server: RunningServer, folder: Path, who: str, n: int, **attrs: Any) -> list[str]:
    uids = []
    for k in range(n):
        path = folder / f"{who}-{len(list(folder.iterdir()))}-{k}.dcm"
        ds = make_instance(path, rows=4 + k, columns=4, **attrs)
        server.archive.ingest.ingest_copy(path, Identity.system(who))
        uids.append(str(ds.SOPInstanceUID))
    return uids


def test_the_snapshot_answers_as_the_rows_do(server: RunningServer, tmp_path: Path) -> None:
    stats = server.archive.statistics
    assert stats is not None
    files = tmp_path / "files"
    files.mkdir()
    study = "1.2.826.0.1.3680043.10.1138.77.1"
    _store(server, files, "ct_node", 3, StudyInstanceUID=study, Modality="CT")
    _store(
        server, files, "mr_node", 2, StudyInstanceUID=study + ".2", Modality="MR", PatientID="P2"
    )
    with server.catalog.read() as conn:
        assert load(conn) is None
    assert _answer(stats) == _truth(server)  # taken: everything arrived since its cutoff
    with server.catalog.read() as conn:
        first = load(conn)
    assert first is not None and first.totals.instances == 0
    _store(server, files, "ct_node", 1, StudyInstanceUID=study, Modality="CT")
    assert _answer(stats) == _truth(server)  # the snapshot plus what arrived since
    with server.catalog.read() as conn:
        assert load(conn) == first  # used as it was

    real = stats.clock
    later = real() + FOLD_AFTER * 2
    stats.clock = lambda: later
    assert _answer(stats) == _truth(server)  # folded: what arrived is in the snapshot now
    with server.catalog.read() as conn:
        folded = load(conn)
    assert folded is not None and folded.totals.instances == 6 and folded.cutoff > first.cutoff
    # series made since: a study's first of a modality, and one more of a modality it has
    _store(server, files, "mr_node", 1, StudyInstanceUID=study, Modality="MR")
    _store(
        server, files, "mr_node", 1, StudyInstanceUID=study + ".2", Modality="MR", PatientID="P2"
    )
    assert _answer(stats) == _truth(server)

    # stamped before the cutoff but seen after it (a late commit, another node's clock)
    late = _store(server, files, "ct_node", 2, StudyInstanceUID=study, Modality="CT")
    assert _answer(stats) == _truth(server)
    with server.catalog.read() as conn:
        again = load(conn)
    assert again is not None and again.totals.instances == 10  # computed afresh

    # the clock back: a snapshot "from the future" is not used; one an hour old neither
    stats.clock = real
    assert _answer(stats) == _truth(server)
    with server.catalog.read() as conn:
        present = load(conn)
    assert present is not None and present.cutoff < again.cutoff
    stats.clock = lambda: real() + RETAKE_AFTER
    assert _answer(stats) == _truth(server)
    stats.clock = real
    assert _answer(stats) == _truth(server)

    # an instance replaced (a new row, the old one gone), then a study deleted
    server.archive.ingest.duplicate_policy = "replace"
    server.archive.ingest.ingest_copy(files / "ct_node-0-0.dcm", Identity.system("again"))
    assert _answer(stats) == _truth(server)
    server.archive.deletion.delete(RetrieveKeys("STUDY", study_uids=(study + ".2",)), SYSTEM)
    assert _answer(stats) == _truth(server)
    server.archive.deletion.delete(RetrieveKeys("IMAGE", sop_instance_uids=(late[0],)), SYSTEM)
    assert _answer(stats) == _truth(server)
    found = stats.summary(SYSTEM)
    assert found.instances == 6 and [t.name for t in found.modalities] == ["CT", "MR"]
    assert {t.name for t in found.senders} == {"ct_node", "again", "mr_node"}
