"""``vesalius anonymize`` and the anonymize service against a real archive (SQLite and
PostgreSQL): a synthetic study imported, de-identified into a new study that C-FIND finds,
exported to a folder and a zip with no new dciodvfy errors, the pseudonym map read back by an
administrator only, burned-in instances flagged and left out, and safe private attributes kept
with ``--retain-safe-private`` only."""

from __future__ import annotations

import re
import stat
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import RunningServer, config_for, dcmtk, make_server, run_cli
from synth import make_instance
from test_deid import dciodvfy_errors, private_dataset
from vesalius.dicom.deid import Options, remap_uid
from vesalius.errors import ForbiddenError, NotFoundError, OutOfResourcesError, QueryError
from vesalius.identity import Identity
from vesalius.index.lookup import RetrieveKeys, find_instances
from vesalius.services.anonymize import SiteSecret
from vesalius.services.audit import Auditor, MemorySink
from vesalius.services.policy import ARCHIVE, ROLE_ACTIONS, Action, Resource

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ADMIN = Identity("user", "admin", "localhost", roles=frozenset({"admin"}))
RESEARCHER = Identity("user", "rita", "localhost", roles=frozenset({"researcher"}))


vesalius = run_cli


def synthetic_study(folder: Path) -> tuple[str, list[Path]]:
    """Two CT series and one ultrasound instance (burned-in text likely) of one patient."""
    study = "1.2.826.0.1.3680043.8.498.77"
    common = {
        "StudyInstanceUID": study,
        "PatientName": "Doe^Jane",
        "PatientID": "MRN-4711",
        "PatientBirthDate": "19610203",
        "StudyDate": "20240131",
        "StudyDescription": "Chest for Doe",
        "InstitutionName": "St. Elsewhere",
        "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.78",
    }
    paths = []
    for series in (1, 2):
        series_uid = f"1.2.826.0.1.3680043.8.498.77.{series}"
        for number in (1, 2):
            path = folder / f"ct{series}{number}.dcm"
            make_instance(
                path,
                SeriesInstanceUID=series_uid,
                SeriesNumber=series,
                InstanceNumber=number,
                **common,
            )
            paths.append(path)
    us = folder / "us.dcm"
    make_instance(us, sop_class_uid=US_IMAGE, Modality="US", **common)
    paths.append(us)
    return study, paths


