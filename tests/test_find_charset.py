"""Specific Character Set in C-FIND (PS3.4 C.2.2.2, C.4.1.1.3.2) with DCMTK findscu.

pydicom's character set test files (real-world encodings: Latin-1, Cyrillic, UTF-8, GB18030,
ISO 2022 with Japanese and Korean) are stored with storescu; queries are written as Part 10
query files in a given character set. Matching happens in Unicode; each response comes back in
the query's character set when it can hold the values, else in UTF-8 (ISO_IR 192).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset

from conftest import RunningServer, make_server, scratch_database
from find_support import FindOutcome, findscu, query_file, store

FILES = (
    "chrFren.dcm",
    "chrGerm.dcm",
    "chrRuss.dcm",
    "chrX1.dcm",
    "chrX2.dcm",
    "chrH31.dcm",
    "chrH32.dcm",
    "chrI2.dcm",
    "chrGreek.dcm",
)
IR87 = ["", "ISO 2022 IR 87"]


def charset_file(name: str) -> Path:
    return next(Path(f) for f in get_charset_files() if f.endswith(name))


#: Cyrillic mixed with Latin look-alikes, as in pydicom's file: read, not retyped.
RUSSIAN = str(dcmread(charset_file("chrRuss.dcm"), force=True).PatientName)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def charset_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp(f"charset-{request.param}")
    files = sorted(Path(f) for f in get_charset_files() if Path(f).name in FILES)
    assert len(files) == len(FILES)
    with scratch_database(request.param, folder) as url:
        running = make_server(folder / "data", url)
        try:
            store(running, files)
            yield running
        finally:
            running.dimse.stop(grace=2)
            running.archive.close()


def find_patients(server: RunningServer, tmp_path: Path, **keys: Any) -> FindOutcome:
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": None, **keys}
    path = query_file(tmp_path / "query.dcm", **keys)
    outcome = findscu(server, tmp_path, model="-P", query_file=path)
    assert outcome.final == 0x0000, outcome.output[-2000:]
    return outcome


def by_id(outcome: FindOutcome) -> dict[str, Dataset]:
    return {str(r.PatientID): r for r in outcome.responses}


def charset_of(response: Dataset) -> list[str]:
    value = response.get("SpecificCharacterSet")
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def raw_name(response: Dataset) -> bytes:
    """The Patient's Name bytes as findscu received them (read again, undecoded)."""
    return bytes(dcmread(response.filename, force=True).get_item(0x00100010).value)


def test_latin1_query_and_response(charset_server: RunningServer, tmp_path: Path) -> None:
    outcome = find_patients(
        charset_server, tmp_path, SpecificCharacterSet="ISO_IR 100", PatientName="Buc^Jérô*"
    )
    (response,) = outcome.responses
    assert charset_of(response) == ["ISO_IR 100"]
    assert str(response.PatientName) == "Buc^Jérôme"
    assert raw_name(response).rstrip() == "Buc^Jérôme".encode("latin-1")


def test_case_insensitive_beyond_ascii(charset_server: RunningServer, tmp_path: Path) -> None:
    outcome = find_patients(
        charset_server, tmp_path, SpecificCharacterSet="ISO_IR 100", PatientName="äneas^rü*"
    )
    assert [str(r.PatientName).strip() for r in outcome.responses] == ["Äneas^Rüdiger"]
    outcome = find_patients(
        charset_server, tmp_path, SpecificCharacterSet="ISO_IR 192", PatientName=RUSSIAN.lower()
    )
    assert [str(r.PatientName) for r in outcome.responses] == [RUSSIAN]


def test_response_falls_back_to_utf8(charset_server: RunningServer, tmp_path: Path) -> None:
    """A Latin-1 query matching names Latin-1 cannot hold: those responses are UTF-8."""
    outcome = find_patients(
        charset_server, tmp_path, SpecificCharacterSet="ISO_IR 100", PatientName=None
    )
    found = by_id(outcome)
    assert len(found) == len(FILES)
    assert charset_of(found["SCSFREN"]) == ["ISO_IR 100"]
    assert charset_of(found["SCSGERM"]) == ["ISO_IR 100"]
    for patient in ("SCSRUSS", "X1EXAMPLE", "X2EXAMPLE", "H31EXAMPLE", "I2EXAMPLE", "SCSGREEK"):
        assert charset_of(found[patient]) == ["ISO_IR 192"], patient
    assert str(found["X1EXAMPLE"].PatientName) == "Wang^XiaoDong=王^小東"
    assert str(found["X2EXAMPLE"].PatientName) == "Wang^XiaoDong=王^小东"
    assert str(found["I2EXAMPLE"].PatientName) == "Hong^Gildong=洪^吉洞=홍^길동"
    assert raw_name(found["SCSRUSS"]).rstrip() == RUSSIAN.encode()


