"""The study list's "updated" sort and ``description`` filter (issue 15 follow-up): the sort's
keyset pages with ties in ``updated_at``, ingest moving ``updated_at`` only when it is older
than a second, the description's words and wild card patterns (``index/description.py``), and
the migration that fills the description's columns, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from pydicom.uid import generate_uid
from sqlalchemy import Engine, insert, select, update

from conftest import make_server, running_http, scratch_database
from synth import make_instance
from test_api_resources import Seeded, Spec, seed
from vesalius.identity import Identity
from vesalius.index import browse
from vesalius.index.database import alembic_config, open_engine
from vesalius.index.description import description_columns
from vesalius.index.schema import patients, studies
from vesalius.index.search import query_words
from vesalius.services.archive import Archive

ADMIN = Identity.system("test")

SPECS = (
    Spec("a", ("Doe^Jane", "P-1"), "20240105", "CT", "CT-Thorax w/ contrast", "ACC1"),
    Spec("b", ("Roe^Ann", "P-2"), "20240106", "CT", "Thorax CT", "ACC2"),
    Spec("c", ("Poe^Ed", "P-3"), "20240107", "MR", "Knee MR (left)", "ACC3"),
    Spec("d", ("Zoe^Al", "P-4"), "20240108", "US", "Échographie abdominale", "ACC4"),
    Spec("e", ("Moe^Bo", "P-5"), "20240109", "CR", "Hand 100%_x", "ACC5"),
    Spec("f", ("Loe^Cy", "P-6"), "20240110", "MR", "", "ACC6"),
)


@dataclass
class Listed:
    url: str
    archive: Archive
    seeded: Seeded
    engine: Engine
    files: Path

    def get(self, **params: object) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1/studies", params=params)  # type: ignore[arg-type]

    def all(self, **params: object) -> list[str]:
        """Every page's study keys in order (the total checked on each page)."""
        by_uid = {uid: key for key, uid in self.seeded.studies.items()}
        keys: list[str] = []
        cursor = None
        while True:
            answer = self.get(**params, **({"cursor": cursor} if cursor else {}))
            assert answer.status_code == 200, answer.text
            page = answer.json()
            keys += [by_uid[item["study_uid"]] for item in page["items"]]
            cursor = page["next"]
            if cursor is None:
                assert page["total"] == len(keys)
                return keys

    def set_updated(self, at: datetime, *keys: str) -> None:
        uids = [self.seeded.studies[k] for k in keys]
        with self.engine.begin() as conn:
            conn.execute(update(studies).where(studies.c.study_uid.in_(uids)).values(updated_at=at))

    def updated(self, key: str) -> datetime:
        study = httpx.get(f"{self.url}/api/v1/studies/{self.seeded.studies[key]}").json()
        return datetime.fromisoformat(study["updated"].replace("Z", "+00:00"))

    def add_instance(self, key: str, *, new_series: bool = False) -> None:
        """Store one more instance in study ``key`` (in its first series, or a new one)."""
        spec = next(s for s in SPECS if s.key == key)
        series = generate_uid() if new_series else self.seeded.series[key][0]
        path = self.files / f"{generate_uid()}.dcm"
        make_instance(
            path,
            StudyInstanceUID=self.seeded.studies[key],
            SeriesInstanceUID=series,
            PatientName=spec.patient[0],
            PatientID=spec.patient[1],
            StudyDate=spec.date,
            Modality=spec.modality,
            StudyDescription=spec.description,
            AccessionNumber=spec.accession,
            SpecificCharacterSet="ISO_IR 192",
        )
        self.archive.ingest.ingest_copy(path, ADMIN)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def listed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Listed]:
    folder = tmp_path_factory.mktemp(f"listsort-{request.param}")
    with scratch_database(request.param, folder) as url:
        running = make_server(folder / "data", url)
        engine = open_engine(url)
        try:
            seeded = seed(running.archive, folder / "files", SPECS)
            with running_http(running.archive, running.settings) as base:
                yield Listed(base, running.archive, seeded, engine, folder / "files")
        finally:
            engine.dispose()
            running.dimse.stop(grace=1)
            running.archive.close()


def test_the_description_words_and_columns() -> None:
    derived = description_columns("CT-Thorax, w/o  Müller^x")
    assert derived["study_description_folded"] == "CT-THORAX, W/O  MÜLLER^X"
    words = derived["study_description_words"]
    assert words.startswith(" ") and words.endswith(" ")
    assert words.split() == ["CT-THORAX", "CT", "THORAX", "W/O", "W", "O", "MÜLLER", "MULLER", "X"]
    empty = {"study_description_folded": "", "study_description_words": ""}
    assert description_columns("") == empty
    assert description_columns(" -- ")["study_description_words"] == ""
    assert query_words(" thorax,  ct* -- (left) thorax") == ["THORAX", "CT", "LEFT"]


