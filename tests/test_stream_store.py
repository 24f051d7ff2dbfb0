"""Stored files are read through the blob store's interface (issue 12, item 6): with a store
whose ``open`` gives a reader that is no local file (no file descriptor, no name, as an object
store's would be), WADO-RS (instances, frames, bulk data, rendered, metadata computed late),
C-GET and C-MOVE to DCMTK, and ingest's duplicate check all work, bit-exact."""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import generate_uid
from sqlalchemy import delete

from conftest import (
    RunningServer,
    WebServer,
    dcmtk,
    free_port,
    make_server,
    running_http,
    scratch_database,
)
from synth import make_instance
from test_dicomweb import multipart_parts, pattern
from test_retrieve import (
    dataset_bytes,
    received_files,
    start_storescp,
    store,
    suboperation_counts,
)
from vesalius.identity import Identity
from vesalius.index.schema import instance_metadata
from vesalius.services.retrieve import RetrieveKeys
from vesalius.settings import Modality
from vesalius.storage import FOLDER_STORE

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
OCTET = "application/octet-stream"


class _Hidden(io.RawIOBase):
    """A raw stream over a file that hides it: no ``fileno()``, no ``name``."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with the stream

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        return self._fh.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()
        super().close()


class StreamStore:
    """A blob store the readers cannot see as files: blobs in a folder of its own, put by
    copying (as an upload would be), opened as buffered readers over :class:`_Hidden`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.opened = 0

    def _path(self, key: str) -> Path:
        assert re.fullmatch(r"[0-9a-f]{32}", key)
        return self.folder / f"{key}.blob"

    def put_file(self, key: str, source: Path) -> None:
        part = self._path(key).with_suffix(".part")
        with open(source, "rb") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(part, self._path(key))
        source.unlink()

    def open(self, key: str) -> io.BufferedReader:
        reader = io.BufferedReader(_Hidden(self._path(key)))
        self.opened += 1
        return reader

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.open(key) as fh:
            fh.seek(start)
            left = -1 if end is None else end - start
            while left:
                chunk = fh.read(65536 if left < 0 else min(65536, left))
                if not chunk:
                    return
                left -= len(chunk) if left > 0 else 0
                yield chunk

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def free_bytes(self) -> int:
        return 1 << 50

    def close(self) -> None:
        pass

    def blobs(self) -> list[Path]:
        return sorted(self.folder.glob("*.blob"))


def test_the_test_store_hides_its_files(tmp_path: Path) -> None:
    made = StreamStore(tmp_path / "objects")
    source = tmp_path / "x"
    source.write_bytes(b"0123456789")
    key = "0" * 32
    made.put_file(key, source)
    with made.open(key) as reader:
        with pytest.raises(OSError):
            reader.fileno()
        with pytest.raises(AttributeError):
            reader.name  # noqa: B018
        reader.seek(4)
        assert reader.read(3) == b"456"
    assert b"".join(made.open_range(key, 2, 5)) == b"234"
    assert b"".join(made.open_range(key, 8)) == b"89"


