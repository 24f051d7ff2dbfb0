"""STOW-RS against a real server (PS3.18 10.5, Annex I): the real ``dicomweb-client`` and raw
httpx requests store instances; every stored blob is bit-exact and findable, and every bad
request gets its status and reason with nothing half-stored (no staging files, blobs or rows).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import socket
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import SQLITE_ONLY, WebServer, make_server, running_http, wait_until
from synth import make_instance
from vesalius.errors import InvalidDataError, TooLargeError, UnsupportedError
from vesalius.settings import load_settings
from vesalius.web.upload import (
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    decoded_body,
)

BOUNDARY = "stow-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
DICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")
REFERENCED, FAILED, OTHER = "00081199", "00081198", "0008119A"
MIB = 1 << 20


# ---------------------------------------------------------------------------- helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def stored_shas(web: WebServer) -> set[str]:
    return {file_sha(p) for p in web.dimse.stored_files()}


def multipart(parts: Iterable[bytes | tuple[str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/related body; a part is bytes (application/dicom) or (type or None, bytes)."""
    out = b""
    for part in parts:
        kind, data = part if isinstance(part, tuple) else ("application/dicom", part)
        head = f"Content-Type: {kind}\r\n" if kind else ""
        out += f"--{boundary}\r\n{head}\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def post(
    web: WebServer,
    body: Any,
    *,
    content_type: str = MULTIPART,
    study: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    url = web.dicomweb + "/studies" + (f"/{study}" if study else "")
    sent = {"Content-Type": content_type, **(headers or {})}
    return httpx.post(url, content=body, headers=sent, timeout=120)


def seq(response: httpx.Response, tag: str) -> list[dict[str, Any]]:
    return list(response.json().get(tag, {}).get("Value", []))


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def assert_nothing_stored(web: WebServer, instances: int = 0) -> None:
    """No staging leftovers, and only ``instances`` blobs and index rows."""
    assert web.dimse.staging_files() == []
    assert len(web.dimse.stored_files()) == instances
    assert web.catalog.count_instances() == instances


def instance_bytes(tmp_path: Path, **attrs: Any) -> bytes:
    path = tmp_path / f"{generate_uid()}.dcm"
    make_instance(path, **attrs)
    return path.read_bytes()


def qido_finds(web: WebServer, study_uid: str) -> int:
    """NumberOfStudyRelatedInstances that QIDO-RS reports for ``study_uid`` (0: not found)."""
    response = httpx.get(web.dicomweb + "/studies", params={"StudyInstanceUID": study_uid})
    assert response.status_code in (200, 204), response.text
    found = response.json() if response.status_code == 200 else []
    return int(found[0]["00201208"]["Value"][0]) if found else 0


@contextmanager
def web_with(tmp_path: Path, database_url: str, **overrides: object) -> Iterator[WebServer]:
    """A server of its own, with settings overridden (e.g. a small upload limit)."""
    running = make_server(tmp_path / "own", database_url, **overrides)
    try:
        with running_http(running.archive, running.settings) as url:
            yield WebServer(running, url)
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux clear_refs 5), so later peaks are this test's."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_growth_mb(baseline_kib: int) -> float:
    return (vm_kib("VmHWM") - baseline_kib) / 1024


