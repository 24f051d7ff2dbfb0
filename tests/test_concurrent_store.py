"""Several associations storing into the same study at once keep the index exact."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select

from conftest import RunningServer, dcmtk
from vesalius.index.schema import patients, series, studies


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

    with server.archive.catalog.read() as conn:
        study = conn.execute(select(studies).where(studies.c.study_uid == study_uid)).one()
        assert study.num_series == 4
        assert study.num_instances == 24
        assert study.modalities_in_study == "CT\\MR"
        counts = conn.execute(select(series.c.num_instances)).scalars().all()
        assert sorted(counts) == [6, 6, 6, 6]
        patient = conn.execute(select(patients)).one()
        assert (patient.num_studies, patient.num_series, patient.num_instances) == (1, 4, 24)
    assert len(server.stored_files()) == 24
