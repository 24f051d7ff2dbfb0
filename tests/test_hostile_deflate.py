"""Deflated data sets from a hostile or careless peer, against a real ``vesalius serve``.

A Deflated Explicit VR Little Endian instance (PS3.5 A.5) of one megabyte can inflate to a
gigabyte. Vesalius inflates as a stream: at ingest into a staging twin, refusing past
``ingest.max_inflated_mb`` (0xA700 over C-STORE, Failure Reason 0xA700 in a STOW-RS response)
with nothing stored; at retrieval straight to the client (WADO-RS, frames) or the peer
(C-GET, C-MOVE). Each server test measures the peak resident memory of every server process
over the operation: VmHWM, reset first through /proc/PID/clear_refs (docs/security.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.tools import dcmtk_tool
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from conftest import dcmtk, free_port, wait_for_port
from pynetdicom_peer import configure_streaming
from served import Served, serve
from synth import SECONDARY_CAPTURE_STORAGE
from vesalius.dicom import frames as pixel_frames
from vesalius.dicom import inflate
from vesalius.dicom.metadata import decode
from vesalius.dicom.scan import scan_instance
from vesalius.dicom.transcode import transcode
from vesalius.dimse.association import decode_data_set
from vesalius.dimse.retrieve import _reencoded
from vesalius.errors import InvalidDataError, TooLargeError
from vesalius.services.metadata import read_with_metadata

MIB = 1 << 20
#: Most a server process may grow while refusing a bomb or serving a large deflated instance.
BUDGET_MB = 64
DEFLATED = str(DeflatedExplicitVRLittleEndian)
EXPLICIT = str(ExplicitVRLittleEndian)
IMPLICIT = str(ImplicitVRLittleEndian)
FRAME = 1 << 20  # 1024 x 1024, 8 bits


# ---------------------------------------------------------------------------------------------
# Deflated files and measurements


@dataclass(frozen=True)
class Made:
    """A deflated Part 10 file written by :func:`make_deflated`."""

    path: Path
    sop_instance_uid: str
    study_uid: str
    frames: int
    inflated: int  # bytes of the data set once inflated
    sha256: str  # of the inflated data set


def make_deflated(path: Path, frames: int, *, fill: bool = True) -> Made:
    """A deflated Secondary Capture image of ``frames`` 1024 x 1024 8-bit frames, frame ``k``
    filled with byte ``k % 256`` (``fill``) or zeros: each megabyte deflates to about a
    kilobyte. Written as a stream, so a gigabyte bomb costs the test no memory."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "DEFLATE-1"
    ds.PatientName = "Deflate^Bomb"
    ds.Modality = "OT"
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = 1024
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    header = body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, frames * FRAME)
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    sha = hashlib.sha256(header)
    with open(path, "wb") as out:
        out.write(head.getvalue())
        out.write(packer.compress(header))
        for k in range(frames):
            frame = bytes([k % 256 if fill else 0]) * FRAME
            sha.update(frame)
            out.write(packer.compress(frame))
        out.write(packer.flush())
        if (out.tell() - len(head.getvalue())) % 2:
            out.write(b"\0")  # PS3.5 A.5: an odd-length deflate stream gets a trailing NULL
    return Made(
        path,
        str(ds.SOPInstanceUID),
        str(ds.StudyInstanceUID),
        frames,
        len(header) + frames * FRAME,
        sha.hexdigest(),
    )


def _status(pid: int, key: str) -> int:
    """A kB value of /proc/PID/status (0 when the process is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Peak:
    """Peak memory growth of a server's processes over a block, in MiB: each process's high
    water mark (VmHWM, reset on entry) above its resident size on entry, summed."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.base: dict[int, int] = {}
        self.before_mb = 0.0
        self.peak_mb = 0.0

    def __enter__(self) -> Peak:
        for pid in self.served.server_pids():
            self.base[pid] = _status(pid, "VmRSS")
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")  # proc(5): reset the peak RSS to the current RSS
        self.before_mb = sum(self.base.values()) / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mb = sum(_status(pid, "VmHWM") for pid in self.base) / 1024

    @property
    def growth_mb(self) -> float:
        return sum(max(0, _status(pid, "VmHWM") - rss) for pid, rss in self.base.items()) / 1024


