"""C-ECHO and C-STORE against DCMTK's echoscu and storescu."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from conftest import RunningServer, dcmtk
from vesalius.dicom.structure import dataset_offset


def _dataset_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(dataset_offset(path))
        return fh.read()


def test_echo(server: RunningServer) -> None:
    proc = dcmtk("echoscu", "-v", *server.address)
    assert "Received Echo Response (Success)" in proc.stderr + proc.stdout


def test_store_is_bit_exact_and_indexed(server: RunningServer) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    dcmtk("storescu", *server.address, str(source))
    files = server.stored_files()
    assert len(files) == 1
    stored, sent = _dataset_bytes(files[0]), _dataset_bytes(source)
    # storescu drops (FFFC,FFFC) Data Set Trailing Padding when it sends; all else is identical.
    assert sent.startswith(stored)
    assert sent[len(stored) :][:4] in (b"", b"\xfc\xff\xfc\xff")
    assert (
        dcmread(files[0], stop_before_pixels=True).SOPInstanceUID == dcmread(source).SOPInstanceUID
    )
    assert server.catalog.count_instances() == 1
    assert server.staging_files() == []


def test_second_copy_replaces(server: RunningServer) -> None:
    source = get_testdata_file("MR_small.dcm")
    dcmtk("storescu", *server.address, source)
    dcmtk("storescu", *server.address, source)
    assert server.catalog.count_instances() == 1
    assert len(server.stored_files()) == 1


def test_requestor_preferred_syntax_is_stored_as_sent(server: RunningServer) -> None:
    """storescu -xr proposes RLE Lossless first, then uncompressed, in one context: the
    requestor's first choice is accepted, so the file is stored compressed, as sent."""
    source = Path(get_testdata_file("MR_small_RLE.dcm"))
    dcmtk("storescu", "-xr", *server.address, str(source))
    (stored,) = server.stored_files()
    assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
        "1.2.840.10008.1.2.5"
    )
    assert _dataset_bytes(stored) == _dataset_bytes(source)[: len(_dataset_bytes(stored))]
