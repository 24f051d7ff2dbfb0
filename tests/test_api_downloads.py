"""Downloads (issue 15): a study or a selection as a streamed ZIP and as DICOM media, on a real
served archive (SQLite and PostgreSQL). Every file unpacked is compared byte for byte with the
stored blob; the DICOMDIR is read back by DCMTK (dcmdump, dciodvfy, and compared with the one
dcmgpdir builds from the unpacked files) and by pydicom's FileSet; bad parameters are 4xx; a
study hidden by an access label is not downloadable; each download is audited."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from lxml import etree
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import RunningServer, make_server, running_http, scratch_database, wait_until
from synth import make_instance
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import RetrieveKeys, find_instances
from vesalius.services.audit_messages import AuditSource, render, validator
from vesalius.services.events import Event
from vesalius.services.labels import AccessCache
from vesalius.services.names import NameSpace, folder_name
from vesalius.services.site_policy import CallerRules, SitePolicy
from vesalius.services.zipstream import ZipStream
from vesalius.settings import PEER_PERMISSIONS

ADMIN = Identity("user", "root", "localhost", roles=frozenset({"admin"}), method="local")
EVERYTHING = frozenset(PEER_PERMISSIONS)
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
#: The keys of the records above an instance (PS3.3 F.5.2, F.5.3).
KEYS = {
    "STUDY": ("StudyDate", "StudyTime", "AccessionNumber", "StudyDescription", "StudyID"),
    "SERIES": ("Modality", "SeriesInstanceUID", "SeriesNumber"),
}


@dataclass
class Site:
    running: RunningServer
    url: str
    studies: dict[str, str]
    series: dict[str, list[str]]
    events: list[Event] = field(default_factory=list)

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(self.url + "/api/v1" + path, params=params, timeout=60)  # type: ignore[arg-type]

    def stored(
        self, study_uids: tuple[str, ...] = (), series_uids: tuple[str, ...] = ()
    ) -> dict[str, bytes]:
        """SOP Instance UID -> the stored file's bytes, as the blob store has them."""
        found = []
        with self.running.catalog.read() as conn:
            if study_uids:
                found += find_instances(conn, RetrieveKeys("STUDY", study_uids=study_uids))
            if series_uids:
                found += find_instances(conn, RetrieveKeys("SERIES", series_uids=series_uids))
        out = {}
        for instance in found:
            with self.running.stores.get(instance.blob_store).open(instance.blob_key) as fh:
                out[instance.sop_instance_uid] = fh.read()
        return out