def index_rows(served: Served, sop_instance_uid: str) -> int:
    with contextlib.closing(sqlite3.connect(served.data_dir / "index.sqlite")) as conn:
        query = "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?"
        return int(conn.execute(query, (sop_instance_uid,)).fetchone()[0])


def blobs(served: Served) -> list[Path]:
    return sorted((served.data_dir / "storage" / "blobs").rglob("*.dcm"))


def staging_leftovers(served: Served) -> list[Path]:
    """Files in staging other than the empty ones the server makes ahead of need (a received
    file, or a twin being inflated, is never empty)."""
    folder = served.data_dir / "storage" / "staging"
    return sorted(p for p in folder.iterdir() if p.stat().st_size)


def assert_nothing_stored(served: Served, made: Made) -> None:
    assert index_rows(served, made.sop_instance_uid) == 0
    assert blobs(served) == []
    # the staged file is removed right after the response: give it that moment
    deadline = time.monotonic() + 5
    while staging_leftovers(served) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert staging_leftovers(served) == []


@pytest.fixture(autouse=True)
def _raw_send() -> Iterator[None]:
    """pynetdicom sends a file's data set bytes as they are (deflated stays deflated)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = old


def c_store(served: Served, path: Path) -> Dataset:
    """Send ``path`` as it is, proposing only its own transfer syntax; the C-STORE-RSP."""
    meta = read_file_meta_info(path)
    ae = AE(ae_title="DEFLATESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title=served.ae_title)
    assert assoc.is_established
    try:
        status: Dataset = assoc.send_c_store(str(path))
    finally:
        if assoc.is_established:
            assoc.release()
    return status


def stow(served: Served, path: Path) -> httpx.Response:
    boundary = "deflate-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return httpx.post(
        f"{served.url}/dicom-web/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=120,
    )


# ---------------------------------------------------------------------------------------------
# The module alone: streaming, limits, the Explicit VR Little Endian twin


def test_twin_is_the_inflated_bytes_behind_the_new_file_meta(tmp_path: Path) -> None:
    source = Path(str(get_testdata_file("image_dfl.dcm")))
    out = io.BytesIO()
    size = inflate.write_explicit(source, out)
    twin = out.getvalue()
    with open(source, "rb") as fh:
        head = inflate.read_head(fh)
        data = zlib.decompress(fh.read(), -zlib.MAX_WBITS)
    assert size == len(data) and twin.endswith(data)
    assert twin[:128] == source.read_bytes()[:128]
    meta, original = dcmread(io.BytesIO(twin)).file_meta, read_file_meta_info(source)
    assert meta.TransferSyntaxUID == EXPLICIT
    assert meta.FileMetaInformationGroupLength == len(twin) - len(data) - 132 - 12
    for elem in original:
        if elem.tag not in (0x00020000, 0x00020010):
            assert meta[elem.tag] == elem
    assert dcmread(io.BytesIO(twin)) == dcmread(source)
    assert b"".join(inflate.explicit_chunks(source)) == twin
    assert inflate.inflated_size(source) == len(data)
    assert head.transfer_syntax == DEFLATED
    # transcode() takes the same streamed path
    converted = io.BytesIO()
    transcode(source, EXPLICIT, converted)
    assert converted.getvalue() == twin


def test_other_conversions_of_a_deflated_file_read_it_as_a_stream(tmp_path: Path) -> None:
    """To Implicit VR Little Endian (WADO-RS, C-GET/C-MOVE fallback) pydicom reads the data set
    from the inflating stream: held once, decoded, and bounded by ``max_inflated``."""
    source = Path(str(get_testdata_file("image_dfl.dcm")))
    out = io.BytesIO()
    transcode(source, IMPLICIT, out, max_inflated=MIB)
    converted = dcmread(io.BytesIO(out.getvalue()))
    assert converted.file_meta.TransferSyntaxUID == IMPLICIT
    assert same_elements(converted, dcmread(source))
    with pytest.raises(TooLargeError):
        transcode(source, IMPLICIT, io.BytesIO(), max_inflated=100_000)
    with _reencoded(source, DEFLATED, IMPLICIT) as payload:
        assert isinstance(payload, bytes)
        assert same_elements(decode_data_set(payload, IMPLICIT), dcmread(source))
    with _reencoded(source, DEFLATED, EXPLICIT) as payload:
        assert not isinstance(payload, bytes)
        stream, size = payload
        assert size == inflate.inflated_size(source)
        assert stream.read(size + 1) == deflated_data_set(source)


def same_elements(a: Dataset, b: Dataset) -> bool:
    """Every element of the data sets (File Meta aside) has the same value."""
    return [(e.tag, e.value) for e in a] == [(e.tag, e.value) for e in b]


def deflated_data_set(path: Path) -> bytes:
    with open(path, "rb") as fh:
        inflate.read_head(fh)
        return zlib.decompress(fh.read(), -zlib.MAX_WBITS)


def test_limit_corrupt_and_truncated(tmp_path: Path) -> None:
    made = make_deflated(tmp_path / "bomb.dcm", 64, fill=False)
    assert inflate.inflated_size(made.path, limit=made.inflated) == made.inflated
    with pytest.raises(TooLargeError, match="more than 8 MiB"):
        inflate.inflated_size(made.path, limit=8 * MIB)
    raw = made.path.read_bytes()
    with open(made.path, "rb") as fh:
        start = inflate.read_head(fh).dataset_offset
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(raw[: len(raw) - 50])
    with pytest.raises(InvalidDataError, match="truncated"):
        inflate.inflated_size(truncated)
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(raw[:start] + b"\xff" * 64 + raw[start + 64 :])
    with pytest.raises(InvalidDataError, match="corrupt"):
        inflate.inflated_size(corrupt)
    # ingest's reader: the limit holds and no twin is left behind
    with pytest.raises(TooLargeError) as refused:
        read_with_metadata(made.path, max_inflated=8 * MIB, scratch=tmp_path)
    assert refused.value.instance == (SECONDARY_CAPTURE_STORAGE, made.sop_instance_uid)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bomb.dcm",
        "corrupt.dcm",
        "truncated.dcm",
    ]


def test_stream_seeks_within_its_window(tmp_path: Path) -> None:
    made = make_deflated(tmp_path / "f.dcm", 4)
    pixels = made.inflated - 4 * FRAME  # where the pixel value starts in the data set
    with inflate.open_inflated(made.path) as (_, stream):
        stream.seek(pixels + 3 * FRAME + 2000)
        assert stream.read(4) == b"\x03" * 4
        stream.seek(-1000, io.SEEK_CUR)
        assert stream.read(1000) == b"\x03" * 1000
        with pytest.raises(io.UnsupportedOperation):
            stream.seek(0)
        stream.seek(10 * FRAME)  # past the end: stays at the end
        assert stream.tell() == made.inflated and stream.read(10) == b""


def test_deflated_header_and_metadata_as_before(tmp_path: Path) -> None:
    """Ingest reads a deflated file through its twin; the header keeps the real syntax."""
    made = make_deflated(tmp_path / "f.dcm", 3)
    header, stored = read_with_metadata(made.path, scratch=tmp_path)
    assert header.transfer_syntax_uid == DEFLATED
    assert (header.rows, header.number_of_frames) == (1024, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.dcm"]
    assert f'"00083002":{{"vr":"UI","Value":["{DEFLATED}"]}}' in decode(stored)
    assert scan_instance(made.path) is None  # the scanner itself still declines deflated


def test_frames_of_a_deflated_file_read_one_frame_at_a_time(tmp_path: Path) -> None:
    made = make_deflated(tmp_path / "f.dcm", 40)
    with pixel_frames.open_frames(made.path) as reader:
        assert reader.count == 40
        assert reader.read(7) == b"\x06" * FRAME
        assert reader.read(40) == b"\x27" * FRAME
        assert reader.read(2) == b"\x01" * FRAME  # back: inflates again from the start
        assert reader.native(3).data == b"\x02" * FRAME
    assert pixel_frames.decode_frame(made.path, 9).tolist()[5][5] == 8


# ---------------------------------------------------------------------------------------------
# Bombs against a server


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """1 GiB of zeros in the pixel data, about a megabyte deflated."""
    return make_deflated(tmp_path_factory.mktemp("bomb") / "bomb.dcm", 1024, fill=False)


@pytest.fixture(scope="module")
def bomb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server with the default limit (ingest.max_inflated_mb = 256)."""
    with serve(tmp_path_factory.mktemp("bomb-server")) as served:
        yield served


