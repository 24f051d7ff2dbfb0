"""The matching rules of PS3.4 C.2.2.2 as the query service applies them, on both backends.

These call :class:`QueryService` directly on an archive holding the corpus of
``find_support`` (ingested through the ingest service), so each rule is checked against SQLite
and PostgreSQL without the network; test_find*.py cover the same engine through DCMTK findscu.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import scratch_database
from find_support import (
    ALL_STUDIES,
    CHINESE,
    CT,
    EXPLICIT_VR_LE,
    JAPANESE,
    LATIN1,
    series_uid,
    sop_uid,
    study_uid,
    write_corpus,
)
from synth import MR_IMAGE_STORAGE
from vesalius.errors import CancelledError, DataSetMismatchError, QueryError
from vesalius.identity import Identity
from vesalius.index.matching import condition, like_pattern, time_value
from vesalius.index.schema import studies as studies_table
from vesalius.services.archive import Archive
from vesalius.services.query import Query, QueryService
from vesalius.settings import load_settings
from vesalius.wiring import assemble

WHO = Identity.system("test")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    folder = tmp_path_factory.mktemp(f"matching-{request.param}")
    with scratch_database(request.param, folder) as url:
        settings = load_settings(
            environ={},
            overrides={
                "data_dir": str(folder / "data"),
                "database_url": url,
                "storage.min_free_mb": 0,
            },
        )
        opened = assemble(settings).archive
        try:
            for path in write_corpus(folder / "corpus"):
                opened.ingest.ingest_copy(path, WHO)
            yield opened
        finally:
            opened.close()


def run(
    service: QueryService, level: Any, model: Any = "STUDY", **query: Any
) -> list[dict[str, Any]]:
    filters = query.pop("filters", {})
    return list(service.find(Query(level, model, filters, **query), WHO))


def studies(archive: Archive, **filters: Any) -> set[str]:
    return {r["StudyInstanceUID"] for r in run(archive.query, "STUDY", filters=filters)}


def patients(archive: Archive, service: QueryService | None = None, **filters: Any) -> set[str]:
    found = run(service or archive.query, "PATIENT", "PATIENT", filters=filters)
    return {r["PatientID"] for r in found}


# --- pure translation ---------------------------------------------------------------------


def test_like_pattern_escapes_sql_wildcards() -> None:
    assert like_pattern("a*b?c") == "a%b_c"
    assert like_pattern("50%_done\\") == "50\\%\\_done\\\\"


def test_time_bounds_cover_their_precision() -> None:
    assert time_value("10", "T") == "100000"
    assert time_value("1030", "T", upper=True) == "103059.999999"
    assert time_value("10", "T", upper=True) == "105959.999999"
    assert time_value("103000.5", "T", upper=True) == "103000.599999"
    assert time_value("10:30:15", "T") == "103015"
    with pytest.raises(QueryError):
        time_value("103", "T")


# --- single value, list of UIDs, universal --------------------------------------------------


def test_single_value_is_exact_and_case_sensitive(archive: Archive) -> None:
    assert studies(archive, AccessionNumber="ACC1") == {study_uid(1)}
    assert studies(archive, AccessionNumber="acc1") == set()
    assert studies(archive, StudyDescription="CT") == set()
    assert studies(archive, StudyInstanceUID=study_uid(3)) == {study_uid(3)}


def test_list_of_uids(archive: Archive) -> None:
    found = studies(archive, StudyInstanceUID=f"{study_uid(1)}\\{study_uid(3)}\\1.2.3")
    assert found == {study_uid(1), study_uid(3)}


def test_wild_cards_in_uids_are_refused(archive: Archive) -> None:
    with pytest.raises(QueryError):
        studies(archive, StudyInstanceUID=study_uid(1)[:-1] + "*")


def test_universal_matching_returns_values(archive: Archive) -> None:
    found = run(archive.query, "STUDY", filters={"StudyDate": "", "AccessionNumber": "*"})
    assert {r["StudyInstanceUID"] for r in found} == ALL_STUDIES
    by_uid = {r["StudyInstanceUID"]: r for r in found}
    assert by_uid[study_uid(1)]["StudyDate"] == "20240105"
    assert by_uid[study_uid(1)]["AccessionNumber"] == "ACC1"
    assert by_uid[study_uid(4)]["AccessionNumber"] == ""


# --- wild cards -------------------------------------------------------------------------------


def test_wild_cards(archive: Archive) -> None:
    assert studies(archive, StudyDescription="CT*") == {study_uid(1), study_uid(4)}
    assert studies(archive, StudyDescription="?T chest") == {study_uid(1)}
    assert studies(archive, StudyDescription="*brain") == {study_uid(3)}
    assert studies(archive, StudyDescription="*o*") == {study_uid(2), study_uid(5), study_uid(6)}


def test_sql_wildcard_characters_are_literal(archive: Archive) -> None:
    assert studies(archive, StudyDescription="*50%_done") == {study_uid(2)}
    assert studies(archive, StudyDescription="*50_%done") == set()
    # "_" and "%" in a stored ID: only "?" and "*" are wild cards
    assert patients(archive, PatientID="ID_1*") == {"ID_1%"}
    assert patients(archive, PatientID="ID?1%") == {"ID_1%"}
    assert patients(archive, PatientID="ID%") == set()


# --- dates and times --------------------------------------------------------------------------


def test_date_single_and_ranges(archive: Archive) -> None:
    assert studies(archive, StudyDate="20240105") == {study_uid(1)}
    assert studies(archive, StudyDate="2024.01.05") == {study_uid(1)}
    in_range = {study_uid(1), study_uid(2), study_uid(4)}
    assert studies(archive, StudyDate="20240105-20240110") == in_range
    assert studies(archive, StudyDate="20240111-") == {study_uid(n) for n in (5, 6, 7, 8)}
    assert studies(archive, StudyDate="-20231231") == {study_uid(3)}
    assert studies(archive, StudyDate="20231231\\20240113") == {study_uid(n) for n in (3, 7, 8)}


@pytest.mark.parametrize("bad", ["2024", "20241", "-", "20240101-2024", "yesterday"])
def test_malformed_dates_are_refused(archive: Archive, bad: str) -> None:
    with pytest.raises(QueryError):
        studies(archive, StudyDate=bad)


def test_time_ranges_use_normalised_times(archive: Archive) -> None:
    # ST2 was stored as 083000, ST4 as "0900" (normalised 090000)
    assert studies(archive, StudyTime="0800-0900") == {study_uid(2), study_uid(4)}
    assert studies(archive, StudyTime="-0859") == {study_uid(2)}
    assert studies(archive, StudyTime="235959") == {study_uid(3)}
    assert studies(archive, StudyTime="2359-") == {study_uid(3)}
    assert studies(archive, StudyTime="0900") == {study_uid(4)}


def test_combined_date_time_range(archive: Archive) -> None:
    """PS3.4 C.2.2.2.5.1: from 5 January 10:00 to 7 January 09:00 as one range."""
    keys = {"StudyDate": "20240105-20240107", "StudyTime": "1000-0900"}
    separate = run(archive.query, "STUDY", filters=keys)
    assert separate == []  # the time range 10:00-09:00 alone matches nothing
    combined = run(archive.query, "STUDY", filters=keys, combined_datetime=True)
    assert {r["StudyInstanceUID"] for r in combined} == {study_uid(1), study_uid(2)}
    later = {"StudyDate": "20240105-20240107", "StudyTime": "1016-0900"}
    combined = run(archive.query, "STUDY", filters=later, combined_datetime=True)
    assert {r["StudyInstanceUID"] for r in combined} == {study_uid(2)}
    open_ended = {"StudyDate": "20240107-", "StudyTime": "0831-"}
    combined = run(archive.query, "STUDY", filters=open_ended, combined_datetime=True)
    assert {r["StudyInstanceUID"] for r in combined} == {study_uid(n) for n in (4, 5, 6, 7, 8)}


# --- person names -----------------------------------------------------------------------------


def test_person_names_case_insensitive_by_default(archive: Archive) -> None:
    assert patients(archive, PatientName="doe^john") == {"DOE-1"}
    assert patients(archive, PatientName="DOE*") == {"DOE-1"}
    assert patients(archive, PatientName="Doe^John^^") == {"DOE-1"}
    assert studies(archive, ReferringPhysicianName="WELBY^MARCUS") == {study_uid(1), study_uid(2)}
    assert patients(archive, PatientName="bUc^jÉrÔme") == {"BUC-4"}


def test_person_names_case_sensitive_when_configured(archive: Archive) -> None:
    strict = QueryService(
        archive.query.catalog,
        oversight=archive.oversight,
        ae_title="X",
        case_insensitive_pn=False,
    )
    assert patients(archive, strict, PatientName="doe^john") == set()
    assert patients(archive, strict, PatientName="Doe^John") == {"DOE-1"}
    assert patients(archive, strict, PatientName="D*") == {"DOE-1"}
    welby = run(strict, "STUDY", filters={"ReferringPhysicianName": "welby*"})
    assert {r["StudyInstanceUID"] for r in welby} == {study_uid(2)}


def test_person_name_groups(archive: Archive) -> None:
    """A value without "=" matches the alphabetic group of a stored multi-group name."""
    assert patients(archive, PatientName="Yamada^Tarou") == {"YAMADA-3"}
    assert patients(archive, PatientName="*Tarou") == {"YAMADA-3"}
    assert patients(archive, PatientName=JAPANESE) == {"YAMADA-3"}
    assert patients(archive, PatientName="Yamada^Tarou=山田^太郎") == {"YAMADA-3"}
    assert patients(archive, PatientName="=山田^太郎") == {"YAMADA-3"}
    assert patients(archive, PatientName="*=山田*") == {"YAMADA-3"}
    assert patients(archive, PatientName="Wang^XiaoDong") == {"WANG-5"}
    assert patients(archive, PatientName=CHINESE) == {"WANG-5"}
    assert patients(archive, PatientName=LATIN1) == {"BUC-4"}
    assert patients(archive, PatientName="Yamada") == set()


def test_fuzzy_person_names(archive: Archive) -> None:
    fuzzy = run(archive.query, "PATIENT", "PATIENT", filters={"PatientName": "jan"}, fuzzy=True)
    assert {r["PatientID"] for r in fuzzy} == {"SMITH-2"}
    fuzzy = run(archive.query, "PATIENT", "PATIENT", filters={"PatientName": "山"}, fuzzy=True)
    assert {r["PatientID"] for r in fuzzy} == {"YAMADA-3"}
    exact = run(archive.query, "PATIENT", "PATIENT", filters={"PatientName": "jan"})
    assert exact == []


# --- multiple values, lists through child tables ----------------------------------------------


def test_modalities_in_study_match_through_series(archive: Archive) -> None:
    assert studies(archive, ModalitiesInStudy="MR") == {study_uid(1), study_uid(3)}
    either = studies(archive, ModalitiesInStudy="CT\\MR")
    assert either == ALL_STUDIES - {study_uid(2)}
    assert studies(archive, ModalitiesInStudy="O?") == {study_uid(2)}
    found = run(
        archive.query,
        "STUDY",
        filters={"StudyInstanceUID": study_uid(1), "ModalitiesInStudy": "MR"},
    )
    assert found[0]["ModalitiesInStudy"] == ["CT", "MR"]


def test_sop_classes_in_study(archive: Archive) -> None:
    assert studies(archive, SOPClassesInStudy=MR_IMAGE_STORAGE) == {study_uid(1), study_uid(3)}
    found = run(
        archive.query, "STUDY", filters={"StudyInstanceUID": study_uid(1), "SOPClassesInStudy": ""}
    )
    assert sorted(found[0]["SOPClassesInStudy"]) == sorted([CT, MR_IMAGE_STORAGE])


def test_integers(archive: Archive) -> None:
    found = run(
        archive.query, "SERIES", filters={"StudyInstanceUID": study_uid(1), "SeriesNumber": "2"}
    )
    assert [r["SeriesInstanceUID"] for r in found] == [series_uid(2)]
    found = run(
        archive.query,
        "IMAGE",
        filters={
            "StudyInstanceUID": study_uid(1),
            "SeriesInstanceUID": series_uid(1),
            "InstanceNumber": "1\\3",
        },
    )
    assert [r["SOPInstanceUID"] for r in found] == [sop_uid(1, 1), sop_uid(1, 3)]
    with pytest.raises(QueryError):
        studies(archive, NumberOfStudyRelatedInstances="many")


# --- sequences --------------------------------------------------------------------------------


def test_sequence_matching(archive: Archive) -> None:
    found = run(
        archive.query,
        "SERIES",
        relational=True,
        filters={"RequestAttributesSequence": {"RequestedProcedureID": "RP1*"}},
    )
    assert [r["SeriesInstanceUID"] for r in found] == [series_uid(1)]
    assert found[0]["RequestAttributesSequence"] == [{"RequestedProcedureID": "RP100"}]
    everything = run(
        archive.query,
        "SERIES",
        filters={"StudyInstanceUID": study_uid(1), "RequestAttributesSequence": {}},
    )
    by_uid = {r["SeriesInstanceUID"]: r["RequestAttributesSequence"] for r in everything}
    assert by_uid == {
        series_uid(1): [{"RequestedProcedureID": "RP100", "ScheduledProcedureStepID": "SPS100"}],
        series_uid(2): [],
    }
    asked = {"ScheduledProcedureStepID": "", "RequestedProcedureDescription": ""}
    query = Query(
        "SERIES", filters={"StudyInstanceUID": study_uid(3), "RequestAttributesSequence": asked}
    )
    result = archive.query.find(query, WHO)
    assert result.unsupported == {"RequestAttributesSequence.RequestedProcedureDescription"}
    assert [r["RequestAttributesSequence"] for r in result] == [[]]


# --- levels, counters, return keys -----------------------------------------------------------


def test_counters_at_every_level(archive: Archive) -> None:
    keys = {
        "NumberOfPatientRelatedStudies": "",
        "NumberOfPatientRelatedSeries": "",
        "NumberOfPatientRelatedInstances": "",
        "PatientID": "DOE-1",
    }
    (patient,) = run(archive.query, "PATIENT", "PATIENT", filters=keys)
    assert (
        patient["NumberOfPatientRelatedStudies"],
        patient["NumberOfPatientRelatedSeries"],
        patient["NumberOfPatientRelatedInstances"],
    ) == (2, 3, 5)
    keys = {
        "StudyInstanceUID": study_uid(1),
        "NumberOfStudyRelatedSeries": "",
        "NumberOfStudyRelatedInstances": "",
    }
    (study,) = run(archive.query, "STUDY", filters=keys)
    assert (study["NumberOfStudyRelatedSeries"], study["NumberOfStudyRelatedInstances"]) == (2, 4)
    keys = {"StudyInstanceUID": study_uid(1), "NumberOfSeriesRelatedInstances": ""}
    found = run(archive.query, "SERIES", filters=keys)
    assert [r["NumberOfSeriesRelatedInstances"] for r in found] == [3, 1]


def test_supported_keys_by_level(archive: Archive) -> None:
    study = archive.query.supported_keys("STUDY")
    assert {"PatientName", "StudyDate", "ModalitiesInStudy", "SOPClassesInStudy"} <= set(study)
    assert "Modality" not in study
    series = archive.query.supported_keys("SERIES")
    assert {"Modality", "RequestAttributesSequence", "StudyInstanceUID"} <= set(series)
    assert "AvailableTransferSyntaxUID" in archive.query.supported_keys("IMAGE")


def test_image_level_returns_stored_values(archive: Archive) -> None:
    keys = {
        "StudyInstanceUID": study_uid(1),
        "SeriesInstanceUID": series_uid(1),
        "AvailableTransferSyntaxUID": "",
        "Rows": "",
        "SOPClassUID": "",
        "ContentTime": "",
        "PatientName": "",
        "StudyDate": "",
    }
    found = run(archive.query, "IMAGE", "PATIENT", filters={**keys, "PatientID": "DOE-1"})
    assert [r["SOPInstanceUID"] for r in found] == [sop_uid(1, n) for n in (1, 2, 3)]
    first = found[0]
    assert first["AvailableTransferSyntaxUID"] == EXPLICIT_VR_LE
    assert first["Rows"] == 4
    assert first["SOPClassUID"] == CT
    assert first["ContentTime"] == "101601"
    assert first["PatientName"] == "Doe^John"
    assert first["StudyDate"] == "20240105"
    assert first["QueryRetrieveLevel"] == "IMAGE"
    assert first["RetrieveAETitle"] == "VESALIUS"
    assert first["InstanceAvailability"] == "ONLINE"


def test_unique_keys_always_returned(archive: Archive) -> None:
    found = run(
        archive.query,
        "SERIES",
        "PATIENT",
        filters={"PatientID": "SMITH-2", "StudyInstanceUID": study_uid(3)},
    )
    assert [(r["PatientID"], r["StudyInstanceUID"], r["SeriesInstanceUID"]) for r in found] == [
        ("SMITH-2", study_uid(3), series_uid(4))
    ]
    study_root = run(archive.query, "SERIES", filters={"StudyInstanceUID": study_uid(3)})
    assert "PatientID" not in study_root[0]


def test_unsupported_keys_are_reported_and_empty(archive: Archive) -> None:
    query = Query(
        "STUDY",
        filters={
            "StudyInstanceUID": study_uid(1),
            "PatientAge": "",
            "Modality": "CT",
            "00091010": "",
        },
    )
    result = archive.query.find(query, WHO)
    assert result.unsupported == {"PatientAge", "Modality", "00091010"}
    (record,) = list(result)
    assert record["PatientAge"] is None
    assert record["Modality"] is None


# --- the information model -------------------------------------------------------------------


def test_hierarchical_queries_need_unique_keys_above(archive: Archive) -> None:
    with pytest.raises(DataSetMismatchError):
        run(archive.query, "SERIES", filters={"Modality": "CT"})
    with pytest.raises(DataSetMismatchError):
        run(archive.query, "SERIES", filters={"StudyInstanceUID": study_uid(1) + "\\1.2"})
    with pytest.raises(DataSetMismatchError):
        run(archive.query, "STUDY", "PATIENT", filters={"PatientID": "DOE*"})
    with pytest.raises(DataSetMismatchError):
        run(archive.query, "IMAGE", filters={"StudyInstanceUID": study_uid(1)})
    with pytest.raises(DataSetMismatchError):
        run(archive.query, "PATIENT", "STUDY")
    found = run(archive.query, "SERIES", filters={"Modality": "MR"}, relational=True)
    assert {r["SeriesInstanceUID"] for r in found} == {series_uid(2), series_uid(4)}


def test_higher_level_keys_restrict(archive: Archive) -> None:
    found = run(
        archive.query, "SERIES", filters={"StudyInstanceUID": study_uid(1), "PatientName": "Smith*"}
    )
    assert found == []
    found = run(
        archive.query,
        "IMAGE",
        relational=True,
        filters={"PatientName": "Smith^Jane", "StudyDate": "20231231"},
    )
    assert {r["SOPInstanceUID"] for r in found} == {sop_uid(4, 1), sop_uid(4, 2)}


def test_paging_is_stable(archive: Archive) -> None:
    everything = [r["StudyInstanceUID"] for r in run(archive.query, "STUDY")]
    assert len(everything) == len(ALL_STUDIES)
    first = [r["StudyInstanceUID"] for r in run(archive.query, "STUDY", limit=3)]
    rest = [r["StudyInstanceUID"] for r in run(archive.query, "STUDY", limit=10, offset=3)]
    assert first + rest == everything


def test_max_results_caps_and_tells(archive: Archive) -> None:
    capped = QueryService(
        archive.query.catalog, oversight=archive.oversight, ae_title="X", max_results=3
    )
    result = capped.find(Query("STUDY"), WHO)
    assert len(list(result)) == 3
    assert result.truncated
    result = capped.find(Query("STUDY", filters={"StudyInstanceUID": study_uid(1)}), WHO)
    assert len(list(result)) == 1
    assert not result.truncated


def test_cancel_between_rows(archive: Archive) -> None:
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3  # before the query, then before rows 1 and 2; not before row 3

    result = archive.query.find(Query("STUDY"), WHO, cancelled=cancelled)
    seen = []
    with pytest.raises(CancelledError):
        for record in result:
            seen.append(record)
    assert len(seen) == 2
    assert result.count == 2


def test_wild_cards_do_not_apply_to_dates() -> None:
    """PS3.4 C.2.2.2.4 excludes DA: "2024*" is refused (0xC000), not silently universal."""
    with pytest.raises(QueryError):
        condition("date", studies_table.c.study_date, "2024*")
    assert condition("date", studies_table.c.study_date, "*") is None