def _report(path: Path, **attrs: object) -> None:
    """A Basic Text SR (a SR DOCUMENT record, PS3.3 F.5.24) with a concept modifier."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = BASIC_TEXT_SR
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 9, 1
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = "20240102", "080000"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    modifier = Dataset()
    modifier.RelationshipType, modifier.ValueType = "HAS CONCEPT MOD", "CODE"
    modifier.ConceptNameCodeSequence = [_code("121049", "DCM", "Language of Content Item")]
    modifier.ConceptCodeSequence = [_code("en", "RFC5646", "English")]
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    finding.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    finding.TextValue = "No acute findings."
    ds.ContentSequence = [modifier, finding]
    ds.save_as(path, enforce_file_format=True)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _store(running: RunningServer, folder: Path, n: int, **attrs: Any) -> None:
    path = folder / f"{generate_uid()}.dcm"
    if attrs.pop("report", False):
        _report(path, **attrs)
    else:
        attrs.setdefault("rows", 8)
        attrs.setdefault("columns", 8)
        make_instance(path, InstanceNumber=n, **attrs)
    staged = running.archive.ingest.staging_path()
    shutil.copyfile(path, staged)
    running.archive.ingest.ingest_staged(staged, ADMIN)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """One archive per backend: patient P1 with studies A (two series, one with a hostile
    description and a non-ASCII patient name) and C, patient P2 with study B, labeled HIDDEN
    (granted to no one: the anonymous radiologist of this site cannot see it)."""
    folder = tmp_path_factory.mktemp(f"downloads-{request.param}")
    with scratch_database(request.param, folder) as url:
        other_node = Catalog.open(url)
        policy = SitePolicy(
            AccessCache(other_node, ttl=0),
            CallerRules(unknown_permissions=EVERYTHING),
            anonymous_roles=frozenset({"radiologist"}),
        )
        running = make_server(
            folder / "data", url, policy=policy, **{"auth.anonymous_roles": "radiologist"}
        )
        studies = {key: generate_uid() for key in "ABCDE"}
        series = {
            "A": [generate_uid(), generate_uid()],
            "B": [generate_uid()],
            "C": [generate_uid()],
        }
        try:
            patient = {
                "PatientID": "P1",
                "PatientName": "Müller^Jürgen",
                "SpecificCharacterSet": "ISO_IR 100",
            }
            for n in (1, 2, 3):
                _store(
                    running,
                    folder,
                    n,
                    StudyInstanceUID=studies["A"],
                    SeriesInstanceUID=series["A"][0],
                    SeriesDescription="Axial",
                    AccessionNumber="ACC1",
                    **patient,
                )
            for n in (1, 2):
                _store(
                    running,
                    folder,
                    n,
                    StudyInstanceUID=studies["A"],
                    SeriesInstanceUID=series["A"][1],
                    SeriesNumber=2,
                    SeriesDescription="../../etc/passwd\x01:*",
                    AccessionNumber="ACC1",
                    **patient,
                )
            _store(
                running,
                folder,
                1,
                StudyInstanceUID=studies["C"],
                SeriesInstanceUID=series["C"][0],
                StudyDate="20230505",
                StudyDescription="Prior",
                Modality="MR",
                **patient,
            )
            _store(
                running,
                folder,
                1,
                report=True,
                StudyInstanceUID=studies["C"],
                SeriesInstanceUID=generate_uid(),
                StudyDate="20230505",
                StudyDescription="Prior",
                **patient,
            )
            _store(
                running,
                folder,
                1,
                StudyInstanceUID=studies["B"],
                SeriesInstanceUID=series["B"][0],
                PatientID="P2",
                PatientName="Hidden^Person",
            )
            running.archive.labels.add(studies["B"], ["HIDDEN"], ADMIN)
            for n in (1, 2):
                _store(running, folder, n, StudyInstanceUID=studies["E"], PatientID="P4")
            rng = np.random.default_rng(15)
            for n in range(24):  # 24 MiB of noise: more than the sockets buffer
                pixels = rng.integers(0, 4096, 724 * 724, dtype=np.uint16).tobytes()
                _store(
                    running,
                    folder,
                    n,
                    rows=724,
                    columns=724,
                    pixel_data=pixels,
                    StudyInstanceUID=studies["D"],
                    PatientID="P3",
                )
            with running_http(running.archive, running.settings) as base:
                site = Site(running, base, studies, series)
                running.archive.oversight.events.subscribe(site.events.append)
                assert running.archive.downloads is not None
                running.archive.downloads.page = 2  # many pages: the keyset paging runs
                yield site
        finally:
            running.dimse.stop(grace=1)
            running.archive.close()
            other_node.close()


def _unzip(answer: httpx.Response) -> zipfile.ZipFile:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"].startswith("attachment; filename=")
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.testzip() is None
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        parts = info.filename.split("/")
        assert all(p and ".." not in p and p == p.strip(" .") for p in parts), info.filename
        assert not any(ord(c) < 32 or c in '\\:*?"<>|' for c in info.filename), info.filename
    return archive


def _by_uid(archive: zipfile.ZipFile) -> dict[str, bytes]:
    out = {}
    for info in archive.infolist():
        if info.filename.endswith("DICOMDIR"):
            continue
        data = archive.read(info)
        out[str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    return out


def test_study_zip_holds_every_stored_file_byte_for_byte(site: Site, tmp_path: Path) -> None:
    answer = site.get(f"/studies/{site.studies['A']}/download")
    archive = _unzip(answer)
    assert _by_uid(archive) == site.stored((site.studies["A"],))
    names = sorted(archive.namelist())
    assert all(n.startswith("Müller Jürgen (P1)/2024-01-01 Synthetic study (ACC1)/") for n in names)
    folders = sorted({n.split("/")[2] for n in names})
    assert folders == ["001 CT Axial", "002 CT ____etc_passwd __"], folders
    assert names[0].endswith("/IM00001.dcm")
    # Info-ZIP reads it too
    (tmp_path / "a.zip").write_bytes(answer.content)
    tested = subprocess.run(
        ["unzip", "-t", str(tmp_path / "a.zip")], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    exported = [
        e
        for e in site.events
        if e.kind == "study-exported" and site.studies["A"] in e.details["study_uids"]
    ]
    assert exported and exported[-1].outcome == "success"
    assert exported[-1].details["instances"] == 5 and exported[-1].details["patient_ids"] == ["P1"]
    message = render(exported[-1], AuditSource("VESALIUS@test", "VESALIUS", "localhost"))
    assert message is not None
    assert validator().validate(etree.fromstring(message))  # an Export (PS3.15 A.5.3.8)
    assert b'csd-code="110106"' in message


def test_selection_of_studies_and_series(site: Site) -> None:
    answer = site.get("/download", study=site.studies["C"], series=site.series["A"][1])
    archive = _unzip(answer)
    expected = site.stored((site.studies["C"],), (site.series["A"][1],))
    assert len(expected) == 4
    assert _by_uid(archive) == expected
    # one patient folder holds both studies
    assert {n.split("/")[0] for n in archive.namelist()} == {"Müller Jürgen (P1)"}


def test_media_file_set_is_read_back_by_dcmtk_and_pydicom(site: Site, tmp_path: Path) -> None:
    answer = site.get("/download", study=[site.studies["A"], site.studies["C"]], format="media")
    archive = _unzip(answer)
    names = archive.namelist()
    assert names[-1] == "DICOMDIR"
    for name in names[:-1]:
        parts = name.split("/")
        assert len(parts) <= 8 and all(p.isalnum() and p.isupper() and len(p) <= 8 for p in parts)
    stored = site.stored((site.studies["A"], site.studies["C"]))
    assert _by_uid(archive) == stored
    root = tmp_path / "media"
    archive.extractall(root)
    dicomdir = root / "DICOMDIR"

    dumped = subprocess.run(["dcmdump", "-q", str(dicomdir)], capture_output=True, text=True)
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout.count("(0004,1430) CS [IMAGE]") == 6
    assert dumped.stdout.count("(0004,1430) CS [SR DOCUMENT]") == 1
    assert "Language of Content Item" in dumped.stdout  # the concept modifier, not the text
    assert "No acute findings" not in dumped.stdout
    assert dumped.stdout.count("(0004,1430) CS [PATIENT]") == 1
    assert dumped.stdout.count("(0004,1430) CS [STUDY]") == 2
    verified = subprocess.run(["dciodvfy", str(dicomdir)], capture_output=True, text=True)
    errors = [line for line in verified.stderr.splitlines() if line.startswith("Error")]
    assert errors == [], verified.stderr

    # dcmgpdir builds the reference DICOMDIR from the unpacked files: the same records
    reference = root / "REFDIR"
    made = subprocess.run(
        ["dcmgpdir", "-q", "+r", "+id", str(root), "+D", str(reference), "DICOM"],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    ours = FileSet(dcmread(dicomdir))
    theirs = FileSet(dcmread(reference))

    def records(fs: FileSet) -> set[tuple[str, ...]]:
        return {
            (i.PatientID, i.StudyInstanceUID, i.SeriesInstanceUID, i.SOPInstanceUID, i.path)
            for i in fs
        }

    assert len(records(ours)) == 7
    assert records(ours) == records(theirs)

    def keys(fs: FileSet) -> dict[str, tuple[str, ...]]:
        """Each instance's record type and the keys of its records up the tree."""
        found = {}
        for i in fs:
            study, series = i.node.parent.parent._record, i.node.parent._record
            found[i.SOPInstanceUID] = (
                i.node.record_type,
                str(i.node.parent.parent.parent._record.PatientName),
                *(str(study.get(k, "")) for k in KEYS["STUDY"]),
                *(str(series.get(k, "")) for k in KEYS["SERIES"]),
                str(i.node._record.get("InstanceNumber", "")),
            )
        return found

    assert keys(ours) == keys(theirs)
    assert {i.SOPInstanceUID for i in ours} == set(stored)
    for instance in ours:
        assert Path(instance.path).read_bytes() == stored[instance.SOPInstanceUID]
    patient = ours.find(PatientID="P1")[0]
    assert str(patient.PatientName) == "Müller^Jürgen"