def test_c_store_deflate_bomb_is_refused(bomb: Made, bomb_server: Served) -> None:
    assert bomb.path.stat().st_size < 2 * MIB and bomb.inflated > 1024 * MIB
    with Peak(bomb_server) as peak:
        status = c_store(bomb_server, bomb.path)
    print(f"C-STORE bomb: server peak {peak.before_mb:.0f} -> {peak.peak_mb:.0f} MiB")
    assert status.Status == 0xA700
    assert "256 MiB" in status.ErrorComment
    assert peak.growth_mb < BUDGET_MB
    assert_nothing_stored(bomb_server, bomb)
    assert bomb_server.alive()


def test_stow_deflate_bomb_is_refused(bomb: Made, bomb_server: Served) -> None:
    with Peak(bomb_server) as peak:
        response = stow(bomb_server, bomb.path)
    print(f"STOW-RS bomb: server peak {peak.before_mb:.0f} -> {peak.peak_mb:.0f} MiB")
    assert response.status_code == 409, response.text  # the one instance failed
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"] for item in failed] == [[0xA700]]
    assert failed[0]["00081155"]["Value"] == [bomb.sop_instance_uid]
    assert peak.growth_mb < BUDGET_MB
    assert_nothing_stored(bomb_server, bomb)


def _implicit_meta(path: Path, made: Made) -> Path:
    """``made`` with its File Meta encoded in implicit VR (against PS3.10 7.1, but pydicom
    reads it): our File Meta reader does not, and must not leave the file to pydicom."""

    def element(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value

    body = b"".join(
        (
            element(0x00020001, b"\0\1"),
            element(0x00020002, SECONDARY_CAPTURE_STORAGE.encode() + b"\0"),
            element(0x00020003, made.sop_instance_uid.encode().ljust(64, b"\0")[:64]),
            element(0x00020010, DEFLATED.encode() + b"\0"),
        )
    )
    meta = element(0x00020000, struct.pack("<I", len(body))) + body
    path.write_bytes(b"\0" * 128 + b"DICM" + meta + deflated_bytes(made.path))
    with pytest.warns(UserWarning, match="implicit VR"):  # pydicom's, reading this meta
        assert read_file_meta_info(path).TransferSyntaxUID == DEFLATED
        with pytest.raises(InvalidDataError, match="File Meta of this deflated file is malformed"):
            read_with_metadata(path, max_inflated=MIB, scratch=path.parent)
    return path


def test_stow_bomb_behind_a_malformed_file_meta_is_refused(
    bomb: Made, bomb_server: Served, tmp_path: Path
) -> None:
    odd = _implicit_meta(tmp_path / "odd.dcm", bomb)
    with Peak(bomb_server) as peak:
        response = stow(bomb_server, odd)
    assert response.status_code == 409, response.text
    assert [i["00081197"]["Value"] for i in response.json()["0008119A"]["Value"]] == [[0xC000]]
    assert peak.growth_mb < BUDGET_MB
    assert_nothing_stored(bomb_server, bomb)


def test_truncated_deflate_stream_is_refused(
    bomb: Made, bomb_server: Served, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(bomb.path.read_bytes()[: 100 * 1024])  # ~100 MiB inflated
    status = c_store(bomb_server, truncated)
    assert status.Status == 0xC000 and "truncated" in status.ErrorComment
    response = stow(bomb_server, truncated)
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"] for item in failed] == [[0xC000]]
    assert_nothing_stored(bomb_server, bomb)


# ---------------------------------------------------------------------------------------------
# A large legitimate deflated instance: stored, and retrieved as a stream


LARGE_FRAMES = 200  # 200 MiB inflated, about 200 KiB deflated


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make_deflated(tmp_path_factory.mktemp("large") / "large.dcm", LARGE_FRAMES)


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"EXPLICITONLY": free_port()}


@pytest.fixture(scope="module")
def large_server(
    tmp_path_factory: pytest.TempPathFactory, large: Made, ports: dict[str, int]
) -> Iterator[Served]:
    """A server (limit lowered to 210 MiB) holding ``large``, stored over C-STORE."""
    settings = {
        "ingest.max_inflated_mb": 210,
        "modalities.explicitonly.ae_title": "EXPLICITONLY",
        "modalities.explicitonly.host": "127.0.0.1",
        "modalities.explicitonly.port": ports["EXPLICITONLY"],
    }
    with serve(tmp_path_factory.mktemp("large-server"), settings) as served:
        with Peak(served) as peak:
            status = c_store(served, large.path)
        print(f"C-STORE of {large.inflated >> 20} MiB inflated: server peak "
              f"{peak.before_mb:.0f} -> {peak.peak_mb:.0f} MiB")  # fmt: skip
        assert status.Status == 0x0000
        assert peak.growth_mb < BUDGET_MB
        assert index_rows(served, large.sop_instance_uid) == 1
        (blob,) = blobs(served)
        assert deflated_bytes(blob) == deflated_bytes(large.path)  # as received, bit-exact
        assert staging_leftovers(served) == []
        yield served


def deflated_bytes(path: Path) -> bytes:
    """The data set of a Part 10 file as encoded (deflated), after its File Meta."""
    with open(path, "rb") as fh:
        inflate.read_head(fh)
        return fh.read()


def _dataset_sha(fh: Any, offset: int) -> str:
    fh.seek(offset)
    sha = hashlib.sha256()
    while chunk := fh.read(MIB):
        sha.update(chunk)
    return sha.hexdigest()


def test_over_a_lowered_limit_is_refused(large_server: Served, tmp_path: Path) -> None:
    over = make_deflated(tmp_path / "over.dcm", 211)
    assert c_store(large_server, over.path).Status == 0xA700
    assert index_rows(large_server, over.sop_instance_uid) == 0
    assert len(blobs(large_server)) == 1


def test_wado_rs_default_is_explicit_streamed(
    large: Made, large_server: Served, tmp_path: Path
) -> None:
    meta = dcmread(large.path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    url = (
        f"{large_server.url}/dicom-web/studies/{large.study_uid}/series/"
        f"{meta.SeriesInstanceUID}/instances/{large.sop_instance_uid}"
    )
    received = tmp_path / "received.dcm"
    with (
        Peak(large_server) as peak,
        httpx.stream("GET", url, headers={"Accept": "application/dicom"}, timeout=120) as r,
        open(received, "wb") as out,
    ):
        assert r.status_code == 200
        assert f"transfer-syntax={EXPLICIT}" in r.headers["content-type"]
        for chunk in r.iter_bytes(MIB):
            out.write(chunk)
    print(f"WADO-RS of {large.inflated >> 20} MiB inflated: server peak "
          f"{peak.before_mb:.0f} -> {peak.peak_mb:.0f} MiB")  # fmt: skip
    assert peak.growth_mb < BUDGET_MB
    with open(received, "rb") as fh:
        head = inflate.read_head(fh)
        assert head.transfer_syntax == EXPLICIT
        assert _dataset_sha(fh, head.dataset_offset) == large.sha256
    (blob,) = blobs(large_server)
    with open(blob, "rb") as fh:
        twin_head = inflate.explicit_head(inflate.read_head(fh))
    assert received.read_bytes()[: len(twin_head)] == twin_head


def test_frames_of_the_large_instance(large: Made, large_server: Served) -> None:
    meta = dcmread(large.path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    url = (
        f"{large_server.url}/dicom-web/studies/{large.study_uid}/series/"
        f"{meta.SeriesInstanceUID}/instances/{large.sop_instance_uid}/frames/190"
    )
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    with Peak(large_server) as peak:
        response = httpx.get(url, headers={"Accept": accept}, timeout=120)
    print(f"frame 190 of {LARGE_FRAMES}: server peak "
          f"{peak.before_mb:.0f} -> {peak.peak_mb:.0f} MiB")  # fmt: skip
    assert response.status_code == 200
    assert bytes([189]) * FRAME in response.content
    assert peak.growth_mb < BUDGET_MB


def test_c_get_to_an_explicit_only_peer(large: Made, large_server: Served, tmp_path: Path) -> None:
    received = tmp_path / "c-get"
    received.mkdir()
    digests: list[str] = []

    def on_store(event: Any) -> int:
        with open(event.dataset_path, "rb") as fh:  # a Part 10 file pynetdicom wrote
            digests.append(_dataset_sha(fh, inflate.read_head(fh).dataset_offset))
        Path(event.dataset_path).unlink()
        assert event.context.transfer_syntax == EXPLICIT
        return 0x0000

    configure_streaming(received)  # received data sets land in files, as test_retrieve's
    try:
        ae = AE(ae_title="EXPLICITGET")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(SECONDARY_CAPTURE_STORAGE, [EXPLICIT])
        assoc = ae.associate(
            "127.0.0.1",
            large_server.dicom_port,
            ae_title=large_server.ae_title,
            ext_neg=[build_role(SECONDARY_CAPTURE_STORAGE, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = large.study_uid
        with Peak(large_server) as peak:
            try:
                responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
            finally:
                assoc.release()
    finally:
        _config.STORE_RECV_CHUNKED_DATASET = False
    print(f"C-GET of {large.inflated >> 20} MiB inflated: server peak "
          f"{peak.before_mb:.0f} -> {peak.peak_mb:.0f} MiB")  # fmt: skip
    assert responses[-1][0].Status == 0x0000
    assert digests == [large.sha256]
    assert peak.growth_mb < BUDGET_MB


def test_c_move_to_an_explicit_only_peer(
    large: Made, large_server: Served, ports: dict[str, int], tmp_path: Path
) -> None:
    config = tmp_path / "explicit.cfg"
    config.write_text(
        "[[TransferSyntaxes]]\n[Explicit]\nTransferSyntax1 = LittleEndianExplicit\n"
        "[[PresentationContexts]]\n[SC]\n"
        "PresentationContext1 = SecondaryCaptureImageStorage\\Explicit\n"
        "PresentationContext2 = VerificationSOPClass\\Explicit\n"
        "[[Profiles]]\n[ExplicitOnly]\nPresentationContexts = SC\n"
    )
    folder = tmp_path / "received"
    folder.mkdir()
    port = ports["EXPLICITONLY"]
    exe = dcmtk_tool("storescp")
    assert exe, "storescp not found: install Debian's dcmtk package"
    storescp = subprocess.Popen(
        [exe, "-aet", "EXPLICITONLY", "+B", "-od", str(folder), "-xf", str(config),
         "ExplicitOnly", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        ae = AE(ae_title="MOVESCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", large_server.dicom_port, ae_title=large_server.ae_title)
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = large.study_uid
        with Peak(large_server) as peak:
            try:
                responses = list(
                    assoc.send_c_move(
                        query, "EXPLICITONLY", StudyRootQueryRetrieveInformationModelMove
                    )
                )
            finally:
                assoc.release()
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)
    print(f"C-MOVE of {large.inflated >> 20} MiB inflated: server peak "
          f"{peak.before_mb:.0f} -> {peak.peak_mb:.0f} MiB")  # fmt: skip
    assert responses[-1][0].Status == 0x0000
    (path,) = folder.iterdir()
    with open(path, "rb") as fh:
        head = inflate.read_head(fh)
        assert head.transfer_syntax == EXPLICIT
        assert _dataset_sha(fh, head.dataset_offset) == large.sha256
    assert peak.growth_mb < BUDGET_MB
    dcmtk("dcmftest", str(path))