def test_default_repertoire_query(charset_server: RunningServer, tmp_path: Path) -> None:
    """No Specific Character Set in the query: ASCII answers carry none, others are UTF-8."""
    outcome = find_patients(charset_server, tmp_path, PatientName="Hong^Gildong")
    (response,) = outcome.responses
    assert charset_of(response) == ["ISO_IR 192"]
    assert str(response.PatientName) == "Hong^Gildong=洪^吉洞=홍^길동"
    outcome = find_patients(charset_server, tmp_path, PatientID="SCSFREN", PatientBirthDate=None)
    (response,) = outcome.responses
    assert charset_of(response) == []


def test_utf8_query(charset_server: RunningServer, tmp_path: Path) -> None:
    outcome = find_patients(
        charset_server,
        tmp_path,
        SpecificCharacterSet="ISO_IR 192",
        PatientName="Wang^XiaoDong=王^小東",
    )
    (response,) = outcome.responses
    assert response.PatientID == "X1EXAMPLE"
    assert charset_of(response) == ["ISO_IR 192"]
    outcome = find_patients(
        charset_server, tmp_path, SpecificCharacterSet="ISO_IR 192", PatientName="*=王*"
    )
    assert set(by_id(outcome)) == {"X1EXAMPLE", "X2EXAMPLE"}


def test_iso2022_japanese_query(charset_server: RunningServer, tmp_path: Path) -> None:
    outcome = find_patients(
        charset_server,
        tmp_path,
        SpecificCharacterSet=IR87,
        PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
    )
    (response,) = outcome.responses
    assert response.PatientID == "H31EXAMPLE"
    assert charset_of(response) == IR87
    assert str(response.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert b"\x1b$B" in raw_name(response)  # JIS X 0208 by its escape sequence

    # by the ideographic group: H31 answers in the query's set; H32's alphabetic group is
    # half-width katakana (ISO 2022 IR 13), which IR 87 cannot hold, so it answers in UTF-8
    outcome = find_patients(
        charset_server, tmp_path, SpecificCharacterSet=IR87, PatientName="=山田^太郎"
    )
    found = by_id(outcome)
    assert set(found) == {"H31EXAMPLE", "H32EXAMPLE"}
    assert charset_of(found["H31EXAMPLE"]) == IR87
    assert charset_of(found["H32EXAMPLE"]) == ["ISO_IR 192"]
    assert str(found["H32EXAMPLE"].PatientName) == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"


def test_iso2022_katakana_and_kanji(charset_server: RunningServer, tmp_path: Path) -> None:
    both = ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    outcome = find_patients(
        charset_server, tmp_path, SpecificCharacterSet=both, PatientName="ﾔﾏﾀﾞ^ﾀﾛｳ"
    )
    (response,) = outcome.responses
    assert response.PatientID == "H32EXAMPLE"
    assert charset_of(response) == both
    assert str(response.PatientName) == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
    stored = dcmread(charset_file("chrH32.dcm"), force=True)
    assert raw_name(response).rstrip() == bytes(stored.get_item(0x00100010).value).rstrip()


def test_case_sensitive_names_when_configured(tmp_path: Path, database_url: str) -> None:
    running = make_server(tmp_path / "data", database_url, **{"query.case_insensitive_pn": False})
    try:
        store(running, [charset_file("chrFren.dcm")])
        lower = find_patients(
            running, tmp_path, SpecificCharacterSet="ISO_IR 100", PatientName="buc^jérôme"
        )
        assert lower.responses == []
        exact = find_patients(
            running, tmp_path, SpecificCharacterSet="ISO_IR 100", PatientName="Buc^Jérôme"
        )
        assert [r.PatientID for r in exact.responses] == ["SCSFREN"]
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()