def test_a_download_the_client_leaves_is_audited_as_incomplete(site: Site) -> None:
    study = site.studies["D"]
    url = f"{site.url}/api/v1/studies/{study}/download"
    with httpx.stream("GET", url, timeout=60) as answer:
        assert answer.status_code == 200
        next(answer.iter_raw(1 << 16))  # the first bytes, then the client goes away

    def ended() -> list[Event]:
        return [
            e
            for e in site.events
            if e.kind == "study-exported" and e.details["study_uids"] == [study]
        ]

    wait_until(lambda: bool(ended()), what="the download's audit record")
    record = ended()[-1]
    assert record.outcome == "incomplete"
    assert record.details["instances"] < 24


def test_a_stored_file_missing_cuts_the_download_short(site: Site) -> None:
    """Once the answer has begun, a failure can only end it early: the client gets no whole
    ZIP, and the download is audited as a failure with the reason."""
    study = site.studies["E"]
    with site.running.catalog.read() as conn:
        gone = find_instances(conn, RetrieveKeys("STUDY", study_uids=(study,)))[-1]
    site.running.stores.get(gone.blob_store).delete(gone.blob_key)
    with pytest.raises(httpx.RemoteProtocolError):
        site.get(f"/studies/{study}/download")
    records = [
        e for e in site.events if e.kind == "study-exported" and e.details["study_uids"] == [study]
    ]
    assert records and records[-1].outcome == "failure"
    assert gone.sop_instance_uid in records[-1].details["reason"]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/download", {}, 400),
        ("/download", {"study": "not-a-uid"}, 400),
        ("/download", {"series": "1.2.3", "format": "tar"}, 422),
        ("/download", {"study": "1.2.3.4.5.6.7"}, 404),
        ("/studies/1.2.3.4.5.6.7/download", {}, 404),
        ("/studies/1..2/download", {}, 400),
        ("/studies/1.2.3/download", {"format": "rar"}, 422),
    ],
)
def test_bad_parameters_are_4xx(site: Site, path: str, params: dict[str, str], status: int) -> None:
    answer = site.get(path, **params)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_hidden_study_is_not_downloadable(site: Site) -> None:
    hidden = site.studies["B"]
    for answer in (
        site.get(f"/studies/{hidden}/download"),
        site.get("/download", study=hidden, format="media"),
        site.get("/download", series=site.series["B"][0]),
    ):
        assert answer.status_code == 404, answer.text
    # with a visible one, the hidden one is simply absent
    archive = _unzip(site.get("/download", study=[hidden, site.studies["C"]]))
    assert set(_by_uid(archive)) == set(site.stored((site.studies["C"],)))