@pytest.mark.parametrize("few", [500, 0], ids=["keys-first", "tested-in-the-list"])
def test_the_description_filter(listed: Listed, few: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case both ways: the keys of a rare description found first (``narrowed``), and the
    condition in the list's and the total's statements (a common one)."""
    monkeypatch.setattr(browse, "DESCRIBED_FEW", few)
    cases: list[tuple[str, list[str]]] = [
        # plain text: each word starts a word of the description, case-insensitively
        ("thorax", ["b", "a"]),
        ("THOR", ["b", "a"]),
        ("horax", []),  # not inside a word
        ("ct thorax", ["b", "a"]),  # every word, in any order
        ("thorax mr", []),
        ("ct-thorax", ["a"]),  # a word with its punctuation, whole
        ("contrast, ct", ["a"]),  # punctuation around a word is ignored
        ("(left)", ["c"]),
        ("echographie", ["d"]),  # accents left out
        ("écho abdo", ["d"]),
        ("100%_x", ["e"]),  # LIKE's own characters are plain characters
        ("100%x", []),
        ("h_nd", []),
        ("--", ["f", "e", "d", "c", "b", "a"]),  # no word: no condition
        # with * or ?: the whole description, DICOM wild cards (PS3.4 C.2.2.2.4)
        ("thorax*", ["b"]),
        ("*thorax*", ["b", "a"]),
        ("*HORAX*", ["b", "a"]),
        ("*thor?x*", ["b", "a"]),
        ("ct-thorax*", ["a"]),
        ("*(left)", ["c"]),
        ("*horax", []),
        ("knee mr (left)?", []),
        ("?nee*", ["c"]),
        ("ÉCHO*", ["d"]),
        ("echo*", []),  # a pattern keeps its accents
        ("*", ["f", "e", "d", "c", "b", "a"]),  # universal (C.2.2.2.3)
    ]
    for text, keys in cases:
        assert listed.all(description=text) == keys, text
    assert listed.all(description="thorax", modality="CT", sort="patient_name") == ["a", "b"]
    assert listed.all(description="*o*", limit=1) == ["d", "b", "a"]


def test_the_updated_sort_pages_through_ties(listed: Listed) -> None:
    later, earlier = datetime(2030, 1, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC)
    listed.set_updated(later, "a", "b", "c")
    listed.set_updated(earlier, "d", "e", "f")
    newest = ["c", "b", "a", "f", "e", "d"]  # ties: the order stored, reversed
    for limit in (1, 2, 4, 100):
        assert listed.all(sort="-updated", limit=limit) == newest, limit
        assert listed.all(sort="updated", limit=limit) == newest[::-1], limit
    assert listed.all(sort="-updated", description="thorax", limit=1) == ["b", "a"]


def test_ingest_moves_updated_only_when_a_second_old(listed: Listed) -> None:
    """A study whose ``updated_at`` is older than a second gets the time of the instance stored
    (in a known series, or in a new one); a newer one is left as it is (what keeps the sort's
    index still while a study arrives), while the counts move."""
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    for new_series in (False, True):
        listed.set_updated(long_ago, "c")
        before = datetime.now(UTC)
        listed.add_instance("c", new_series=new_series)
        assert listed.updated("c") >= before.replace(microsecond=0), new_series
    ahead = datetime(2100, 1, 1, tzinfo=UTC)
    listed.set_updated(ahead, "c")
    count = httpx.get(f"{listed.url}/api/v1/studies/{listed.seeded.studies['c']}").json()
    for new_series in (False, True):
        listed.add_instance("c", new_series=new_series)
        assert listed.updated("c") == ahead, new_series
    again = httpx.get(f"{listed.url}/api/v1/studies/{listed.seeded.studies['c']}").json()
    assert again["instance_count"] == count["instance_count"] + 2
    assert listed.all(sort="-updated")[0] == "c"


def test_the_migration_fills_the_description_columns(database_url: str) -> None:
    engine = open_engine(database_url)
    descriptions = ["CT-Thorax w/ contrast", "Müller", ""]
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(conn), "0016")
            conn.commit()
            now = datetime.now(UTC)
            patient = conn.execute(
                insert(patients).values(patient_id="MIG").returning(patients.c.pk)
            ).scalar_one()
            for n, text in enumerate(descriptions):
                conn.execute(
                    insert(studies).values(
                        patient_pk=patient,
                        study_uid=f"1.2.3.{n}",
                        study_description=text,
                        created_at=now,
                        updated_at=now,
                    )
                )
            conn.commit()
            for _ in range(2):  # up, then down and up again
                command.upgrade(alembic_config(conn), "head")
                conn.commit()
                rows = conn.execute(
                    select(
                        studies.c.study_description,
                        studies.c.study_description_folded,
                        studies.c.study_description_words,
                    ).order_by(studies.c.pk)
                ).all()
                assert [
                    {"study_description_folded": r[1], "study_description_words": r[2]}
                    for r in rows
                ] == [description_columns(r[0]) for r in rows]
                assert [r[0] for r in rows] == descriptions
                command.downgrade(alembic_config(conn), "0016")
                conn.commit()
    finally:
        engine.dispose()
