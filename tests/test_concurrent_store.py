"""Several associations storing into the same study at once keep the index exact."""

from __future__ import annotations

import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select

from conftest import RunningServer, dcmtk, wait_until
from vesalius.dimse.board import LoadBoard
from vesalius.dimse.server import DimseServer, listen
from vesalius.index.schema import patients, series, studies
from vesalius.settings import load_settings
from vesalius.wiring import assemble, dimse_config


def _make_study(folder: Path, n_series: int, per_series: int) -> str:
    base = dcmread(get_testdata_file("CT_small.dcm"))
    study_uid = generate_uid()
    base.StudyInstanceUID = study_uid
    for s in range(n_series):
        series_uid = generate_uid()
        for i in range(per_series):
            base.SeriesInstanceUID = series_uid
            base.SeriesNumber = s + 1
            base.Modality = "CT" if s % 2 == 0 else "MR"
            base.InstanceNumber = i + 1
            base.SOPInstanceUID = generate_uid()
            base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
            base.save_as(folder / f"s{s}_{i}.dcm", enforce_file_format=True)
    return study_uid


def test_parallel_associations_same_study(server: RunningServer, tmp_path: Path) -> None:
    study_uid = _make_study(tmp_path, n_series=4, per_series=6)
    files = sorted(tmp_path.glob("*.dcm"))
    batches = [files[i::4] for i in range(4)]  # each association gets files of every series

    def send(batch: list[Path]) -> subprocess.CompletedProcess[str]:
        return dcmtk("storescu", *server.address, *map(str, batch))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, batches))

    with server.catalog.read() as conn:
        study = conn.execute(select(studies).where(studies.c.study_uid == study_uid)).one()
        assert study.num_series == 4
        assert study.num_instances == 24
        assert study.modalities_in_study == "CT\\MR"
        counts = conn.execute(select(series.c.num_instances)).scalars().all()
        assert sorted(counts) == [6, 6, 6, 6]
        patient = conn.execute(select(patients)).one()
        assert (patient.num_studies, patient.num_series, patient.num_instances) == (1, 4, 24)
    assert len(server.stored_files()) == 24


def test_accepting_processes_share_connections_evenly(tmp_path: Path) -> None:
    """Servers accepting on one socket (as the worker processes do) take turns by load: each
    holds two of four connections, where the kernel alone may give one server all four."""
    settings = load_settings(
        environ={},
        overrides={"data_dir": str(tmp_path / "data"), "storage.min_free_mb": 0},
    )
    archive = assemble(settings).archive
    listener = listen("127.0.0.1", 0)
    board = LoadBoard(2)
    servers = [DimseServer(archive, dimse_config(settings), load=board.slot(n)) for n in range(2)]
    for dimse in servers:
        dimse.start(listener)
    clients = []
    try:
        for _ in range(4):
            clients.append(socket.create_connection(("127.0.0.1", servers[0].port)))
            wait_until(
                lambda: sum(len(s.active()) for s in servers) >= len(clients),
                timeout=5,
                what="connection accepted",
            )
        assert [len(s.active()) for s in servers] == [2, 2]
        assert list(board.counts) == [2, 2]
    finally:
        for client in clients:
            client.close()
        for dimse in servers:
            dimse.stop(grace=2)
        archive.close()
    assert list(board.counts) == [LoadBoard.GONE, LoadBoard.GONE]