def _zipped(stream: ZipStream, files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    for name, data in files.items():
        for chunk in stream.entry(name, [data[:3], data[3:]], len(data)):
            out.write(chunk)
    for chunk in stream.finish():
        out.write(chunk)
    return out.getvalue()


@pytest.mark.parametrize("limit", [0xFFFFFFFF, 10])
def test_zip_stream_classic_and_zip64(limit: int, tmp_path: Path) -> None:
    """ZIP64 sizes, offsets and end records (a lowered limit makes every field pass it)."""
    files = {f"d/é{i}.dcm": bytes(range(256)) * i for i in range(6)}
    data = _zipped(ZipStream(zip64_limit=limit), files)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert {i.filename: archive.read(i) for i in archive.infolist()} == files
    assert (b"PK\x06\x06" in data) == (limit == 10)  # the ZIP64 end record
    (tmp_path / "z.zip").write_bytes(data)
    tested = subprocess.run(["unzip", "-t", str(tmp_path / "z.zip")], capture_output=True)
    assert tested.returncode == 0, tested.stdout


def test_zip_stream_of_more_entries_than_a_classic_zip_counts() -> None:
    files = {f"{i}": b"" for i in range(0x10000 + 5)}
    archive = zipfile.ZipFile(io.BytesIO(_zipped(ZipStream(), files)))
    assert len(archive.infolist()) == len(files)


def test_zip_stream_refuses_empty_and_absolute_names() -> None:
    stream = ZipStream()
    for name in ("", "/etc/passwd"):
        with pytest.raises(ValueError):
            list(stream.entry(name, [b"x"]))


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("../..", "___"),
        ("/etc/passwd", "_etc_passwd"),
        ('a\\b:c*d?e"f<g>h|i', "a_b_c_d_e_f_g_h_i"),
        ("  .hidden.  ", "hidden"),
        ("line\nbreak\x00nul\u202eRTL", "line break nul RTL"),
        ("CON", "Series CON"),
        ("nul.txt", "Series nul.txt"),
        ("", "Series"),
        ("x" * 200, "x" * 64),
    ],
)
def test_folder_names_are_safe(label: str, expected: str) -> None:
    assert folder_name(label, "Series") == expected


def test_sibling_names_are_unique_ignoring_case() -> None:
    space = NameSpace()
    assert [space.claim(n) for n in ("CT", "ct", "CT", "MR")] == ["CT", "ct (2)", "CT (3)", "MR"]
