"""A served archive with a few stored studies, for the system part's tests (statistics, users,
audit, the pages, the schema run): two studies sent by a modality over C-STORE (DCMTK's
storescu, calling AE ``MODALITY1``), one stored over STOW-RS by a user; one server per
backend per test module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import RunningServer, dcmtk, make_server, running_http, scratch_database
from synth import make_instance

BOUNDARY = "system-boundary"
SENDER = "MODALITY1"


@dataclass
class Site:
    """A running archive, its URL, and what was stored in it."""

    running: RunningServer
    url: str
    backend: str
    studies: dict[str, str] = field(default_factory=dict)  # study UID -> patient ID
    series: dict[str, str] = field(default_factory=dict)  # series UID -> study UID
    instances: dict[str, str] = field(default_factory=dict)  # SOP instance UID -> series UID
    bytes: int = 0

    @property
    def archive(self):  # type: ignore[no-untyped-def]
        return self.running.archive


def stow(url: str, paths: list[Path], headers: dict[str, str] | None = None) -> httpx.Response:
    """Store ``paths`` over STOW-RS (PS3.18 10.5) in one request."""
    body = (
        b"".join(
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + path.read_bytes()
            + b"\r\n"
            for path in paths
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    kind = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return httpx.post(
        f"{url}/dicom-web/studies",
        content=body,
        headers={"Content-Type": kind, "Accept": "application/dicom+json", **(headers or {})},
        timeout=30,
    )


def seed(site: Site, folder: Path, stow_headers: dict[str, str] | None = None) -> None:
    """Store three studies: CT and MR from the modality, a CR one from a user."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[Path]] = {"dimse": [], "stow": []}
    plan = [
        ("dimse", "CT", "SYS-1", "Alpha^Ann", 3),
        ("dimse", "MR", "SYS-2", "Beta^Bob", 2),
        ("stow", "CR", "SYS-3", "Gamma^Gus", 1),
    ]
    for door, modality, patient, name, count in plan:
        study = series = ""
        for number in range(count):
            path = folder / f"{patient}-{number}.dcm"
            ds = make_instance(
                path,
                Modality=modality,
                PatientID=patient,
                PatientName=name,
                InstanceNumber=number + 1,
                **({"StudyInstanceUID": study, "SeriesInstanceUID": series} if study else {}),
            )
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            site.studies[study] = patient
            site.series[series] = study
            site.instances[str(ds.SOPInstanceUID)] = series
            site.bytes += path.stat().st_size
            made[door].append(path)
    dcmtk("storescu", "-aet", SENDER, *site.running.address, *map(str, made["dimse"]))
    answer = stow(site.url, made["stow"], stow_headers)
    assert answer.status_code == 200, answer.text


@contextmanager
def served(folder: Path, backend: str, **overrides: object) -> Iterator[Site]:
    """An archive on ``backend`` served over HTTP (with ``overrides`` to its settings)."""
    with scratch_database(backend, folder) as database_url:
        running = make_server(folder / "data", database_url, **overrides)
        try:
            with running_http(running.archive, running.settings) as url:
                yield Site(running, url, backend)
        finally:
            running.dimse.stop(grace=2)
            running.archive.close()