def test_cli_anonymizes_into_the_archive_and_exports(server: RunningServer, tmp_path: Path) -> None:
    study, paths = synthetic_study(tmp_path / "in")
    config = config_for(server, tmp_path)
    imported = vesalius("import", "-c", str(config), str(tmp_path / "in"))
    assert imported.returncode == 0, imported.stderr

    run = vesalius("anonymize", "-c", str(config), study, "--modify-dates")
    assert run.returncode == 0, run.stderr
    new_study = run.stdout.strip()
    assert new_study.startswith("2.25.") and new_study != study
    assert "review:" in run.stderr and "left out" in run.stderr  # the ultrasound
    secret = server.settings.data_dir / "anonymize.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    # The new study is in the archive, found by C-FIND, without the patient's identity.
    found = dcmtk(
        "findscu",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={new_study}",
        "-k",
        "PatientID",
        "-k",
        "PatientName",
        "-k",
        "StudyDate",
        "-k",
        "NumberOfStudyRelatedInstances",
        *server.address,
    )
    answer = found.stdout + found.stderr
    assert new_study in answer and "MRN-4711" not in answer and "Doe" not in answer
    assert "20240131" not in answer  # the date moved
    assert "[4 ]" in answer  # four CT instances; the ultrasound left out for review

    # The same call again gives the same study (the UIDs are keyed, not random).
    again = vesalius("anonymize", "-c", str(config), study, "--modify-dates")
    assert again.stdout.strip() == new_study and "stored before" not in again.stderr
    # Other options make the same UIDs: the archive keeps what it has, and says so.
    other = vesalius("anonymize", "-c", str(config), study, "--retain-dates")
    assert (
        other.stdout.strip() == new_study
        and "4 instance(s) of this study were stored before" in other.stderr
    )

    # Exported to a folder: generated names, no new dciodvfy errors, no identity left.
    out = tmp_path / "out"
    export = vesalius(
        "anonymize", "-c", str(config), study, "--output", str(out), "--include-burned-in"
    )
    assert export.returncode == 0, export.stderr
    written = sorted(out.rglob("*.dcm"))
    names = [p.relative_to(out).as_posix() for p in written]
    assert all(re.fullmatch(r"S00[1-3]/I0000[12]\.dcm", name) for name in names)
    assert sorted(Counter(p.parent.name for p in written).values()) == [1, 2, 2]
    for path in written:
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID == new_study
        assert "Doe" not in str(ds) and "MRN-4711" not in str(ds) and "Elsewhere" not in str(ds)
    key = SiteSecret(secret).value()
    originals = {remap_uid(key, str(dcmread(p).SOPInstanceUID)): p for p in paths}
    for path in written:
        original = originals[str(dcmread(path).SOPInstanceUID)]
        assert dciodvfy_errors(path) - dciodvfy_errors(original) == set()

    # The pseudonym map, read back by an administrator.
    pseudonym = str(dcmread(written[0]).PatientID)
    back = vesalius("anonymize", "-c", str(config), "--reidentify", pseudonym)
    assert back.returncode == 0, back.stderr
    assert "MRN-4711" in back.stdout and study in back.stdout and new_study in back.stdout

    # Mistakes get one clear line, not a traceback.
    missing = vesalius("anonymize", "-c", str(config), "1.2.3.999")
    assert missing.returncode != 0 and "no study 1.2.3.999" in missing.stderr
    assert "Traceback" not in missing.stderr
    both = vesalius("anonymize", "-c", str(config), study, "--retain-dates", "--modify-dates")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    again_out = vesalius("anonymize", "-c", str(config), study, "--output", str(out))
    assert again_out.returncode != 0 and "File exists" in again_out.stderr
    assert "Traceback" not in again_out.stderr

    # A zip export, written member by member.
    archive_file = tmp_path / "study.zip"
    zipped = vesalius("anonymize", "-c", str(config), study, "--zip", str(archive_file))
    assert zipped.returncode == 0, zipped.stderr
    with zipfile.ZipFile(archive_file) as members:
        assert sorted(members.namelist())[0] == "S001/I00001.dcm"
        assert len(members.namelist()) == 4