def gzip_of_zeros(size: int) -> bytes:
    """gzip of ``size`` zero bytes, built without ever holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    out = [compressor.compress(block) for _ in range(size // MIB)]
    return b"".join([*out, compressor.flush()])


# ------------------------------------------------------------------ the stream reader


def split_events(body: bytes, sizes: Iterable[int]) -> list[tuple[dict[str, str], bytes]]:
    reader = MultipartReader(BOUNDARY.encode())
    parts: list[tuple[dict[str, str], bytearray]] = []
    ended = 0
    offset = 0
    for size in sizes:
        if offset >= len(body):
            break
        for event in reader.feed(body[offset : offset + size]):
            if isinstance(event, PartStart):
                parts.append((event.headers, bytearray()))
            elif isinstance(event, PartData):
                parts[-1][1].extend(event.data)
            elif isinstance(event, PartEnd):
                ended += 1
        offset += size
    reader.close()
    assert ended == len(parts)
    return [(headers, bytes(data)) for headers, data in parts]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 16])
def test_reader_finds_boundaries_split_anywhere(size: int) -> None:
    tricky = b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n-" + bytes(range(256)) * 4
    body = (
        b"a preamble to ignore\r\n"
        + multipart([tricky, (None, b""), ("text/plain", b"--" + BOUNDARY.encode())])
        + b"an epilogue to ignore"
    )
    parts = split_events(body, iter(lambda: size, None))
    assert parts == [
        ({"content-type": "application/dicom"}, tricky),
        ({}, b""),
        ({"content-type": "text/plain"}, b"--" + BOUNDARY.encode()),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"no multipart here at all", "no delimiter"),
        (f"--{BOUNDARY}--\r\n".encode(), "no parts"),
        (multipart([b"abc"])[:-8], "truncated"),
        (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nabc".encode(), "truncated"),
        (f"--{BOUNDARY}xyz\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), "malformed"),
        (f"--{BOUNDARY}\r\nno colon\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), "malformed"),
    ],
)
def test_reader_rejects_malformed_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidDataError, match=reason):
        split_events(body, [5] * len(body))


async def _collect(chunks: list[bytes], encoding: str, limit: int) -> bytes:
    async def raw() -> Any:
        for chunk in chunks:
            yield chunk

    return b"".join([piece async for piece in decoded_body(raw(), encoding, limit)])


def test_decoding_is_incremental_and_bounded() -> None:
    data = b"DICOM " * 100_000
    gz = gzip.compress(data)
    pieces = [gz[i : i + 100] for i in range(0, len(gz), 100)]
    assert asyncio.run(_collect(pieces, "gzip", 10 * MIB)) == data
    assert asyncio.run(_collect([gz + gz], "x-gzip", 10 * MIB)) == data + data  # two members
    assert asyncio.run(_collect([zlib.compress(data)], "deflate", 10 * MIB)) == data
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = raw_deflate.compress(data) + raw_deflate.flush()
    assert asyncio.run(_collect([raw[:1], raw[1:]], "deflate", 10 * MIB)) == data
    assert asyncio.run(_collect([gzip.compress(gz)], "gzip, gzip", 10 * MIB)) == data
    with pytest.raises(InvalidDataError, match="ends before"):
        asyncio.run(_collect([gz[:-9]], "gzip", 10 * MIB))
    with pytest.raises(InvalidDataError, match="cannot decode"):
        asyncio.run(_collect([b"not gzip at all"], "gzip", 10 * MIB))
    with pytest.raises(TooLargeError):
        asyncio.run(_collect([gz], "gzip", len(data) - 1))
    with pytest.raises(UnsupportedError):
        asyncio.run(_collect([gz], "br", 10 * MIB))


# ----------------------------------------------------------------- storing instances


def test_store_with_dicomweb_client(web: WebServer, tmp_path: Path) -> None:
    study_uid = generate_uid()
    datasets = []
    for number in (1, 2):
        path = tmp_path / f"synth{number}.dcm"
        make_instance(path, StudyInstanceUID=study_uid, InstanceNumber=number)
        datasets.append(pydicom.dcmread(path))
    datasets += [pydicom.dcmread(get_testdata_file(name)) for name in DICOM_FILES]
    sent = []
    for ds in datasets:  # exactly what the client encodes for each part
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds)
        sent.append(sha(buffer.getvalue()))

    client = DICOMwebClient(url=web.dicomweb)
    result = client.store_instances(datasets)

    references = result.ReferencedSOPSequence
    assert [str(r.ReferencedSOPInstanceUID) for r in references] == [
        str(ds.SOPInstanceUID) for ds in datasets
    ]
    for ref, ds in zip(references, datasets, strict=True):
        assert ref.ReferencedSOPClassUID == ds.SOPClassUID
        # dicomweb-client sends "Host: 127.0.0.1" without the port: compare the paths.
        assert urlsplit(ref.RetrieveURL).path == (
            f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        assert "WarningReason" not in ref
    assert "FailedSOPSequence" not in result
    assert result.RetrieveURL in (None, "")  # several studies: no single study URL
    assert stored_shas(web) == set(sent)
    assert_nothing_stored(web, instances=len(datasets))
    assert qido_finds(web, study_uid) == 2
    for ds in datasets[2:]:
        assert qido_finds(web, str(ds.StudyInstanceUID)) == 1


def test_store_into_a_study_bit_exact(web: WebServer, tmp_path: Path) -> None:
    study_uid = generate_uid()
    files = [instance_bytes(tmp_path, StudyInstanceUID=study_uid) for _ in range(3)]
    unquoted = f"multipart/related; type=application/dicom; boundary={BOUNDARY}"
    response = post(web, multipart(files), content_type=unquoted, study=study_uid)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    assert value(response.json(), "00081190") == f"{web.dicomweb}/studies/{study_uid}"
    assert len(seq(response, REFERENCED)) == 3
    assert stored_shas(web) == {sha(f) for f in files}
    assert_nothing_stored(web, instances=3)
    assert qido_finds(web, study_uid) == 3


def test_single_part_and_content_encodings(web: WebServer, tmp_path: Path) -> None:
    """A bare application/dicom body (an extension) and gzip/deflate-coded bodies."""
    plain, gzipped, deflated = (instance_bytes(tmp_path) for _ in range(3))
    response = post(web, plain, content_type="application/dicom")
    assert response.status_code == 200, response.text
    response = post(web, gzip.compress(multipart([gzipped])), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    response = post(
        web,
        zlib.compress(deflated),
        content_type="application/dicom",
        headers={"Content-Encoding": "deflate"},
    )
    assert response.status_code == 200, response.text
    assert stored_shas(web) == {sha(plain), sha(gzipped), sha(deflated)}
    assert_nothing_stored(web, instances=3)


def test_xml_response(web: WebServer, tmp_path: Path) -> None:
    body = multipart([instance_bytes(tmp_path)])
    response = post(web, body, headers={"Accept": "application/dicom+xml"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+xml")
    assert b'keyword="ReferencedSOPSequence"' in response.content
    response = post(web, body, headers={"Accept": "image/png"})
    assert response.status_code == 406


# ------------------------------------------------------------ per-instance failures


def test_study_mismatch_fails_the_instance(web: WebServer, tmp_path: Path) -> None:
    study_uid, other_uid, sop_uid = generate_uid(), generate_uid(), generate_uid()
    body = multipart([instance_bytes(tmp_path, StudyInstanceUID=other_uid, SOPInstanceUID=sop_uid)])
    response = post(web, body, study=study_uid)
    assert response.status_code == 409, response.text
    [failed] = seq(response, FAILED)
    assert value(failed, "00081155") == sop_uid
    assert value(failed, "00081150") == "1.2.840.10008.5.1.4.1.1.2"
    assert value(failed, "00081197") == 0xA900
    assert REFERENCED not in response.json()
    assert response.headers["warning"].startswith('299 vesalius "A900')
    assert_nothing_stored(web)


def test_not_dicom_alone_is_409(web: WebServer) -> None:
    response = post(web, multipart([b"this is not a DICOM file"]))
    assert response.status_code == 409, response.text
    [other] = seq(response, OTHER)
    assert value(other, "00081197") == 0xC000
    assert FAILED not in response.json()
    assert_nothing_stored(web)


def test_mixed_parts_are_202(web: WebServer, tmp_path: Path) -> None:
    good = instance_bytes(tmp_path)
    truncated_uid = generate_uid()
    truncated = instance_bytes(tmp_path, SOPInstanceUID=truncated_uid, rows=64, columns=64)[:-100]
    body = multipart(
        [good, truncated, b"garbage", ("application/dicom+json", b"[]"), ("text/plain", good)]
    )
    response = post(web, body)
    assert response.status_code == 202, response.text
    assert len(seq(response, REFERENCED)) == 1
    [failed] = seq(response, FAILED)
    assert value(failed, "00081155") == truncated_uid
    assert value(failed, "00081197") == 0xC000
    assert [value(item, "00081197") for item in seq(response, OTHER)] == [0xC000] * 3
    assert stored_shas(web) == {sha(good)}
    assert_nothing_stored(web, instances=1)


@pytest.mark.parametrize(
    ("policy", "status", "stored"),
    [("replace", 200, "second"), ("keep", 202, "first"), ("reject", 409, "first")],
)
def test_duplicates_follow_the_policy(
    tmp_path: Path, database_url: str, policy: str, status: int, stored: str
) -> None:
    """A second copy with other content: replaced, kept with warning B006 (Elements
    Discarded, PS3.18 Table I.2-1) or refused (0x0111); the same copy again is plain success
    under ``keep``."""
    sop_uid, study_uid, series_uid = generate_uid(), generate_uid(), generate_uid()
    uids = {"SOPInstanceUID": sop_uid, "StudyInstanceUID": study_uid}
    first = instance_bytes(tmp_path, SeriesInstanceUID=series_uid, PatientName="First", **uids)
    second = instance_bytes(tmp_path, SeriesInstanceUID=series_uid, PatientName="Second", **uids)
    with web_with(tmp_path, database_url, **{"ingest.duplicate_policy": policy}) as web:
        assert post(web, multipart([first])).status_code == 200
        response = post(web, multipart([second]))
        assert response.status_code == status, response.text
        if status == 409:
            [failed] = seq(response, FAILED)
            assert value(failed, "00081155") == sop_uid
            assert value(failed, "00081197") == 0x0111
        else:
            [referenced] = seq(response, REFERENCED)
            assert value(referenced, "00081155") == sop_uid
            if policy == "keep":
                assert value(referenced, "00081196") == 0xB006
                assert "B006" in response.headers["warning"]
        assert stored_shas(web) == {sha(first if stored == "first" else second)}
        assert_nothing_stored(web, instances=1)
        if policy == "keep":
            again = post(web, multipart([first]))
            assert again.status_code == 200, again.text
            [referenced] = seq(again, REFERENCED)
            assert "00081196" not in referenced


def test_duplicate_policy_defaults_to_keeping_the_first_copy() -> None:
    """Issue 11 item 9: no peer may overwrite stored data unless configured to."""
    assert load_settings(environ={})["ingest.duplicate_policy"] == "keep"


# ------------------------------------------------------------- whole-request failures


@SQLITE_ONLY  # the request is refused before anything reaches the index
@pytest.mark.parametrize(
    ("content_type", "body", "headers", "status", "reason"),
    [
        ("application/json", b"{}", {}, 415, "not supported"),
        (
            f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
            b"",
            {},
            415,
            "only application/dicom parts are supported",
        ),
        (
            f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
            b"",
            {},
            415,
            "only application/dicom parts are supported",
        ),
        ('multipart/related; type="application/dicom"', b"", {}, 400, "boundary"),
        (MULTIPART, b"garbage without any delimiter", {}, 400, "no delimiter"),
        (MULTIPART, "TRUNCATED", {}, 400, "truncated"),
        (MULTIPART, "GOOD", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
        (MULTIPART, b"\x1f\x8b not really gzip", {"Content-Encoding": "gzip"}, 400, "decode"),
        (MULTIPART, "GOOD", {"Accept": "text/html"}, 406, "can be returned"),
    ],
)
def test_bad_requests_store_nothing(
    web: WebServer,
    tmp_path: Path,
    content_type: str,
    body: bytes | str,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    good = multipart([instance_bytes(tmp_path), instance_bytes(tmp_path)])
    if body == "GOOD":
        body = good
    elif body == "TRUNCATED":  # two complete parts, then the body stops mid-part
        body = good[: -len(f"--{BOUNDARY}--\r\n")] + f"--{BOUNDARY}\r\n\r\nDICM".encode()
    response = post(web, body, content_type=content_type, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["status"] == status
    assert reason in response.json()["error"]
    assert_nothing_stored(web)


def test_bad_study_uid_in_path(web: WebServer, tmp_path: Path) -> None:
    response = post(web, multipart([instance_bytes(tmp_path)]), study="1.2.abc")
    assert response.status_code == 400
    assert_nothing_stored(web)


def test_client_disconnect_leaves_nothing(web: WebServer, tmp_path: Path) -> None:
    """The client goes away mid-part: the staged parts are removed and nothing is stored."""
    body = multipart([instance_bytes(tmp_path), instance_bytes(tmp_path, rows=512, columns=512)])
    sent = body[: len(body) // 2]
    host, port = urlsplit(web.url).hostname, urlsplit(web.url).port
    with socket.create_connection((host, port)) as sock:
        head = (
            f"POST /dicom-web/studies HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {MULTIPART}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + sent)
        wait_until(lambda: bool(web.dimse.staging_files()), what="a staged part")
    wait_until(lambda: not web.dimse.staging_files(), what="staging cleaned up")
    assert_nothing_stored(web)


def test_limits(tmp_path: Path, database_url: str) -> None:
    """Over ``http.max_upload_mb``: 413 however the size shows, and nothing stored."""
    small = instance_bytes(tmp_path)
    big = instance_bytes(tmp_path, rows=1024, columns=1024)  # 2 MiB of pixel data
    with web_with(tmp_path, database_url, **{"http.max_upload_mb": 1}) as web:
        # Content-Length over the limit: refused before reading.
        response = post(web, multipart([big]))
        assert response.status_code == 413, response.text
        assert "1 MiB" in response.json()["error"]

        # A client waiting for "100 Continue" gets its answer without sending the body.
        host, port = urlsplit(web.url).hostname, urlsplit(web.url).port
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(
                f"POST /dicom-web/studies HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: {MULTIPART}\r\nContent-Length: {100 * MIB}\r\n"
                "Expect: 100-continue\r\n\r\n".encode()
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")

        # Chunked: a complete small instance first, then the limit hits in the next part.
        def chunks() -> Iterator[bytes]:
            body = multipart([small, big])
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        response = post(web, chunks())
        assert response.status_code == 413, response.text
        assert_nothing_stored(web)

        # A gzip bomb: 200 MB of zeros in 200 KB stops at the limit, memory flat.
        bomb = gzip_of_zeros(200 * 1000 * 1000)
        assert len(bomb) < MIB
        reset_peak_rss()
        baseline = vm_kib("VmRSS")
        response = post(web, bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413, response.text
        assert peak_growth_mb(baseline) < 50
        assert_nothing_stored(web)

        # Under the limit still works on the same server.
        assert post(web, multipart([small])).status_code == 200
        assert_nothing_stored(web, instances=1)


# ------------------------------------------------------------------ a large object


def write_multiframe(path: Path, frames: int) -> str:
    """A Part 10 file with ``frames`` MiB of pixel data, written in pieces."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte SC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "STOW-BIG"
    ds.PatientName = "Big^Upload"
    ds.Modality = "OT"
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = 1024
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    frame = bytes(range(256)) * (MIB // 256)
    with open(path, "ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00" + (MIB * frames).to_bytes(4, "little"))
        for _ in range(frames):
            fh.write(frame)
    return str(ds.StudyInstanceUID)


def test_large_upload_streams_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.dcm"
    study_uid = write_multiframe(path, frames=300)
    expected = file_sha(path)

    def body() -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with open(path, "rb") as fh:
            while chunk := fh.read(MIB):
                yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    with web_with(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}") as web:
        reset_peak_rss()
        baseline = vm_kib("VmRSS")
        response = post(web, body(), study=study_uid)
        growth = peak_growth_mb(baseline)
        assert response.status_code == 200, response.text
        path.unlink()
        assert growth < 100, growth  # the object is 300 MiB
        [stored] = web.dimse.stored_files()
        assert file_sha(stored) == expected
        assert_nothing_stored(web, instances=1)
        assert qido_finds(web, study_uid) == 1
