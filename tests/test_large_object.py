"""A 1 GiB multi-frame object goes in (C-STORE) and out (C-MOVE) of a `vesalius serve`
process whose peak resident memory (VmHWM) stays flat."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.servers import process_tree
from bench.tools import dcmtk_tool
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import dcmtk, free_port, wait_for_port
from test_serve import wait_healthy

FRAME = 1024 * 1024
FRAMES = 1024  # 1 GiB of pixel data
MULTIFRAME_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"


def write_big_multiframe(path: Path) -> str:
    """Write a Part 10 file with 1 GiB of pixel data, streamed, never held in memory."""
    ds = Dataset()
    ds.SOPClassUID = MULTIFRAME_BYTE_SC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "BIG1"
    ds.PatientName = "Big^Object"
    ds.Modality = "OT"
    ds.NumberOfFrames = FRAMES
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
    chunk = bytes(range(256)) * (FRAME // 256)
    with open(path, "ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00" + (FRAME * FRAMES).to_bytes(4, "little"))
        for _ in range(FRAMES):
            fh.write(chunk)
    return str(ds.SOPInstanceUID)


def peak_rss_mb(pid: int) -> float:
    """The largest VmHWM among the server's processes (the main one and its DIMSE workers):
    whichever took the association, its memory must stay flat."""
    peaks = []
    for process in process_tree(pid):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    if not peaks:
        raise AssertionError("no VmHWM")
    return max(peaks)


@pytest.fixture
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    path = tmp_path_factory.mktemp("big") / "big.dcm"
    uid = write_big_multiframe(path)
    yield path, uid
    path.unlink(missing_ok=True)


def test_one_gib_in_and_out_with_flat_memory(
    tmp_path: Path, database_url: str, big_file: tuple[Path, str]
) -> None:
    path, uid = big_file
    dicom_port, http_port, dest_port = free_port(), free_port(), free_port()
    received = tmp_path / "received"
    received.mkdir()
    env = {
        **os.environ,
        "VESALIUS_DATA_DIR": str(tmp_path / "data"),
        "VESALIUS_DATABASE_URL": database_url,
        "VESALIUS_DICOM_PORT": str(dicom_port),
        "VESALIUS_HTTP_PORT": str(http_port),
        "VESALIUS_STORAGE_MIN_FREE_MB": "0",
        "VESALIUS_MODALITY_DEST": f"DEST@127.0.0.1:{dest_port}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "vesalius.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    storescp = subprocess.Popen(
        [
            str(dcmtk_tool("storescp")),
            "--bit-preserving",
            "-aet",
            "DEST",
            "-od",
            str(received),
            str(dest_port),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_healthy(server, f"http://127.0.0.1:{http_port}/health")
        baseline = peak_rss_mb(server.pid)
        address = ["-aec", "VESALIUS", "127.0.0.1", str(dicom_port)]
        dcmtk("storescu", *address, str(path), timeout=600)
        after_store = peak_rss_mb(server.pid)
        wait_for_port(dest_port)
        header = dcmread(path, stop_before_pixels=True)
        keys = {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": header.StudyInstanceUID,
            "SeriesInstanceUID": header.SeriesInstanceUID,
            "SOPInstanceUID": uid,
        }
        args = [arg for key, value in keys.items() for arg in ("-k", f"{key}={value}")]
        dcmtk("movescu", "-S", "-aem", "DEST", *address, *args, timeout=600)
        after_move = peak_rss_mb(server.pid)
        got = list(received.iterdir())
        assert len(got) == 1
        assert got[0].stat().st_size >= FRAME * FRAMES
        got[0].unlink()
        # Flat: the peak grows by far less than the object (1024 MiB).
        assert after_store - baseline < 150, (baseline, after_store)
        assert after_move - baseline < 150, (baseline, after_move)
    finally:
        storescp.terminate()
        server.terminate()
        server.communicate(timeout=60)
        storescp.wait(timeout=30)
