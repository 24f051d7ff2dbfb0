"""Corrections and de-identification through the REST API (issue 15, part "changes"), on a real
served archive with its job runner, on SQLite and PostgreSQL, with DCMTK as the peer.

After a correction DCMTK's findscu finds the study under the new values and not the old, a file
retrieved with getscu shows them in dcmdump with its Pixel Data digest unchanged, and WADO-RS
metadata (what OHIF reads) shows them; undo brings every one back, byte for byte; a stale
``If-Match`` gets 412. A new Patient ID of another patient moves the study to them with the
counters right. Expired previous versions are purged. De-identification makes a new study (a
job) or streams a ZIP.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from sqlalchemy import func, select

from conftest import dcmtk, make_server, running_http, scratch_database, wait_until
from synth import make_instance
from vesalius.dicom.rewrite import check_encodable, rewrite_attributes
from vesalius.errors import InvalidDataError
from vesalius.index.audit_trail import AuditFilter, search
from vesalius.index.schema import instances
from vesalius.index.statistics_snapshot import load
from vesalius.services.audit_messages import validator
from vesalius.services.jobs import JobRunner

PATIENT = ("Before^Anna", "CORR-1")
OTHER = ("Other^Paul", "CORR-OTHER", "19550505", "M")


@dataclass
class Site:
    url: str
    running: Any
    folder: Path
    study: str  # CORR-1's study, 2 series x 2 instances
    moved: str  # a study of its own patient, moved and moved back
    wide: list[str]  # two studies of one patient (WIDE-1, ISO_IR 100)
    pixels: dict[str, str]  # SOP Instance UID -> SHA-256 of its Pixel Data

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/api/v1{path}", timeout=30, **kwargs)

    def finished(self, correction: int, state: str) -> dict[str, Any]:
        """Wait for correction ``correction`` to reach ``state``, and its job to end."""
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.api("GET", f"/corrections/{correction}").json())
            assert seen["state"] != "failed", seen
            return bool(seen["state"] == state and seen["job"]["state"] == "succeeded")

        wait_until(reached, what=f"correction {correction} {state}")
        return seen

    def find(self, **keys: str) -> list[str]:
        """Study Instance UIDs findscu finds with ``keys`` (Study Root, STUDY level)."""
        args = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
        if not all(value.isascii() for value in keys.values()):
            args += ["-k", "SpecificCharacterSet=ISO_IR 192"]
        for key, value in keys.items():
            args += ["-k", f"{key}={value}"]
        out = dcmtk("findscu", "-v", *args, *self.running.address)
        return [
            line.split("[")[1].split("]")[0].strip("\0 ")
            for line in out.stderr.splitlines()
            if "(0020,000d)" in line and "[" in line
        ]

    def retrieve(self, study: str, name: str) -> list[Path]:
        """The study's files as getscu retrieves them."""
        folder = self.folder / name
        folder.mkdir()
        dcmtk(
            "getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "-od", str(folder), *self.running.address,
        )  # fmt: skip
        return sorted(folder.iterdir())

    def metadata(self, study: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/dicom-web/studies/{study}/metadata", timeout=30)
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def pixel_digest(path: Path) -> str:
    return hashlib.sha256(dcmread(path).PixelData).hexdigest()


def dump(path: Path) -> str:
    return dcmtk(
        "dcmdump", "+P", "0010,0010", "+P", "0010,0020", "+P", "0008,1030", str(path)
    ).stdout


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp(f"changes-{request.param}")
    with scratch_database(request.param, folder) as url:
        running = make_server(folder / "data", url, **{"jobs.poll_interval": 0.05})
        runner = JobRunner(running.archive.jobs, poll_interval=0.05)
        runner.start()
        try:
            files, pixels = [], {}
            study, moved = generate_uid(), generate_uid()
            for s in range(2):
                series = generate_uid()
                for n in range(2):
                    path = folder / "in" / f"{s}-{n}.dcm"
                    ds = make_instance(
                        path,
                        # one series in each of the usual encodings
                        transfer_syntax=ImplicitVRLittleEndian if s else "1.2.840.10008.1.2.1",
                        StudyInstanceUID=study,
                        SeriesInstanceUID=series,
                        SeriesNumber=s + 1,
                        InstanceNumber=n + 1,
                        PatientName=PATIENT[0],
                        PatientID=PATIENT[1],
                        AccessionNumber="ACC-OLD",
                        StudyDescription="Before",
                        ReferencedStudySequence=[
                            {"ReferencedSOPClassUID": "1.2.3", "ReferencedSOPInstanceUID": "1.2.4"}
                        ],
                        pixel_data=bytes(range(s * 8 + n, s * 8 + n + 32)),
                    )
                    pixels[str(ds.SOPInstanceUID)] = hashlib.sha256(ds.PixelData).hexdigest()
                    files.append(path)
            for key, patient in ((moved, ("Mover^Max", "CORR-MOVE")), (generate_uid(), OTHER)):
                path = folder / "in" / f"{key}.dcm"
                make_instance(
                    path,
                    StudyInstanceUID=key,
                    PatientName=patient[0],
                    PatientID=patient[1],
                    PatientBirthDate=OTHER[2] if patient == OTHER else "19700101",
                    PatientSex=OTHER[3] if patient == OTHER else "O",
                )
                files.append(path)
            wide = [generate_uid(), generate_uid()]
            for key in wide:
                path = folder / "in" / f"{key}.dcm"
                make_instance(
                    path,
                    StudyInstanceUID=key,
                    PatientName="Wide^Wanda",
                    PatientID="WIDE-1",
                    PatientSex="O",
                    SpecificCharacterSet="ISO_IR 100",
                )
                files.append(path)
            dcmtk("storescu", *running.address, *map(str, files))
            with running_http(running.archive, running.settings) as base:
                yield Site(base, running, folder, study, moved, wide, pixels)
        finally:
            runner.stop()
            running.dimse.stop(grace=1)
            running.archive.close()


def test_correct_then_undo(site: Site) -> None:
    """The whole round: findscu, getscu + dcmdump, Pixel Data digests, WADO-RS metadata,
    412 for a stale If-Match, the audit trail's A.5 messages, and undo back to the bytes."""
    study = site.study
    before = site.api("GET", f"/studies/{study}")
    etag = before.headers["ETag"]
    stored = {row["sop_instance_uid"]: row for row in _instance_rows(site, study)}
    statistics = _statistics_ahead(site)  # every instance in the statistics snapshot
    taken = next(statistics)

    asked = site.api(
        "POST",
        f"/studies/{study}/corrections",
        json={"patient_name": "Après^Zoë", "accession_number": "ACC-NEW", "reason": "typo"},
        headers={"If-Match": etag},
    )
    assert asked.status_code == 202, asked.text
    correction = asked.json()
    assert correction["changes"]["patient_name"] == {"old": PATIENT[0], "new": "Après^Zoë"}
    assert correction["job"]["kind"] == "correction"
    done = site.finished(correction["id"], "applied")
    assert done["job"]["state"] == "succeeded" and done["job"]["done"] == 4
    assert next(statistics) != taken  # the files rewritten: the snapshot taken afresh

    # the old ETag is stale now: 412, and nothing changes
    stale = site.api(
        "POST",
        f"/studies/{study}/corrections",
        json={"study_description": "Stale"},
        headers={"If-Match": etag},
    )
    assert stale.status_code == 412, stale.text
    assert stale.headers["content-type"].startswith("application/problem+json")

    assert site.find(PatientName="Après^Zoë") == [study]
    assert site.find(PatientName=PATIENT[0]) == []
    assert site.find(AccessionNumber="ACC-NEW") == [study]
    retrieved = site.retrieve(study, "after")
    assert len(retrieved) == 4
    for path in retrieved:
        shown = dump(path)
        assert "Après^Zoë" in shown and PATIENT[0] not in shown
        ds = dcmread(path)
        assert ds.AccessionNumber == "ACC-NEW" and ds.SpecificCharacterSet == "ISO_IR 192"
        assert len(ds.ReferencedStudySequence) == 1  # the sequence before them kept
        assert pixel_digest(path) == site.pixels[str(ds.SOPInstanceUID)]
    for document in site.metadata(study):
        assert document["00100010"]["Value"] == [{"Alphabetic": "Après^Zoë"}]
        assert document["00080050"]["Value"] == ["ACC-NEW"]
    shown = site.api("GET", f"/studies/{study}").json()
    assert shown["patient"]["name"] == "Après^Zoë" and shown["accession_number"] == "ACC-NEW"
    assert _searched(site, "zoë après") == _searched(site, "acc-new") == [study]
    assert _searched(site, "anna") == _searched(site, "acc-old") == []  # the free text too

    listed = site.api("GET", f"/studies/{study}/corrections").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == correction["id"]

    undone = site.api("POST", f"/corrections/{correction['id']}/undo")
    assert undone.status_code == 202, undone.text
    site.finished(correction["id"], "undone")
    assert site.find(PatientName=PATIENT[0]) == [study]
    assert site.find(PatientName="Après^Zoë") == []
    assert _searched(site, "before anna") == _searched(site, "acc-old") == [study]
    assert _searched(site, "zoe") == _searched(site, "acc-new") == []
    for path in site.retrieve(study, "undone"):
        assert PATIENT[0] in dump(path)
    for document in site.metadata(study):
        assert document["00100010"]["Value"] == [{"Alphabetic": PATIENT[0]}]
    for uid, row in ((r["sop_instance_uid"], r) for r in _instance_rows(site, study)):
        assert row["sha256"] == stored[uid]["sha256"]  # the very files stored first
    again = site.api("POST", f"/corrections/{correction['id']}/undo")
    assert again.status_code == 409
    next(statistics)
    statistics.close()

    site.running.archive.audit.sink.flush()
    with site.running.catalog.read() as conn:
        records = [r for _, r in search(conn, AuditFilter(limit=0))]
    kinds = [r.kind for r in records]
    assert "study-corrected" in kinds and "study-correction-undone" in kinds
    assert "patient-record-updated" in kinds
    schema = validator()
    for record in records:
        if record.kind in ("study-corrected", "patient-record-updated"):
            message = etree.fromstring(record.xml.encode())
            assert schema.validate(message), record.xml
            assert message.find("EventIdentification").get("EventActionCode") == "U"
            assert PATIENT[1] in record.patients


def _statistics_ahead(site: Site) -> Iterator[Counter[str]]:
    """With the statistics' clock two minutes ahead (every instance stored so far inside the
    snapshot they take), check at each step that the bytes they report are the rows' sizes;
    yield the corrections the snapshot has seen per state. Closing puts the clock back."""
    stats = site.running.archive.statistics
    real = stats.clock
    stats.clock = lambda: real() + timedelta(minutes=2)
    try:
        while True:
            reported = site.api("GET", "/statistics").json()["bytes"]
            with site.running.catalog.read() as conn:
                sizes = conn.execute(select(func.sum(instances.c.size))).scalar_one()
                kept = load(conn)
            assert reported == sizes and kept is not None
            yield kept.corrections
    finally:
        stats.clock = real


def _searched(site: Site, text: str) -> list[str]:
    """The study list's answer to the free text ``text`` (study UIDs)."""
    page = site.api("GET", "/studies", params={"q": text}).json()
    assert page["total"] == len(page["items"])
    return [item["study_uid"] for item in page["items"]]


def test_a_patient_id_of_another_patient_moves_the_study(site: Site) -> None:
    """The study goes to the patient with that ID and takes their name, birth date and sex;
    the patient it left (no study left) is gone; a contradicting name is a 409; undo moves it
    back."""
    conflict = site.api(
        "POST",
        f"/studies/{site.moved}/corrections",
        json={"patient_id": OTHER[1], "patient_name": "Someone^Else"},
    )
    assert conflict.status_code == 409, conflict.text
    asked = site.api("POST", f"/studies/{site.moved}/corrections", json={"patient_id": OTHER[1]})
    assert asked.status_code == 202, asked.text
    done = site.finished(asked.json()["id"], "applied")
    assert done["changes"]["patient_name"] == {"old": "Mover^Max", "new": OTHER[0]}
    patient = site.api("GET", f"/patients/{OTHER[1]}").json()
    assert patient["study_count"] == 2
    assert site.api("GET", "/patients/CORR-MOVE").status_code == 404
    (path,) = site.retrieve(site.moved, "moved")
    ds = dcmread(path)
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == OTHER
    assert set(site.find(PatientID=OTHER[1])) == {site.moved} | set(site.find(PatientName=OTHER[0]))
    assert site.moved in _searched(site, "other paul") and _searched(site, "mover") == []

    site.api("POST", f"/corrections/{asked.json()['id']}/undo")
    site.finished(asked.json()["id"], "undone")
    assert site.api("GET", f"/patients/{OTHER[1]}").json()["study_count"] == 1
    assert site.api("GET", "/patients/CORR-MOVE").json()["name"] == "Mover^Max"
    assert site.find(PatientID="CORR-MOVE") == [site.moved]
    assert _searched(site, "mover max corr-move") == [site.moved]
    assert site.moved not in _searched(site, "other paul")


def test_the_patients_attributes_change_in_all_their_studies(site: Site) -> None:
    """Patient's Sex corrected through one study: the patient's row and the files of both
    their studies; a name the files' character set (ISO_IR 100) cannot hold is a 400."""
    one, other = site.wide
    refused = site.api("POST", f"/studies/{one}/corrections", json={"patient_name": "山田^太郎"})
    assert refused.status_code == 400 and "ISO_IR 100" in refused.json()["detail"]
    asked = site.api("POST", f"/studies/{one}/corrections", json={"patient_sex": "F"})
    assert asked.status_code == 202, asked.text
    done = site.finished(asked.json()["id"], "applied")
    assert done["job"]["total"] == 2
    assert site.api("GET", "/patients/WIDE-1").json()["sex"] == "F"
    for study in site.wide:
        (path,) = site.retrieve(study, f"wide-{study[-6:]}")
        assert dcmread(path).PatientSex == "F"
    assert site.api("GET", f"/studies/{other}").json()["patient"]["sex"] == "F"
    busy = site.api("POST", f"/corrections/{asked.json()['id']}/undo")
    assert busy.status_code == 202
    again = site.api("POST", f"/studies/{other}/corrections", json={"patient_sex": "M"})
    assert again.status_code in (202, 409)  # 409 while the undo runs (one at a time)
    site.finished(asked.json()["id"], "undone")
    if again.status_code == 202:
        site.finished(again.json()["id"], "applied")
        site.api("POST", f"/corrections/{again.json()['id']}/undo")
        site.finished(again.json()["id"], "undone")
    assert site.api("GET", "/patients/WIDE-1").json()["sex"] == "O"


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_the_rewrite_keeps_every_other_byte(tmp_path: Path, syntax: str) -> None:
    """dicom/rewrite.py: the values set (an absent one inserted in tag order, a character set
    added for UTF-8), the other elements and the pixel data as they were."""
    path = tmp_path / "in.dcm"
    make_instance(
        path,
        transfer_syntax=syntax,
        AccessionNumber=None,
        OtherPatientIDsSequence=[{"PatientID": "X"}],
        pixel_data=bytes(range(32)),
    )
    out = io.BytesIO()
    with open(path, "rb") as fh:
        done = rewrite_attributes(fh, out, {"PatientName": "Ørsted^Hans", "AccessionNumber": "A9"})
    assert done.specific_character_set == "ISO_IR 192"
    before, after = dcmread(path), dcmread(io.BytesIO(out.getvalue()))
    assert (str(after.PatientName), after.AccessionNumber) == ("Ørsted^Hans", "A9")
    assert after.PixelData == before.PixelData
    for element in before:
        if element.keyword not in ("PatientName", "PixelData"):
            assert after[element.tag] == element, element.keyword
    if syntax != DeflatedExplicitVRLittleEndian:
        tail = path.read_bytes()
        start = tail.index(b"\xe0\x7f\x10\x00")
        assert out.getvalue().endswith(tail[start:])  # from Pixel Data on: the same bytes
    with pytest.raises(InvalidDataError, match="ISO_IR 100"):
        check_encodable("PatientName", "山田", "ISO_IR 100")


def test_bad_corrections_are_refused(site: Site) -> None:
    study = site.study
    for body, status in (
        ({}, 400),  # nothing to change
        ({"patient_birth_date": "1990-02-30"}, 400),
        ({"patient_sex": "X"}, 400),
        ({"patient_id": ""}, 400),
        ({"accession_number": "A" * 17}, 422),
        ({"unknown": "x"}, 422),
        ({"patient_name": "\ud800"}, 422),  # a lone surrogate: not text
        ({"study_description": "ok", "reason": "a\x00b"}, 400),
    ):
        answer = site.api(
            "POST",
            f"/studies/{study}/corrections",
            content=json.dumps(body),  # ASCII: escapes what UTF-8 cannot carry
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == status, (body, answer.text)
    assert (
        site.api("POST", "/studies/1.2.3/corrections", json={"patient_sex": "F"}).status_code == 404
    )
    assert site.api("POST", "/studies/x/corrections", json={"patient_sex": "F"}).status_code == 400
    assert site.api("POST", "/corrections/999999/undo").status_code == 404


def test_expired_previous_versions_are_purged(site: Site) -> None:
    """Past corrections.keep_days the previous files go (the sweep), and undo is refused."""
    service = site.running.archive.corrections
    asked = site.api(
        "POST", f"/studies/{site.study}/corrections", json={"study_description": "Purged"}
    )
    correction = site.finished(asked.json()["id"], "applied")
    site.running.archive.deletion.sweep()  # what earlier tests' undos left to remove
    kept_before = _blob_count(site)
    service.keep_days = 0
    try:
        assert service.purge() == 1
    finally:
        service.keep_days = 30
    site.running.archive.deletion.sweep()
    assert _blob_count(site) == kept_before - 4  # the four previous versions
    assert site.api("GET", f"/corrections/{correction['id']}").json()["state"] == "expired"
    assert site.api("POST", f"/corrections/{correction['id']}/undo").status_code == 409
    assert site.find(StudyDescription="Purged") == [site.study]
    for description in ("purg", "PURGED", "pur*"):  # the list's description filter follows
        page = site.api("GET", "/studies", params={"description": description}).json()
        assert [item["study_uid"] for item in page["items"]] == [site.study], description


def test_anonymize_into_the_archive_and_as_a_zip(site: Site) -> None:
    answer = site.api(
        "POST", f"/studies/{site.study}/anonymize", json={"options": ["retain_device"]}
    )
    assert answer.status_code == 202, answer.text
    new = answer.json()["study_uid"]
    assert new != site.study
    job = answer.json()["job"]["id"]
    wait_until(
        lambda: (
            site.api("GET", f"/studies/{new}").status_code == 200
            and site.api("GET", f"/studies/{new}").json()["instance_count"] == 4
        ),
        what="the de-identified study",
    )
    assert job > 0
    shown = site.api("GET", f"/studies/{new}").json()
    assert shown["patient"]["patient_id"] != PATIENT[1]

    with httpx.stream(
        "GET", f"{site.url}/api/v1/studies/{site.study}/anonymized.zip", timeout=30
    ) as download:
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        body = download.read()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = archive.namelist()
        assert len(names) == 4 and all(n.endswith(".dcm") for n in names)
        ds = dcmread(io.BytesIO(archive.read(names[0])))
    assert ds.PatientID != PATIENT[1] and str(ds.PatientName) != PATIENT[0]
    assert ds.PatientIdentityRemoved == "YES"

    refused = site.api("GET", f"/studies/{site.study}/anonymized.zip", params={"options": "nope"})
    assert refused.status_code == 422
    assert site.api("GET", "/studies/1.2.3/anonymized.zip").status_code == 404
    kept_uids = site.api(
        "POST", f"/studies/{site.study}/anonymize", json={"options": ["retain_uids"]}
    )
    assert kept_uids.status_code == 400


def _instance_rows(site: Site, study: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from vesalius.index.schema import instances, series, studies

    with site.running.catalog.read() as conn:
        rows = conn.execute(
            select(instances.c.sop_instance_uid, instances.c.sha256)
            .select_from(instances.join(series).join(studies))
            .where(studies.c.study_uid == study)
        )
        return [dict(r._mapping) for r in rows]


def _blob_count(site: Site) -> int:
    return sum(1 for p in (site.running.data_dir / "storage").rglob("*") if p.is_file()
               and "staging" not in p.parts)  # fmt: skip
