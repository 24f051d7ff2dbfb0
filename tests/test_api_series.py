"""The REST API's instances and uploads against a real served archive (SQLite and PostgreSQL):
files, a folder's files and zips uploaded, refused ones named with their reason, bad requests
answered 4xx with nothing half-stored; a series' instances paged by cursor; one instance's
tags as DICOM JSON (PS3.18 F.2) with sequences, private tags and BulkDataURIs that DICOMweb
answers."""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from conftest import WebServer, make_server, running_http, scratch_database
from synth import make_instance

API = "/api/v1"
PRIVATE_CREATOR = "VESALIUS TEST"
MIB = 1 << 20


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    """One archive serving HTTP per backend for the module (uploads of at most 2 MiB)."""
    folder = tmp_path_factory.mktemp(f"series-{request.param}")
    with scratch_database(request.param, folder) as url:
        server = make_server(folder / "data", url, **{"http.max_upload_mb": 2})
        try:
            with running_http(server.archive, server.settings) as base:
                yield WebServer(server, base)
        finally:
            server.dimse.stop(grace=2)
            server.archive.close()


def dicom_file(folder: Path, name: str, **attrs: Any) -> Path:
    """A synthetic CT instance with a private block (a short and a bulk value) and a sequence."""
    path = folder / name
    ds = make_instance(path, **attrs)
    block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", "private words")
    block.add_new(0x02, "OB", bytes(range(256)) * 8)  # 2 KiB: bulk data
    ds.ReferencedImageSequence = pydicom.Sequence([pydicom.Dataset()])
    item = ds.ReferencedImageSequence[0]
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def instance_count(web: WebServer) -> int:
    answer = httpx.get(f"{web.dicomweb}/instances", params={"limit": "1000"})
    return 0 if answer.status_code == 204 else len(answer.json())


def nothing_left(web: WebServer) -> None:
    assert web.dimse.staging_files() == []


# ------------------------------------------------------------------------------ uploads


