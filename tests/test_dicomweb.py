"""DICOMweb against a real server: QIDO-RS, WADO-RS, WADO-URI and capabilities (PS3.18).

Instances go in over DIMSE (DCMTK's storescu) or through the import path; a real DICOMweb client
(``dicomweb-client``) and plain httpx read them back, and results are checked against what was
stored: bit-exact files, pixel-equal frames, decodable rendered images.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from conftest import SQLITE_ONLY, WebServer, dcmtk, make_server, running_http
from synth import make_instance
from vesalius.identity import Identity


def store(web: WebServer, *paths: Path) -> None:
    """Send files with DCMTK's storescu (C-STORE), as a modality would."""
    dcmtk("storescu", *web.dimse.address, *map(str, paths))


def ingest(web: WebServer, *paths: Path) -> None:
    """Store files through the import path (any transfer syntax, no negotiation needed)."""
    for path in paths:
        web.archive.ingest.ingest_copy(path, Identity.system("test"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def multipart_parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    raw = b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(raw + response.content)
    assert message.is_multipart(), response.headers["content-type"]
    return [
        (part.get("Content-Type", ""), part.get_payload(decode=True) or b"")
        for part in message.iter_parts()
    ]


@pytest.fixture
def study(web: WebServer, tmp_path: Path) -> dict[str, object]:
    """Two series of one study (3 CT images, 2 MR images) stored over C-STORE."""
    study_uid, ct_uid, mr_uid = generate_uid(), generate_uid(), generate_uid()
    files = []
    for n in range(3):
        path = tmp_path / f"ct{n}.dcm"
        make_instance(
            path,
            rows=16,
            columns=16,
            pixel_data=pattern(16, 16),
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=ct_uid,
            InstanceNumber=n + 1,
            PatientName="Doe^Jane",
            PatientID="QIDO-1",
            StudyDate="20240115",
            AccessionNumber="ACC1",
            StudyDescription="Chest",
        )
        files.append(path)
    for n in range(2):
        path = tmp_path / f"mr{n}.dcm"
        make_instance(
            path,
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=mr_uid,
            Modality="MR",
            InstanceNumber=n + 1,
            PatientName="Doe^Jane",
            PatientID="QIDO-1",
            StudyDate="20240115",
        )
        files.append(path)
    other = tmp_path / "other.dcm"
    make_instance(other, PatientName="Roe^Richard", PatientID="QIDO-2", StudyDate="20230601")
    store(web, *files, other)
    return {"study": study_uid, "ct": ct_uid, "mr": mr_uid, "files": files}


def pattern(rows: int, columns: int, frames: int = 1) -> bytes:
    """16-bit pixels with a visible gradient (12 bits stored)."""
    return (np.arange(rows * columns * frames, dtype=np.uint16) * 7 % 4096).tobytes()


def client(web: WebServer) -> DICOMwebClient:
    return DICOMwebClient(url=web.dicomweb)


# --- QIDO-RS -------------------------------------------------------------------------------


def test_search_studies_with_the_dicomweb_client(web: WebServer, study: dict) -> None:
    found = client(web).search_for_studies(search_filters={"PatientName": "doe*"})
    assert len(found) == 1
    match = found[0]
    assert match["0020000D"]["Value"] == [study["study"]]
    assert match["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert sorted(match["00080061"]["Value"]) == ["CT", "MR"]
    assert match["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert match["00201208"]["Value"] == [5]
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so only the path is certain here
    assert match["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{study['study']}")

    in_range = client(web).search_for_studies(search_filters={"StudyDate": "20240101-20241231"})
    assert [m["0020000D"]["Value"][0] for m in in_range] == [study["study"]]
    by_tag = httpx.get(f"{web.dicomweb}/studies", params={"00100020": "QIDO-2"})
    assert by_tag.status_code == 200
    assert by_tag.headers["content-type"].startswith("application/dicom+json")
    assert len(by_tag.json()) == 1
    assert by_tag.json()[0]["00081190"]["Value"][0].startswith(web.dicomweb + "/studies/")
    assert client(web).search_for_studies(search_filters={"ModalitiesInStudy": "MR"})[0][
        "0020000D"
    ]["Value"] == [study["study"]]


def test_search_paging_includefield_and_warning(web: WebServer, study: dict) -> None:
    page = httpx.get(f"{web.dicomweb}/studies", params={"limit": "1", "offset": "1"}).json()
    assert len(page) == 1
    everything = httpx.get(f"{web.dicomweb}/studies", params={"includefield": "all"}).json()
    assert "00081030" in everything[0] or "00081030" in everything[1]  # StudyDescription
    warned = httpx.get(
        f"{web.dicomweb}/studies", params={"includefield": "00081030,PatientComments"}
    )
    assert warned.status_code == 200
    assert "PatientComments" in warned.headers["warning"]
    assert warned.headers["warning"].startswith("299")


def test_search_series_and_instances(web: WebServer, study: dict) -> None:
    series = client(web).search_for_series(study_instance_uid=study["study"])
    assert {s["0020000E"]["Value"][0] for s in series} == {study["ct"], study["mr"]}
    ct = next(s for s in series if s["00080060"]["Value"] == ["CT"])
    assert ct["00201209"]["Value"] == [3]
    everywhere = httpx.get(f"{web.dicomweb}/series", params={"Modality": "MR"}).json()
    assert len(everywhere) == 1
    assert everywhere[0]["00100020"]["Value"] == ["QIDO-1"]  # study attributes come along
    instances = client(web).search_for_instances(
        study_instance_uid=study["study"], series_instance_uid=study["ct"]
    )
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2, 3]
    in_study = httpx.get(f"{web.dicomweb}/studies/{study['study']}/instances").json()
    assert len(in_study) == 5
    uid_list = httpx.get(
        f"{web.dicomweb}/series",
        params={"SeriesInstanceUID": f"{study['ct']},{study['mr']}"},
    ).json()
    assert len(uid_list) == 2


def test_search_as_xml(web: WebServer, study: dict) -> None:
    response = httpx.get(
        f"{web.dicomweb}/studies",
        params={"PatientID": "QIDO-1"},
        headers={"Accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert response.status_code == 200
    parts = multipart_parts(response)
    assert len(parts) == 1
    assert parts[0][0].startswith("application/dicom+xml")
    assert b'keyword="StudyInstanceUID"' in parts[0][1]
    assert study["study"].encode() in parts[0][1]


@SQLITE_ONLY  # the parameters are refused before any query reaches the index
@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": "abc"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"NoSuchAttribute": "x"}, "unknown attribute"),
        ({"FFFF0000": "x"}, "unknown attribute tag"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"ReferencedSeriesSequence": "x"}, "sequence"),
    ],
)
def test_search_rejects_bad_parameters(web: WebServer, params: dict, reason: str) -> None:
    response = httpx.get(f"{web.dicomweb}/studies", params=params)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_bad_paths_and_media_types(web: WebServer, study: dict) -> None:
    bad_uid = httpx.get(f"{web.dicomweb}/studies/1.2.abc/series")
    assert bad_uid.status_code == 400
    assert "StudyInstanceUID" in bad_uid.json()["error"] or "study" in bad_uid.json()["error"]
    unknown = httpx.get(f"{web.dicomweb}/studies/1.2.3.4.5/metadata")
    assert unknown.status_code == 404
    assert unknown.json()["error"]
    xml_only = httpx.get(f"{web.dicomweb}/studies", headers={"Accept": "text/html"})
    assert xml_only.status_code == 406
    missing = httpx.get(f"{web.dicomweb}/nothing-here")
    assert missing.status_code == 404


# --- WADO-RS -------------------------------------------------------------------------------


def test_retrieve_study_bit_exact(web: WebServer, study: dict) -> None:
    response = httpx.get(
        f"{web.dicomweb}/studies/{study['study']}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    parts = multipart_parts(response)
    stored = [sha(p.read_bytes()) for p in web.dimse.stored_files()]
    assert len(parts) == 5
    assert {sha(body) for _, body in parts} <= set(stored)
    assert all(ct.startswith("application/dicom") for ct, _ in parts)

    datasets = client(web).retrieve_series(study["study"], study["ct"])
    assert sorted(int(ds.InstanceNumber) for ds in datasets) == [1, 2, 3]
    original = dcmread(study["files"][0])
    again = client(web).retrieve_instance(study["study"], study["ct"], original.SOPInstanceUID)
    assert again.PixelData == original.PixelData


def test_retrieve_converts_to_the_default_syntax(web: WebServer, tmp_path: Path) -> None:
    rle = Path(get_testdata_file("MR_small_RLE.dcm"))
    ingest(web, rle)
    ds = dcmread(rle)
    url = (
        f"{web.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    default = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert default.status_code == 200
    ((content_type, body),) = multipart_parts(default)
    assert "1.2.840.10008.1.2.1" in content_type
    converted = dcmread(io.BytesIO(body))
    assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(converted.pixel_array, ds.pixel_array)
    as_stored = httpx.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert as_stored.status_code == 200
    assert sha(as_stored.content) == sha(web.dimse.stored_files()[0].read_bytes())
    impossible = httpx.get(
        url,
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3'},
    )
    assert impossible.status_code == 406


def test_metadata_and_bulkdata(web: WebServer, study: dict) -> None:
    metadata = client(web).retrieve_series_metadata(study["study"], study["ct"])
    assert len(metadata) == 3
    first = next(m for m in metadata if m["00200013"]["Value"] == [1])
    assert first["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert first["00280010"]["Value"] == [16]
    assert first["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    path = first["7FE00010"]["BulkDataURI"].split("/dicom-web/", 1)[1]
    served = httpx.get(f"{web.dicomweb}/studies/{study['study']}/series/{study['ct']}/metadata")
    uris = [m["7FE00010"]["BulkDataURI"] for m in served.json()]
    uri = f"{web.dicomweb}/{path}"
    assert uri in uris
    original = dcmread(study["files"][0])
    whole = httpx.get(uri, headers={"Accept": "application/octet-stream"})
    assert whole.status_code == 200
    assert whole.content == original.PixelData
    part = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=4-11"})
    assert part.status_code == 206
    assert part.content == original.PixelData[4:12]
    assert part.headers["content-range"] == f"bytes 4-11/{len(original.PixelData)}"
    beyond = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=99999-"})
    assert beyond.status_code == 416
    multi = httpx.get(uri)
    assert multipart_parts(multi)[0][1] == original.PixelData
    study_metadata = httpx.get(
        f"{web.dicomweb}/studies/{study['study']}/metadata", headers={"Accept-Encoding": "gzip"}
    )
    assert study_metadata.headers["content-encoding"] == "gzip"
    assert len(study_metadata.json()) == 5


def test_frames_native_and_compressed(web: WebServer, tmp_path: Path) -> None:
    native = tmp_path / "multiframe.dcm"
    make_instance(
        native,
        rows=32,
        columns=32,
        NumberOfFrames=10,
        pixel_data=pattern(32, 32, 10),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    )
    j2k = Path(get_testdata_file("JPEG2000.dcm"))
    ingest(web, native, j2k)
    ds = dcmread(native)
    base = (
        f"{web.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    frames = client(web).retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[2, 5]
    )
    size = ds.Rows * ds.Columns * 2
    assert frames == [ds.PixelData[size : 2 * size], ds.PixelData[4 * size : 5 * size]]
    ohif = httpx.get(
        f"{base}/frames/1",
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
    )
    ((content_type, body),) = multipart_parts(ohif)
    assert "transfer-syntax=" in content_type
    assert body == ds.PixelData[:size]
    assert httpx.get(f"{base}/frames/11").status_code == 404
    assert httpx.get(f"{base}/frames/0").status_code == 400
    assert httpx.get(f"{base}/frames/x").status_code == 400

    cds = dcmread(j2k)
    cbase = (
        f"{web.dicomweb}/studies/{cds.StudyInstanceUID}/series/{cds.SeriesInstanceUID}"
        f"/instances/{cds.SOPInstanceUID}"
    )
    stored = httpx.get(
        f"{cbase}/frames/1",
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
    )
    ((content_type, body),) = multipart_parts(stored)
    assert cds.file_meta.TransferSyntaxUID in content_type
    assert body.rstrip(b"\0")[:4] == b"\xff\x4f\xff\x51"  # a J2K codestream, as stored
    decoded = httpx.get(
        f"{cbase}/frames/1", headers={"Accept": "multipart/related; type=application/octet-stream"}
    )
    ((content_type, body),) = multipart_parts(decoded)
    assert "1.2.840.10008.1.2.1" in content_type
    pixels = np.frombuffer(body, dtype=cds.pixel_array.dtype).reshape(cds.pixel_array.shape)
    assert np.array_equal(pixels, cds.pixel_array)


def test_rendered_and_thumbnails(web: WebServer, study: dict) -> None:
    original = dcmread(study["files"][0])
    base = f"{web.dicomweb}/studies/{study['study']}/series/{study['ct']}"
    url = f"{base}/instances/{original.SOPInstanceUID}"
    jpeg = httpx.get(f"{url}/rendered", headers={"Accept": "image/jpeg"})
    assert jpeg.status_code == 200
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (16, 16)
    png = httpx.get(
        f"{url}/rendered", params={"viewport": "64,64"}, headers={"Accept": "image/png"}
    )
    image = Image.open(io.BytesIO(png.content))
    assert image.format == "PNG"
    assert image.size == (64, 64)
    windowed = httpx.get(f"{url}/rendered", params={"window": "0,10,linear"})
    assert windowed.status_code == 200
    assert httpx.get(f"{url}/rendered", params={"window": "a,b"}).status_code == 400
    assert httpx.get(f"{url}/rendered", headers={"Accept": "image/tiff"}).status_code == 406
    series = httpx.get(f"{base}/rendered")
    assert len(multipart_parts(series)) == 3
    thumb = httpx.get(f"{web.dicomweb}/studies/{study['study']}/thumbnail")
    assert thumb.status_code == 200
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 128
    frame = httpx.get(f"{url}/frames/1/rendered")
    assert Image.open(io.BytesIO(frame.content)).size == (16, 16)
    by_client = client(web).retrieve_instance_rendered(
        study["study"], study["ct"], original.SOPInstanceUID, media_types=("image/png",)
    )
    assert Image.open(io.BytesIO(by_client)).format == "PNG"
    frames_by_client = client(web).retrieve_instance_frames_rendered(
        study["study"], study["ct"], original.SOPInstanceUID, frame_numbers=[1]
    )
    assert Image.open(io.BytesIO(frames_by_client)).format == "JPEG"


def test_wado_uri(web: WebServer, study: dict) -> None:
    original_path = study["files"][0]
    ds = dcmread(original_path)
    params = {
        "requestType": "WADO",
        "studyUID": study["study"],
        "seriesUID": study["ct"],
        "objectUID": ds.SOPInstanceUID,
    }
    as_dicom = httpx.get(f"{web.url}/wado", params={**params, "contentType": "application/dicom"})
    assert as_dicom.status_code == 200
    assert as_dicom.headers["content-type"] == "application/dicom"
    assert sha(as_dicom.content) in {sha(p.read_bytes()) for p in web.dimse.stored_files()}
    as_jpeg = httpx.get(f"{web.url}/wado", params={**params, "rows": "32", "columns": "32"})
    assert as_jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(as_jpeg.content)).size == (32, 32)
    assert httpx.get(f"{web.url}/wado", params={**params, "requestType": "X"}).status_code == 400
    no_object = {k: v for k, v in params.items() if k != "objectUID"}
    assert httpx.get(f"{web.url}/wado", params=no_object).status_code == 400
    unknown = {**params, "objectUID": "1.2.3.4"}
    assert httpx.get(f"{web.url}/wado", params=unknown).status_code == 404
    assert httpx.get(f"{web.url}/wado", params={**params, "anonymize": "yes"}).status_code == 400


def test_capabilities(web: WebServer) -> None:
    wadl = httpx.request("OPTIONS", f"{web.dicomweb}/")
    assert wadl.status_code == 200
    assert wadl.headers["content-type"].startswith("application/vnd.sun.wadl+xml")
    assert b'path="studies/{study}/series/{series}/instances/{instance}/frames/{frames}"' in (
        wadl.content
    )
    described = httpx.get(f"{web.dicomweb}/", headers={"Accept": "application/json"}).json()
    assert any(r["path"] == "studies" and r["method"] == "POST" for r in described["resources"])


def test_cors_when_configured(tmp_path: Path, database_url: str) -> None:
    running = make_server(tmp_path / "data", database_url, **{"http.cors_origins": "*"})
    try:
        with running_http(running.archive, running.settings) as url:
            response = httpx.get(
                f"{url}/dicom-web/studies", headers={"Origin": "http://viewer.example"}
            )
            assert response.headers["access-control-allow-origin"] == "*"
            preflight = httpx.options(
                f"{url}/dicom-web/studies",
                headers={
                    "Origin": "http://viewer.example",
                    "Access-Control-Request-Method": "GET",
                },
            )
            assert preflight.status_code == 200
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def test_metadata_for_instances_stored_before_it_existed(web: WebServer, study: dict) -> None:
    """Instances indexed without metadata (older archives) get it computed on first request."""
    from sqlalchemy import delete

    from vesalius.index.schema import instance_metadata

    with web.catalog.write() as conn:
        conn.execute(delete(instance_metadata))
    metadata = client(web).retrieve_study_metadata(study["study"])
    assert len(metadata) == 5
    with web.catalog.read() as conn:
        assert len(conn.execute(instance_metadata.select()).all()) == 5


def test_lossy_data_comes_as_stored_by_default(web: WebServer, tmp_path: Path) -> None:
    """Lossy data is not decoded to the default syntax (PS3.18 8.7.3.5.2)."""
    source = Path(get_testdata_file("JPEG-lossy.dcm"))
    copy = tmp_path / "jpeg-lossy.dcm"
    shutil.copyfile(source, copy)
    ingest(web, copy)
    ds = dcmread(copy)
    response = httpx.get(
        f"{web.dicomweb}/studies/{ds.StudyInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    ((content_type, body),) = multipart_parts(response)
    assert ds.file_meta.TransferSyntaxUID in content_type  # lossy: never silently decoded
    assert sha(body) == sha(copy.read_bytes())


def test_public_url_names_the_server_in_urls(tmp_path: Path, database_url: str) -> None:
    """Behind a reverse proxy, RetrieveURLs and BulkDataURIs use ``http.public_url``."""
    running = make_server(
        tmp_path / "data", database_url, **{"http.public_url": "https://pacs.example.org/"}
    )
    try:
        path = tmp_path / "one.dcm"
        ds = make_instance(path)
        running.archive.ingest.ingest_copy(path, Identity.system("test"))
        with running_http(running.archive, running.settings) as url:
            found = httpx.get(f"{url}/dicom-web/studies").json()
            assert found[0]["00081190"]["Value"] == [
                f"https://pacs.example.org/dicom-web/studies/{ds.StudyInstanceUID}"
            ]
            metadata = httpx.get(f"{url}/dicom-web/studies/{ds.StudyInstanceUID}/metadata").json()
            assert metadata[0]["7FE00010"]["BulkDataURI"].startswith(
                "https://pacs.example.org/dicom-web/studies/"
            )
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()