def test_cli_retains_safe_private_attributes_when_asked(
    server: RunningServer, tmp_path: Path
) -> None:
    source = tmp_path / "in" / "ct.dcm"
    source.parent.mkdir()
    ds = make_instance(source, PatientID="MRN-4712", PatientName="Roe^Rick")
    for elem in private_dataset():
        if elem.tag.is_private:
            ds.add(elem)
    ds.save_as(source, enforce_file_format=True)
    config = config_for(server, tmp_path)
    imported = vesalius("import", "-c", str(config), str(source.parent))
    assert imported.returncode == 0, imported.stderr

    plain, safe = tmp_path / "plain", tmp_path / "safe"
    run = vesalius("anonymize", "-c", str(config), ds.StudyInstanceUID, "--output", str(plain))
    assert run.returncode == 0, run.stderr
    run = vesalius(
        "anonymize", "-c", str(config), ds.StudyInstanceUID, "--output", str(safe),
        "--retain-safe-private",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    without = dcmread(next(plain.rglob("*.dcm")))
    assert not [e for e in without if e.tag.is_private]
    out = next(safe.rglob("*.dcm"))
    kept = dcmread(out)
    assert {int(e.tag) for e in kept if e.tag.is_private} == {
        0x00190030, 0x00193023, 0x00193024,
        0x20010045, 0x20014503, 0x2001455F,
        0x00990012, 0x00991202,
    }  # fmt: skip
    assert "113111" in {i.CodeValue for i in kept.DeidentificationMethodCodeSequence}
    assert "Roe" not in str(kept) and "MRN-4712" not in str(kept)
    assert dciodvfy_errors(out) - dciodvfy_errors(source) == set()


class RolePolicy:
    """The policy of roles the accounts work brings (ROLE_ACTIONS), enough to test who may."""

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        if not any(action in ROLE_ACTIONS.get(role, ()) for role in who.roles):
            raise ForbiddenError(f"{who} may not {action}")

    def visible_labels(self, who: Identity) -> frozenset[str] | None:
        return None


@pytest.fixture
def guarded(tmp_path: Path, database_url: str) -> RunningServer:
    sink = MemorySink()
    running = make_server(
        tmp_path / "data", database_url, policy=RolePolicy(), auditor=Auditor([sink])
    )
    running.sink = sink  # type: ignore[attr-defined]
    yield running  # type: ignore[misc]
    running.dimse.stop(grace=2)
    running.archive.close()


def test_service_export_is_audited_and_reidentification_is_for_admins(
    guarded: RunningServer, tmp_path: Path
) -> None:
    study, paths = synthetic_study(tmp_path / "in")
    for path in paths:
        guarded.archive.ingest.ingest_copy(path, ADMIN)
    service = guarded.archive.anonymize
    assert service is not None
    # A researcher may export de-identified data, but not store a new study nor re-identify.
    result = service.anonymize(study, RESEARCHER, Options(), output=tmp_path / "out")
    assert result.written == 4 and result.excluded == 1
    assert next(f.reason for f in result.flagged).startswith("Burned In Annotation absent")
    with pytest.raises(ForbiddenError):
        service.anonymize(study, RESEARCHER)  # into the archive: ingest checks "store"
    with pytest.raises(ForbiddenError):
        service.reidentify(result.pseudonym, RESEARCHER)
    with pytest.raises(ForbiddenError):
        service.anonymize(study, Identity("user", "r", roles=frozenset({"radiologist"})))
    with pytest.raises(QueryError):
        service.anonymize(study, ADMIN, Options(retain_uids=True))

    with pytest.raises(NotFoundError):
        service.anonymize("1.2.3.999", ADMIN, output=tmp_path / "none")
    (tmp_path / "taken.zip").write_bytes(b"")
    with pytest.raises(OutOfResourcesError):
        service.anonymize(study, ADMIN, zip_file=tmp_path / "taken.zip")
    failures = [e for e in guarded.sink.events if e.outcome == "failure"]  # type: ignore[attr-defined]
    assert {e.details.get("reason", "")[:20] for e in failures} >= {
        "no study 1.2.3.999 i",
        "user:r may not expor",
    }

    rows = service.reidentify(result.pseudonym, ADMIN)
    assert next((r.patient_id, r.patient_name, r.study_uid) for r in rows) == (
        "MRN-4711",
        "Doe^Jane",
        study,
    )
    assert service.reidentify(result.new_study_uid, ADMIN)[0].created_by == str(RESEARCHER)

    events = {e.kind: e for e in guarded.sink.events}  # type: ignore[attr-defined]
    exported = next(
        e
        for e in guarded.sink.events  # type: ignore[attr-defined]
        if e.kind == "study-exported" and e.outcome == "success"
    )
    assert exported.details["study_uid"] == study
    assert exported.details["new_study_uid"] == result.new_study_uid
    assert exported.details["patient_id"] == "MRN-4711"
    assert exported.details["instances"] == 4
    assert events["study-reidentified"].who == ADMIN
    assert events["study-anonymized"].outcome == "failure"  # the researcher's refused store

    # Into the archive by an administrator, with the burned-in instance included (flagged).
    into = service.anonymize(study, ADMIN, Options(), include_burned_in=True)
    assert into.written == 5 and into.flagged[0].included
    with guarded.catalog.read() as conn:
        stored = find_instances(conn, RetrieveKeys("STUDY", study_uids=(into.new_study_uid,)))
    assert len(stored) == 5 and {i.patient_id for i in stored} == {into.pseudonym}