def test_upload_files_and_a_zip_then_browse(web: WebServer, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    common = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    loose = [dicom_file(tmp_path, f"{n}.dcm", InstanceNumber=n, **common) for n in (3, 1)]
    members = {
        f"scan/{n}.dcm": dicom_file(tmp_path, f"z{n}.dcm", InstanceNumber=n, **common).read_bytes()
        for n in (2, 4, 5)
    }
    members["scan/README.txt"] = b"hello"
    members["DICOMDIR"] = b"\0" * 200
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in loose]
    files.append(("files", ("images.zip", zipped(members), "application/zip")))
    files.append(("files", ("notes.txt", b"not an image", "text/plain")))
    before = instance_count(web)

    answer = httpx.post(f"{web.url}{API}/uploads", files=files, data={"comment": "ignored"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert sorted(s["name"] for s in result["stored"]) == [
        "1.dcm",
        "3.dcm",
        "images.zip/scan/2.dcm",
        "images.zip/scan/4.dcm",
        "images.zip/scan/5.dcm",
    ]
    assert {s["outcome"] for s in result["stored"]} == {"created"}
    refused = {r["name"]: r["reason"] for r in result["refused"]}
    assert refused.keys() == {"images.zip/scan/README.txt", "images.zip/DICOMDIR", "notes.txt"}
    assert refused["notes.txt"] == "not DICOM"
    assert refused["images.zip/DICOMDIR"].startswith("DICOMDIR")
    assert result["study_uids"] == [study]
    assert instance_count(web) == before + 5
    nothing_left(web)

    # the same file again: kept, as stored (application/dicom body, named by ?name=)
    again = httpx.post(
        f"{web.url}{API}/uploads",
        params={"name": "again.dcm"},
        content=loose[0].read_bytes(),
        headers={"Content-Type": "application/dicom"},
    )
    assert again.status_code == 200
    assert (
        again.json()["stored"][0] | {"name": "again.dcm", "outcome": "kept"}
        == (again.json()["stored"][0])
    )

    # the series' instances, two at a time, in Instance Number order
    path = f"{web.url}{API}/studies/{study}/series/{series}/instances"
    numbers: list[int] = []
    cursor = None
    while True:
        page = httpx.get(path, params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["total"] == 5
        numbers += [item["number"] for item in body["items"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert numbers == [1, 2, 3, 4, 5]
    first = httpx.get(path, params={"limit": 1}).json()["items"][0]
    assert first["rows"] == 4 and first["frames"] is None and first["size"] > 0

    # one instance, with its ETag
    one = httpx.get(f"{path}/{first['sop_instance_uid']}")
    assert one.status_code == 200 and one.json() == first
    unchanged = httpx.get(
        f"{path}/{first['sop_instance_uid']}", headers={"If-None-Match": one.headers["ETag"]}
    )
    assert unchanged.status_code == 304

    # all its tags as DICOM JSON
    tags = httpx.get(f"{path}/{first['sop_instance_uid']}/tags")
    assert tags.status_code == 200, tags.text
    data = tags.json()
    assert data["00080018"] == {"vr": "UI", "Value": [first["sop_instance_uid"]]}
    assert data["00100010"]["Value"] == [{"Alphabetic": "Synthetic^Patient"}]
    assert data["00090010"] == {"vr": "LO", "Value": [PRIVATE_CREATOR]}
    assert data["00091001"] == {"vr": "LO", "Value": ["private words"]}
    sequence = data["00081140"]
    assert sequence["vr"] == "SQ" and sequence["Value"][0]["00081150"]["vr"] == "UI"
    bulk = data["00091002"]["BulkDataURI"]
    assert bulk.startswith(f"{web.dicomweb}/studies/{study}/series/{series}/instances/")
    value = httpx.get(bulk, headers={"Accept": "application/octet-stream"})
    assert value.status_code == 200 and value.content == bytes(range(256)) * 8
    pixels = httpx.get(
        data["7FE00010"]["BulkDataURI"], headers={"Accept": "application/octet-stream"}
    )
    assert pixels.status_code == 200 and len(pixels.content) == 4 * 4 * 2
    assert "00020010" not in data  # File Meta is not part of the data set
    again_tags = httpx.get(tags.url, headers={"If-None-Match": tags.headers["ETag"]})
    assert again_tags.status_code == 304


def test_a_large_file_and_a_coded_body(web: WebServer, tmp_path: Path) -> None:
    """A file of several flushes, in a form and gzip-coded: stored bit for bit."""
    pixels = random.Random(15).randbytes(768 * 1024 * 2)  # 1.5 MiB that gzip cannot shrink
    path = tmp_path / "large.dcm"
    ds = make_instance(path, rows=768, columns=1024, pixel_data=pixels)
    data = path.read_bytes()
    url = f"{web.url}{API}/uploads"
    form = httpx.post(url, files=[("f", ("large.dcm", data, "application/octet-stream"))])
    assert form.status_code == 200, form.text
    coded = httpx.post(
        url,
        content=gzip.compress(data),
        headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    )
    assert coded.status_code == 200, coded.text
    assert [form.json()["stored"][0]["outcome"], coded.json()["stored"][0]["outcome"]] == [
        "created",
        "kept",
    ]
    wado = httpx.get(
        f"{web.url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID,
            "contentType": "application/dicom",
        },
    )
    assert wado.status_code == 200 and wado.content == data
    bomb = httpx.post(
        url,
        content=gzip.compress(b"\0" * (MIB + MIB // 2)),
        headers={"Content-Type": "application/dicom", "Content-Encoding": "gzip"},
    )
    assert bomb.status_code == 413 and "decompression bomb" in bomb.json()["detail"]
    nothing_left(web)


def test_tags_of_real_world_encodings(web: WebServer) -> None:
    """pydicom's test files (big endian, deflated, JPEG 2000, a waveform with bulk data in a
    sequence), zipped: every one stored and its tags read back from the file."""
    names = ("CT_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm")
    names += ("JPEG2000.dcm", "waveform_ecg.dcm")
    body = zipped({name: Path(str(get_testdata_file(name))).read_bytes() for name in names})
    answer = httpx.post(
        f"{web.url}{API}/uploads", content=body, headers={"Content-Type": "application/zip"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["refused"] == [] and len(answer.json()["stored"]) == len(names)
    for item in answer.json()["stored"]:
        base = f"{web.url}{API}/studies/{item['study_uid']}/series/{item['series_uid']}"
        tags = httpx.get(f"{base}/instances/{item['sop_instance_uid']}/tags")
        assert tags.status_code == 200, (item["name"], tags.text)
        assert tags.json()["00080018"]["Value"] == [item["sop_instance_uid"]]
        if item["name"].endswith("waveform_ecg.dcm"):  # WaveformData in WaveformSequence
            uri = tags.json()["54000100"]["Value"][0]["54001010"]["BulkDataURI"]
            assert uri.endswith("/bulkdata/54000100/0/54001010")
            value = httpx.get(uri, headers={"Accept": "application/octet-stream"})
            assert value.status_code == 200 and len(value.content) > 1024
    # the big endian MR's SOP Instance UID again, encoded otherwise: refused, the first kept
    other = Path(str(get_testdata_file("MR_small_implicit.dcm"))).read_bytes()
    again = httpx.post(
        f"{web.url}{API}/uploads", content=other, headers={"Content-Type": "application/dicom"}
    )
    assert again.status_code == 409
    assert "stored with other content" in again.json()["refused"][0]["reason"]
    nothing_left(web)


def test_bad_uploads_store_nothing(web: WebServer, tmp_path: Path) -> None:
    before = instance_count(web)
    good = dicom_file(tmp_path, "good.dcm").read_bytes()
    url = f"{web.url}{API}/uploads"

    def post(body: bytes, content_type: str, **headers: str) -> httpx.Response:
        return httpx.post(url, content=body, headers={"Content-Type": content_type, **headers})

    def problem(answer: httpx.Response, status: int, words: str) -> None:
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert words in answer.json()["detail"]

    problem(post(good, "image/png"), 415, "not supported")
    problem(httpx.post(url, content=good), 415, "no Content-Type")
    problem(post(b"", "application/dicom"), 400, "empty")
    problem(post(good, "multipart/form-data"), 400, "boundary")
    form = (
        b'--B\r\nContent-Disposition: form-data; name="f"; filename="a.dcm"\r\n\r\n'
        + good
        + b'\r\n--B\r\nContent-Disposition: form-data; name="f"; filename="b.dcm"\r\n\r\n'
        + good[:100]
    )
    problem(post(form, "multipart/form-data; boundary=B"), 400, "truncated")
    problem(
        post(
            b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\nv\r\n--B--\r\n',
            "multipart/form-data; boundary=B",
        ),
        400,
        "no files",
    )
    too_large = post(b"\0" * (3 * MIB), "application/dicom")  # the HTTP server refuses it
    assert too_large.status_code == 413 and "limit" in too_large.text
    bomb = zipped({"big.dcm": b"\0" * (5 * MIB)})
    gz_like = post(bomb, "application/zip")
    assert gz_like.status_code == 409
    assert "zip refused" in gz_like.json()["refused"][0]["reason"]

    # every file refused: 409 with the reasons
    not_dicom = post(b"hello", "application/dicom")
    assert not_dicom.status_code == 409
    assert not_dicom.json()["refused"] == [{"name": "upload.dcm", "reason": "not DICOM"}]
    garbage_zip = post(b"PK\x03\x04" + b"\0" * 200, "application/zip")
    assert garbage_zip.status_code == 409
    assert garbage_zip.json()["refused"][0]["reason"].startswith("not a readable zip")

    # a zip with a corrupt member stores none of its members
    members = {f"{n}.dcm": dicom_file(tmp_path, f"c{n}.dcm").read_bytes() for n in range(3)}
    raw = bytearray(zipped(members))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        last = archive.infolist()[-1]
    start = last.header_offset + 30 + len(last.filename)
    raw[start + 10] ^= 0xFF  # inside its compressed data
    corrupt = post(bytes(raw), "application/zip", **{"X-Ignored": "1"})
    assert corrupt.status_code == 409, corrupt.text
    assert corrupt.json()["refused"][0]["reason"].startswith("zip refused: member upload.zip/2.dcm")
    assert instance_count(web) == before
    nothing_left(web)


def test_bad_paths_and_parameters(web: WebServer) -> None:
    base = f"{web.url}{API}/studies"
    known = generate_uid()

    def status(path: str, **params: Any) -> int:
        answer = httpx.get(base + path, params=params)
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["detail"]
        return answer.status_code

    assert status("/1.2.x/series/1.2/instances") == 400
    assert status(f"/{known}/series/{known}/instances") == 404
    assert status(f"/{known}/series/{known}/instances/{known}") == 404
    assert status(f"/{known}/series/{known}/instances/{known}/tags") == 404
    assert status(f"/{known}/series/{known}/instances/not-a-uid/tags") == 400
    assert status(f"/{known}/series/{known}/instances", limit=0) == 422
    assert status(f"/{known}/series/{known}/instances", cursor="!!") == 400
    assert status(f"/{known}/series/{known}/instances", cursor="eyJhZnRlciI6MX0") == 400


def test_roles_decide_who_uploads_and_reads(tmp_path: Path) -> None:
    """With authentication on, a radiologist may read tags but not upload (403 before the body
    is read); a technologist may upload."""
    from vesalius.commands import operator

    running = make_server(
        tmp_path / "data", f"sqlite:///{tmp_path / 'index.sqlite'}", **{"auth.required": "true"}
    )
    try:
        accounts = running.archive.accounts
        for name, role in (("reader", "radiologist"), ("tech", "technologist")):
            accounts.add_user(name, "correct horse battery", frozenset({role}), operator())
        reader, tech = (
            {"Authorization": f"Bearer {accounts.create_token(n, operator())[1]}"}
            for n in ("reader", "tech")
        )
        path = dicom_file(tmp_path, "one.dcm")
        body = path.read_bytes()
        typed = {"Content-Type": "application/dicom"}
        with running_http(running.archive, running.settings) as base:
            url = f"{base}{API}/uploads"
            assert httpx.post(url, content=body, headers=typed).status_code == 401
            refused = httpx.post(url, content=body, headers={**typed, **reader})
            assert refused.status_code == 403
            assert refused.headers["content-type"] == "application/problem+json"
            done = httpx.post(url, content=body, headers={**typed, **tech})
            assert done.status_code == 200, done.text
            item = done.json()["stored"][0]
            ds = pydicom.dcmread(path)
            tags = httpx.get(
                f"{base}{API}/studies/{item['study_uid']}/series/{ds.SeriesInstanceUID}"
                f"/instances/{item['sop_instance_uid']}/tags",
                headers=reader,
            )
            assert tags.status_code == 200 and "00091001" in tags.json()
        assert running.staging_files() == []
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()