@dataclass
class Stored:
    """The study stored through the stream store: its files by name, and their UIDs."""

    study: str
    files: dict[str, Path]

    def uid(self, name: str) -> str:
        return str(dcmread(self.files[name], stop_before_pixels=True).SOPInstanceUID)

    def url(self, web: WebServer, name: str) -> str:
        ds = dcmread(self.files[name], stop_before_pixels=True)
        return (
            f"{web.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )


@pytest.fixture
def ports() -> dict[str, int]:
    return {"DEST": free_port()}


@pytest.fixture
def stream(tmp_path: Path, ports: dict[str, int]) -> Iterator[tuple[WebServer, StreamStore]]:
    """An archive over a :class:`StreamStore` (SQLite), serving DIMSE and HTTP."""
    made = StreamStore(tmp_path / "objects")
    modalities = {"dest": Modality("dest", "DEST", "127.0.0.1", ports["DEST"])}
    with scratch_database("sqlite", tmp_path) as url:
        running = make_server(tmp_path / "data", url, modalities=modalities, store=made)
        try:
            with running_http(running.archive, running.settings) as http_url:
                yield WebServer(running, http_url), made
        finally:
            running.dimse.stop(grace=2)
            running.archive.close()


@pytest.fixture
def stored(stream: tuple[WebServer, StreamStore], tmp_path: Path) -> Stored:
    """One study over C-STORE: native CT, implicit MR, RLE MR, deflated, RLE colour with two
    frames, native multi-frame; each in its own series."""
    web, made = stream
    study = generate_uid()
    folder = tmp_path / "corpus"
    folder.mkdir()
    files: dict[str, Path] = {}
    for name, source in (
        ("ct", "CT_small.dcm"),
        ("mr", "MR_small_implicit.dcm"),
        ("rle", "MR_small_RLE.dcm"),
        ("deflated", "image_dfl.dcm"),
        ("colour", "SC_rgb_rle_2frame.dcm"),
    ):
        ds = dcmread(get_testdata_file(source, download=False))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = "STREAM"
        files[name] = folder / f"{name}.dcm"
        ds.save_as(files[name], enforce_file_format=True)
    files["frames"] = folder / "frames.dcm"
    make_instance(
        files["frames"],
        rows=32,
        columns=32,
        NumberOfFrames=10,
        pixel_data=pattern(32, 32, 10),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        StudyInstanceUID=study,
        PatientID="STREAM",
    )
    proc = store(web.dimse, list(files.values()), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert web.catalog.count_instances() == len(files)
    assert len(made.blobs()) == len(files)
    assert not list((web.dimse.data_dir / "storage" / "blobs").rglob("*.dcm"))
    return Stored(study, files)


def _by_uid(made: StreamStore) -> dict[str, Path]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in made.blobs()}


def test_wado_rs_reads_through_the_store(
    stream: tuple[WebServer, StreamStore], stored: Stored
) -> None:
    web, made = stream
    blobs = _by_uid(made)
    before = made.opened

    # Each instance as stored, bit-exact; the study in the default syntax (RLE decompressed,
    # the deflated one inflated as a stream).
    for name in stored.files:
        as_stored = httpx.get(
            stored.url(web, name), headers={"Accept": "application/dicom; transfer-syntax=*"}
        )
        assert as_stored.status_code == 200
        assert as_stored.content == blobs[stored.uid(name)].read_bytes()
    study = httpx.get(f"{web.dicomweb}/studies/{stored.study}", timeout=60)
    parts = multipart_parts(study)
    assert len(parts) == len(stored.files)
    converted = set()
    for _, body in parts:
        got = dcmread(io.BytesIO(body))
        original = dcmread(blobs[str(got.SOPInstanceUID)])
        assert np.array_equal(got.pixel_array, original.pixel_array)
        if got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID:
            assert body == blobs[str(got.SOPInstanceUID)].read_bytes()
        else:
            assert got.file_meta.TransferSyntaxUID == EXPLICIT_VR_LE
            converted.add(str(got.SOPInstanceUID))
    assert converted == {stored.uid(n) for n in ("mr", "rle", "deflated", "colour")}

    # Frames: stored bytes of a native multi-frame, decoded pixels of an RLE frame.
    frames = dcmread(stored.files["frames"])
    size = 32 * 32 * 2
    listed = httpx.get(
        f"{stored.url(web, 'frames')}/frames/2,5",
        headers={"Accept": f"multipart/related; type={OCTET}; transfer-syntax=*"},
    )
    assert [body for _, body in multipart_parts(listed)] == [
        frames.PixelData[size : 2 * size],
        frames.PixelData[4 * size : 5 * size],
    ]
    colour = dcmread(stored.files["colour"])
    decoded = httpx.get(
        f"{stored.url(web, 'colour')}/frames/2",
        headers={"Accept": f"multipart/related; type={OCTET}"},
    )
    ((_, body),) = multipart_parts(decoded)
    assert body == colour.pixel_array[1].tobytes()

    # Bulk data: a byte range of native pixel data, and encapsulated frames one per part.
    ct = dcmread(stored.files["ct"])
    ranged = httpx.get(
        f"{stored.url(web, 'ct')}/bulkdata/7FE00010",
        headers={"Accept": OCTET, "Range": "bytes=100-1123"},
    )
    assert ranged.status_code == 206 and ranged.content == ct.PixelData[100:1124]
    fragments = multipart_parts(httpx.get(f"{stored.url(web, 'colour')}/bulkdata/7FE00010"))
    assert len(fragments) == 2 and all(body for _, body in fragments)

    # Rendered and thumbnail.
    rendered = httpx.get(f"{stored.url(web, 'ct')}/rendered", headers={"Accept": "image/png"})
    assert Image.open(io.BytesIO(rendered.content)).size == (128, 128)
    thumbnail = httpx.get(f"{web.dicomweb}/studies/{stored.study}/thumbnail")
    assert thumbnail.status_code == 200
    assert Image.open(io.BytesIO(thumbnail.content)).format == "JPEG"

    # Metadata computed from the stored files (as for instances stored before it existed).
    with web.catalog.write() as conn:
        conn.execute(delete(instance_metadata))
    metadata = httpx.get(f"{web.dicomweb}/studies/{stored.study}/metadata").json()
    assert len(metadata) == len(stored.files)
    assert {m["00080018"]["Value"][0] for m in metadata} == set(blobs)
    assert made.opened > before


def test_c_get_and_c_move_read_through_the_store(
    stream: tuple[WebServer, StreamStore], stored: Stored, ports: dict[str, int], tmp_path: Path
) -> None:
    web, made = stream
    blobs = _by_uid(made)
    study = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={stored.study}"]

    # getscu accepts uncompressed syntaxes only: the RLE instances are decompressed and the
    # deflated one inflated (as a stream); the others go as stored, bit-exact.
    out = tmp_path / "get"
    out.mkdir()
    proc = dcmtk("getscu", "-v", "+B", "-od", str(out), *study, *web.dimse.address)
    received = received_files(out)
    assert set(received) == set(blobs), proc.stderr
    for uid, path in received.items():
        got, original = dcmread(path), dcmread(blobs[uid])
        assert np.array_equal(got.pixel_array, original.pixel_array)
        if original.file_meta.TransferSyntaxUID == got.file_meta.TransferSyntaxUID:
            assert dataset_bytes(path) == dataset_bytes(blobs[uid])

    # storescp accepts every syntax: each instance goes as stored, bit-exact.
    dest = start_storescp("DEST", ports["DEST"], tmp_path / "moved", "+xa")
    try:
        proc = dcmtk("movescu", "-v", "-aem", "DEST", *study, *web.dimse.address)
    finally:
        dest.terminate()
        dest.wait(timeout=10)
    assert "Received Final Move Response (Success)" in proc.stderr + proc.stdout
    moved = received_files(tmp_path / "moved")
    assert set(moved) == set(blobs)
    for uid, path in moved.items():
        assert dataset_bytes(path) == dataset_bytes(blobs[uid])


def test_duplicate_check_reads_through_the_store(
    stream: tuple[WebServer, StreamStore], stored: Stored, tmp_path: Path
) -> None:
    """The same data set again under another File Meta is kept (compared through the store);
    other content is discarded; either way the stored blob stays and no other is left."""
    web, made = stream
    blob = _by_uid(made)[stored.uid("ct")]
    meta = dcmread(blob, stop_before_pixels=True).file_meta
    meta.ImplementationVersionName = "OTHER_SENDER"
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    again = tmp_path / "again.dcm"
    again.write_bytes(head.getvalue() + dataset_bytes(blob))
    who = Identity.system("test")
    assert web.archive.ingest.ingest_copy(again, who).outcome == "kept"
    ds = dcmread(blob)
    ds.PatientName = "Other^Content"
    ds.save_as(again, enforce_file_format=True)
    assert web.archive.ingest.ingest_copy(again, who).outcome == "discarded"
    assert len(made.blobs()) == len(stored.files)


def test_rows_record_their_store(stream: tuple[WebServer, StreamStore], stored: Stored) -> None:
    web: WebServer = stream[0]
    server: RunningServer = web.dimse
    keys = RetrieveKeys(level="STUDY", study_uids=(stored.study,))
    plan = server.archive.retrieve.plan(keys, Identity.system("test"), "WADO-RS")
    assert {i.blob_store for i in plan.instances} == {FOLDER_STORE}
    assert server.stores.get(FOLDER_STORE) is stream[1]


def test_a_missing_blob_is_not_found(
    stream: tuple[WebServer, StreamStore], stored: Stored, tmp_path: Path
) -> None:
    """A blob gone from its store: 404 for its frames and rendering, a failed sub-operation
    for C-GET while the others are sent."""
    web, made = stream
    _by_uid(made)[stored.uid("frames")].unlink()
    url = stored.url(web, "frames")
    assert httpx.get(f"{url}/frames/1").status_code == 404
    assert httpx.get(f"{url}/rendered").status_code == 404
    out = tmp_path / "get"
    out.mkdir()
    study = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={stored.study}"]
    proc = dcmtk("getscu", "-v", "+B", "-od", str(out), *study, *web.dimse.address, check=False)
    counts = suboperation_counts(proc.stderr + proc.stdout)
    assert (counts["completed"], counts["failed"]) == (len(stored.files) - 1, 1)
