"""The REST API's studies, series and patients (issue 15, part "resources"): the study list's
filters, sorts, cursor pages and total, one study with its ETag, its series, patients, the
access-label filter (a study one may not see is absent, as in C-FIND), and deletions as jobs.

One served archive per module and backend (SQLite, PostgreSQL), with a few studies ingested
through the ingest service; requests go over HTTP to the real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from conftest import make_server, running_http, scratch_database
from synth import MR_IMAGE_STORAGE, make_instance
from vesalius.identity import Identity
from vesalius.services.archive import Archive
from vesalius.services.labels import Grant

ADMIN = Identity.system("test")
READER = "reader"


@dataclass(frozen=True)
class Spec:
    """One synthetic study: its patient, attributes, and instances per series."""

    key: str
    patient: tuple[str, str]
    date: str
    modality: str
    description: str
    accession: str
    series: tuple[int, ...] = (1,)
    label: str = ""


SPECS = (
    Spec("a", ("Doe^Jane", "P-1"), "20240105", "CT", "Chest CT", "ACC1", (2, 1)),
    Spec("b", ("Doe^Jane", "P-1"), "20230301", "MR", "Brain MR", "ACC2"),
    Spec("c", ("Smith^John", "P-2"), "20240210", "CR", "Hand X-ray", "ACC3"),
    Spec("d", ("Müller^Anna", "P-3"), "20220101", "US", "Abdomen US", "ACC4", label="B"),
    Spec("e", ("doe^john", "P-4"), "20240105", "MR", "Knee MR", "ACC5", label="A"),
)


@dataclass
class Seeded:
    """What was stored: study UIDs by key, series UIDs and instance UIDs per study."""

    studies: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)
    instances: dict[str, list[list[str]]] = field(default_factory=dict)


def seed(archive: Archive, folder: Path, specs: tuple[Spec, ...] = SPECS) -> Seeded:
    """Ingest ``specs`` into ``archive`` (through the ingest service) and label them."""
    seeded = Seeded()
    for spec in specs:
        study = generate_uid()
        seeded.studies[spec.key] = study
        seeded.series[spec.key] = []
        seeded.instances[spec.key] = []
        for number, count in enumerate(spec.series, start=1):
            series = generate_uid()
            seeded.series[spec.key].append(series)
            uids = []
            for n in range(count):
                path = folder / f"{spec.key}-{number}-{n}.dcm"
                ds = make_instance(
                    path,
                    sop_class_uid=MR_IMAGE_STORAGE
                    if spec.modality == "MR"
                    else "1.2.840.10008.5.1.4.1.1.2",
                    StudyInstanceUID=study,
                    SeriesInstanceUID=series,
                    SeriesNumber=number,
                    InstanceNumber=count - n,  # stored last-first: the first is number 1
                    PatientName=spec.patient[0],
                    PatientID=spec.patient[1],
                    StudyDate=spec.date,
                    StudyTime="101500",
                    Modality=spec.modality,
                    StudyDescription=spec.description,
                    AccessionNumber=spec.accession,
                    InstitutionName="General Hospital",
                    SpecificCharacterSet="ISO_IR 192",
                )
                uids.append(str(ds.SOPInstanceUID))
                archive.ingest.ingest_copy(path, ADMIN)
            seeded.instances[spec.key].append(list(reversed(uids)))
        if spec.label:
            archive.labels.add(study, [spec.label], ADMIN)
    return seeded


@dataclass
class Served:
    url: str
    archive: Archive
    seeded: Seeded
    #: A radiologist granted label A (not B): bearer token.
    reader: dict[str, str]

    def get(self, path: str, **params: object) -> httpx.Response:
        headers = params.pop("headers", None)
        return httpx.get(f"{self.url}/api/v1{path}", params=params, headers=headers)  # type: ignore[arg-type]

    def uid(self, key: str) -> str:
        return self.seeded.studies[key]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp(f"resources-{request.param}")
    with scratch_database(request.param, folder) as url:
        running = make_server(folder / "data", url)
        try:
            archive = running.archive
            seeded = seed(archive, folder / "files")
            archive.accounts.add_user(
                READER, "reader-password-1", frozenset({"radiologist"}), ADMIN
            )
            archive.labels.grant(Grant("A", "user", READER), ADMIN)
            _token, bearer = archive.accounts.create_token(READER, ADMIN)
            with running_http(archive, running.settings) as base:
                yield Served(base, archive, seeded, {"Authorization": f"Bearer {bearer}"})
        finally:
            running.dimse.stop(grace=1)
            running.archive.close()


def _keys(served: Served, page: dict[str, object]) -> list[str]:
    by_uid = {uid: key for key, uid in served.seeded.studies.items()}
    items = page["items"]
    assert isinstance(items, list)
    return [by_uid[item["study_uid"]] for item in items]


def _all(served: Served, **params: object) -> tuple[list[str], int]:
    """Every page of the study list with ``params``: the keys in order and the total."""
    keys: list[str] = []
    cursor = None
    totals = set()
    while True:
        answer = served.get("/studies", **params, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        totals.add(page["total"])
        keys += _keys(served, page)
        cursor = page["next"]
        if cursor is None:
            assert len(totals) == 1
            return keys, totals.pop()


def test_the_study_list_pages_by_cursor_in_each_sort(served: Served) -> None:
    first = served.get("/studies").json()
    assert first["total"] == 5 and first["next"] is None
    assert _keys(served, first) == ["c", "e", "a", "b", "d"]  # newest first; a tie by pk desc
    item = first["items"][2]
    assert item == {
        "study_uid": served.uid("a"),
        "patient": {
            "patient_id": "P-1",
            "issuer": "",
            "name": "Doe^Jane",
            "birth_date": "1970-01-01",
            "sex": "O",
        },
        "study_date": "2024-01-05",
        "study_time": "10:15:00",
        "accession_number": "ACC1",
        "description": "Chest CT",
        "modalities": ["CT"],
        "referring_physician": "",
        "institution": "General Hospital",
        "series_count": 2,
        "instance_count": 3,
        "size": item["size"],
        "updated": item["updated"],
    }
    assert item["size"] > 0
    expected = {
        "-study_date": ["c", "e", "a", "b", "d"],
        "study_date": ["d", "b", "a", "e", "c"],
        "patient_name": ["a", "b", "e", "d", "c"],  # DOE^JANE, DOE^JOHN, MÜLLER, SMITH
        "-patient_name": ["c", "d", "e", "b", "a"],
        "patient_id": ["a", "b", "c", "d", "e"],
        "accession_number": ["a", "b", "c", "d", "e"],
        "updated": ["a", "b", "c", "d", "e"],
        "-updated": ["e", "d", "c", "b", "a"],
    }
    for sort, keys in expected.items():
        assert _all(served, sort=sort, limit=2) == (keys, 5), sort
    assert _all(served, limit=1) == (expected["-study_date"], 5)


def test_the_study_list_filters(served: Served) -> None:
    cases: list[tuple[dict[str, object], list[str]]] = [
        ({"patient_name": "doe*"}, ["e", "a", "b"]),  # names case-insensitively
        ({"patient_name": "Doe^Jane"}, ["a", "b"]),
        ({"patient_id": "P-2"}, ["c"]),
        ({"patient_id": "P-*"}, ["c", "e", "a", "b", "d"]),
        ({"accession_number": "ACC4"}, ["d"]),
        ({"study_date_from": "2024-01-01"}, ["c", "e", "a"]),
        ({"study_date_to": "2023-12-31"}, ["b", "d"]),
        ({"study_date_from": "2024-01-05", "study_date_to": "2024-01-05"}, ["e", "a"]),
        ({"modality": "MR"}, ["e", "b"]),
        ({"modality": "MR", "patient_name": "doe^jane"}, ["b"]),
        ({"description": "mr"}, ["e", "b"]),
        ({"description": "hand x"}, ["c"]),
        ({"q": "smith"}, ["c"]),
        ({"q": "acc2"}, ["b"]),
        ({"q": "doe knee"}, ["e"]),
        ({"q": "müller"}, ["d"]),
        ({"q": "100%"}, []),
    ]
    for params, keys in cases:
        assert _all(served, **params) == (keys, len(keys)), params
    paged = served.get("/studies", modality="MR", limit=1).json()
    assert paged["total"] == 2 and len(paged["items"]) == 1 and paged["next"]


def test_the_free_text_words_start_terms(served: Served) -> None:
    cases: list[tuple[str, list[str]]] = [
        ("jan", ["a", "b"]),  # a given name, by its start
        ("DOE", ["e", "a", "b"]),
        ("doe^jane", ["a", "b"]),  # as DICOM writes it: two words
        ("p-3", ["d"]),  # the patient ID whole
        ("p-", ["c", "e", "a", "b", "d"]),
        ("acc", ["c", "e", "a", "b", "d"]),
        ("acc3", ["c"]),
        ("x-ray", ["c"]),  # a description word, with its hyphen
        ("ray", ["c"]),  # and its pieces
        ("chest ct", ["a"]),  # every word must match
        ("chest mr", []),
        ("muller", ["d"]),  # without the accent
        ("MÜLL", ["d"]),
        ("oe", []),  # not inside a word: a word's start
        ("*", ["c", "e", "a", "b", "d"]),  # no word: no condition
    ]
    for q, keys in cases:
        assert _all(served, q=q) == (keys, len(keys)), q
    assert _all(served, q="doe", sort="patient_name", limit=1) == (["a", "b", "e"], 3)
    assert _all(served, q="doe", modality="MR") == (["e", "b"], 2)  # with the other filters
    restricted = served.get("/studies", q="doe", headers=served.reader).json()
    assert restricted["total"] == 3 and len(restricted["items"]) == 3
    hidden = served.get("/studies", q="müller", headers=served.reader).json()
    assert hidden == {"items": [], "total": 0, "next": None}  # label B: absent


def test_the_free_texts_terms_follow_ingest_and_deletion(served: Served, tmp_path: Path) -> None:
    archive = served.archive
    spec = Spec("y", ("Ngô^Bảo", "P-Y"), "20190101", "CT", "Gone", "ACCY", (2,))
    study = seed(archive, tmp_path, (spec,)).studies["y"]
    listed = served.get("/studies", q="ngo bao").json()
    assert [i["study_uid"] for i in listed["items"]] == [study]
    assert served.get("/studies", q="ngô").json()["total"] == 1
    assert httpx.delete(f"{served.url}/api/v1/studies/{study}").status_code == 202
    ran = archive.jobs.run_next()
    assert ran is not None and ran.state == "succeeded", ran
    assert served.get("/studies", q="ngo").json()["total"] == 0
    assert served.get("/studies", q="accy").json()["total"] == 0


def test_bad_list_requests_are_problems(served: Served) -> None:
    cursor = served.get("/studies", limit=1).json()["next"]
    for params, status in (
        ({"study_date_from": "2024-13-01"}, 422),
        ({"study_date_from": "2024-02-01", "study_date_to": "2024-01-01"}, 400),
        ({"sort": "size"}, 400),
        ({"limit": 0}, 422),
        ({"limit": 1001}, 422),
        ({"cursor": "nonsense!"}, 400),
        ({"cursor": cursor, "sort": "patient_id"}, 400),  # a cursor of another sort
        ({"patient_name": "a\x00b"}, 400),
    ):
        answer = served.get("/studies", **params)
        assert answer.status_code == status, (params, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"]


def test_a_study_its_etag_and_its_series(served: Served) -> None:
    uid = served.uid("a")
    answer = served.get(f"/studies/{uid}")
    assert answer.status_code == 200
    study = answer.json()
    assert study["study_uid"] == uid and study["series_count"] == 2
    etag = answer.headers["etag"]
    again = served.get(f"/studies/{uid}", headers={"If-None-Match": etag})
    assert again.status_code == 304

    series = served.get(f"/studies/{uid}/series").json()
    assert [s["series_uid"] for s in series] == served.seeded.series["a"]
    assert series[0] == {
        "series_uid": served.seeded.series["a"][0],
        "number": 1,
        "modality": "CT",
        "description": "",
        "body_part": "",
        "instance_count": 2,
        "first_instance_uid": served.seeded.instances["a"][0][0],
    }
    one = served.get(f"/studies/{uid}/series/{series[1]['series_uid']}")
    assert one.json() == series[1]

    other = served.seeded.series["b"][0]
    assert served.get(f"/studies/{uid}/series/{other}").status_code == 404
    assert served.get(f"/studies/{generate_uid()}").status_code == 404
    assert served.get(f"/studies/{generate_uid()}/series").status_code == 404
    assert served.get("/studies/not-a-uid").status_code == 400


def test_patients(served: Served) -> None:
    page = served.get("/patients").json()
    assert [p["patient_id"] for p in page["items"]] == ["P-1", "P-4", "P-3", "P-2"]
    assert page["total"] == 4
    assert page["items"][0] == {
        "patient_id": "P-1",
        "issuer": "",
        "name": "Doe^Jane",
        "birth_date": "1970-01-01",
        "sex": "O",
        "study_count": 2,
    }
    first = served.get("/patients", limit=3).json()
    rest = served.get("/patients", limit=3, cursor=first["next"]).json()
    assert [p["patient_id"] for p in first["items"] + rest["items"]] == ["P-1", "P-4", "P-3", "P-2"]
    assert rest["next"] is None and rest["total"] == 4
    assert [
        p["patient_id"] for p in served.get("/patients", patient_name="DOE*").json()["items"]
    ] == [
        "P-1",
        "P-4",
    ]
    assert served.get("/patients/P-2").json()["name"] == "Smith^John"
    assert served.get("/patients/P-2", issuer="").json()["study_count"] == 1
    assert served.get("/patients/P-9").status_code == 404
    assert served.get("/patients/P-2", issuer="ELSEWHERE").status_code == 404


def test_studies_one_may_not_see_are_absent(served: Served) -> None:
    """The reader is granted label A, not B: study d (B) is absent from every answer, as an
    unknown one; e (A) and the unlabeled ones are there."""
    reader = served.reader
    page = served.get("/studies", headers=reader).json()
    assert _keys(served, page) == ["c", "e", "a", "b"] and page["total"] == 4
    paged = served.get("/studies", headers=reader, limit=2, sort="patient_id").json()
    assert paged["total"] == 4
    assert served.get("/studies", headers=reader, q="müller").json() == {
        "items": [],
        "total": 0,
        "next": None,
    }
    assert served.get(f"/studies/{served.uid('d')}", headers=reader).status_code == 404
    assert served.get(f"/studies/{served.uid('d')}/series", headers=reader).status_code == 404
    assert served.get(f"/studies/{served.uid('e')}", headers=reader).status_code == 200
    patients = served.get("/patients", headers=reader).json()
    assert [p["patient_id"] for p in patients["items"]] == ["P-1", "P-4", "P-2"]
    assert served.get("/patients/P-3", headers=reader).status_code == 404
    # and a radiologist may not delete
    refused = httpx.delete(f"{served.url}/api/v1/studies/{served.uid('c')}", headers=reader)
    assert refused.status_code == 403


def test_deleting_an_instance_a_series_and_a_study_are_jobs(served: Served, tmp_path: Path) -> None:
    archive = served.archive
    extra = seed(
        archive,
        tmp_path,
        (Spec("x", ("Gone^Soon", "P-X"), "20200101", "CT", "To delete", "ACCX", (2, 1)),),
    )
    study = extra.studies["x"]
    base = f"{served.url}/api/v1/studies/{study}"
    first, second = extra.series["x"]

    def delete(path: str) -> httpx.Response:
        answer = httpx.delete(base + path)
        if answer.status_code == 202:
            job = answer.json()
            assert job["kind"] == "delete" and job["state"] == "queued"
            ran = archive.jobs.run_next()
            assert ran is not None and ran.state == "succeeded", ran
        return answer

    assert delete(f"/series/{first}/instances/{generate_uid()}").status_code == 404
    assert delete(f"/series/{first}/instances/{extra.instances['x'][0][0]}").status_code == 202
    assert served.get(f"/studies/{study}").json()["instance_count"] == 2
    assert delete(f"/series/{second}").status_code == 202
    assert [s["series_uid"] for s in served.get(f"/studies/{study}/series").json()] == [first]
    assert delete("").status_code == 202
    assert served.get(f"/studies/{study}").status_code == 404
    assert delete("").status_code == 404
    assert httpx.delete(f"{served.url}/api/v1/studies/1.2.3.x").status_code == 400
