"""C-STORE bad input: each gets a clear failure status, the server keeps serving, nothing is
left half-written in the index or the folder."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, _config, evt
from pynetdicom.pdu import P_DATA_TF

from conftest import RunningServer, dcmtk, make_server, wait_until

CT = get_testdata_file("CT_small.dcm")
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(autouse=True)
def _raw_send() -> Iterator[None]:
    """pynetdicom SCUs here send files as raw bytes, exactly as crafted."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = old


def _variant(tmp_path: Path, name: str, **changes: str) -> Path:
    ds = dcmread(CT)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _send_raw(server: RunningServer, path: Path, **assoc_kwargs: Any) -> Any:
    ae = AE(ae_title="BADSCU")
    ae.add_requested_context(CT_CLASS, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title, **assoc_kwargs)
    assert assoc.is_established
    try:
        return assoc.send_c_store(str(path))
    finally:
        if assoc.is_established:
            assoc.release()


def _assert_nothing_stored(server: RunningServer) -> None:
    assert server.catalog.count_instances() == 0
    assert server.stored_files() == []
    assert server.staging_files() == []


def _assert_still_serving(server: RunningServer) -> None:
    dcmtk("echoscu", *server.address)


def test_truncated_file_is_refused(server: RunningServer, tmp_path: Path) -> None:
    data = Path(CT).read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: len(data) - 5000])  # cut inside the pixel data
    status = _send_raw(server, path)
    assert 0xC000 <= status.Status <= 0xCFFF
    assert "truncated" in status.ErrorComment or "past the end" in status.ErrorComment
    _assert_nothing_stored(server)
    _assert_still_serving(server)


def test_broken_header_is_refused(server: RunningServer, tmp_path: Path) -> None:
    good = _variant(tmp_path, "good.dcm")
    data = good.read_bytes()
    from vesalius.dicom.structure import dataset_offset

    offset = dataset_offset(good)
    path = tmp_path / "broken.dcm"
    # Keep the File Meta, then an element whose length runs far past the end.
    path.write_bytes(data[:offset] + b"\x08\x00\x20\x00DA\xff\x7f" + b"2004" + data[offset:][:64])
    status = _send_raw(server, path)
    assert 0xA900 <= status.Status <= 0xCFFF
    assert status.ErrorComment
    _assert_nothing_stored(server)
    _assert_still_serving(server)


def test_path_traversal_uid_is_refused(server: RunningServer, tmp_path: Path) -> None:
    evil = _variant(tmp_path, "evil.dcm", SOPInstanceUID="1.2.3/../../../../tmp/pwned")
    proc = dcmtk("storescu", "-v", *server.address, str(evil), check=False)
    assert "CannotUnderstand" in proc.stderr + proc.stdout
    _assert_nothing_stored(server)
    assert not Path("/tmp/pwned").exists()
    _assert_still_serving(server)


def test_unknown_sop_class_is_rejected_at_negotiation(
    server: RunningServer, tmp_path: Path
) -> None:
    unknown = _variant(tmp_path, "unknown.dcm", SOPClassUID="1.2.3.4.5.6.7")
    proc = dcmtk("storescu", *server.address, str(unknown), check=False)
    assert proc.returncode != 0
    assert "No presentation context" in proc.stderr + proc.stdout
    _assert_nothing_stored(server)
    _assert_still_serving(server)


def test_command_and_dataset_disagree(server: RunningServer, tmp_path: Path) -> None:
    """The data set's SOP Instance UID differs from the command's: 0xA900."""
    path = _variant(tmp_path, "mismatch.dcm")
    ds = dcmread(path)
    ds.SOPInstanceUID = "1.2.3.4.999"  # File Meta keeps the old UID, used for the command
    ds.save_as(path, enforce_file_format=False)
    status = _send_raw(server, path)
    assert status.Status == 0xA900
    _assert_nothing_stored(server)


def test_association_dropped_mid_transfer(server: RunningServer, tmp_path: Path) -> None:
    """The connection dies after a few P-DATA PDUs: the partial file disappears."""
    ds = dcmread(CT)
    ds.PixelData = bytes(4 * 1024 * 1024)  # 4 MiB of pixel data: many PDUs
    ds.Rows = ds.Columns = 1024
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    big = tmp_path / "big.dcm"
    ds.save_as(big, enforce_file_format=True)

    sent = {"pdata": 0}
    dropped = threading.Event()

    def cut(event: Any) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            sent["pdata"] += 1
            if sent["pdata"] == 5 and not dropped.is_set():
                dropped.set()
                sock = event.assoc.dul.socket.socket
                sock.shutdown(2)

    ae = AE(ae_title="DROPPER")
    ae.add_requested_context(CT_CLASS, "1.2.840.10008.1.2.1")
    assoc = ae.associate(
        "127.0.0.1",
        server.port,
        ae_title=server.ae_title,
        max_pdu=16384,
        evt_handlers=[(evt.EVT_PDU_SENT, cut)],
    )
    assert assoc.is_established
    with contextlib.suppress(Exception):  # the send fails: that is the point
        assoc.send_c_store(str(big))
    assoc.abort()
    assert dropped.is_set()
    server.dimse.wait_idle(timeout=30)
    _assert_nothing_stored(server)
    _assert_still_serving(server)


def test_out_of_space_is_0xA700(tmp_path: Path, database_url: str) -> None:
    running = make_server(tmp_path / "data", database_url, **{"storage.min_free_mb": 1 << 30})
    try:
        proc = dcmtk("storescu", "-v", *running.address, CT, check=False)
        assert "OutOfResources" in proc.stderr + proc.stdout or "A700" in proc.stderr
        _assert_nothing_stored(running)
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


@pytest.mark.parametrize(("policy", "expected"), [("keep", "first"), ("reject", "first")])
def test_duplicate_policies(tmp_path: Path, database_url: str, policy: str, expected: str) -> None:
    running = make_server(tmp_path / "data", database_url, **{"ingest.duplicate_policy": policy})
    try:
        first = _variant(tmp_path, "a.dcm", StudyDescription="FIRST")
        second = _variant(tmp_path, "b.dcm", StudyDescription="SECOND")
        dcmtk("storescu", *running.address, str(first))
        proc = dcmtk("storescu", "-v", *running.address, str(second), check=False)
        if policy == "reject":
            # 0x0111 Duplicate SOP Instance (PS3.7 C.5.4); DCMTK has no name for it on C-STORE.
            assert "0x111" in proc.stderr + proc.stdout
        else:  # Warning 0xB006 Elements Discarded: the stored copy is kept (PS3.4 B.2.3)
            assert "Warning: ElementsDiscarded" in proc.stderr + proc.stdout
        files = running.stored_files()
        assert len(files) == 1
        assert dcmread(files[0]).StudyDescription == "FIRST"
        assert running.catalog.count_instances() == 1
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def test_no_staging_file_is_0xA700_and_the_association_goes_on(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staging file that cannot be created (the disk is full: injected, this machine's disk
    cannot be filled in a test) fails that C-STORE with Out of Resources after its data set
    has been read, and the next C-STORE on the same association succeeds."""
    spool = server.spool
    real = spool.staging_file
    calls = 0

    def full_once() -> tuple[int, Path]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(28, "No space left on device")
        return real()

    monkeypatch.setattr(spool, "staging_file", full_once)
    # The association captured the bound method when it was made: patch before associating.
    second = _variant(tmp_path, "b.dcm")
    ae = AE(ae_title="FULLSCU")
    ae.add_requested_context(CT_CLASS, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        first = assoc.send_c_store(CT)
        assert first.Status == 0xA700
        assert "staging" in str(first.get("ErrorComment", ""))
        assert assoc.send_c_store(str(second)).Status == 0x0000
    finally:
        assoc.release()
    assert server.catalog.count_instances() == 1
    assert server.staging_files() == []


def test_a_peer_that_stalls_mid_data_set_is_aborted(tmp_path: Path, database_url: str) -> None:
    """A peer silent for longer than dicom.network_timeout in the middle of a data set gets an
    A-ABORT; its partial file is removed and the server goes on serving (PS3.8 9.1.5: ARTIM
    and network timers are the provider's to choose)."""
    from pynetdicom.presentation import build_context

    from vesalius.dicom.uids import EXPLICIT_VR_LE
    from vesalius.dimse import commands, pdu
    from vesalius.dimse.requestor import connect

    running = make_server(tmp_path / "data", database_url, **{"dicom.network_timeout": 1.0})
    try:
        link = connect(
            "127.0.0.1",
            running.port,
            calling_ae="STALLER",
            called_ae=running.ae_title,
            contexts=[build_context(CT_CLASS, [EXPLICIT_VR_LE])],
            max_pdu=16384,
            acse_timeout=10,
            network_timeout=10,
            dimse_timeout=10,
        )
        context = next(iter(link.contexts.values()))
        command = commands.encode(
            [
                (commands.AFFECTED_SOP_CLASS, CT_CLASS),
                (commands.COMMAND_FIELD, commands.C_STORE_RQ),
                (commands.MESSAGE_ID, 1),
                (commands.PRIORITY, 0),
                (commands.DATA_SET_TYPE, commands.DATA_SET),
                (commands.AFFECTED_SOP_INSTANCE, "1.2.3.4"),
            ]
        )
        link.send_command(context.id, command)
        fragment = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
        link.sock.sendall(pdu.pdata_header(context.id, 0x00, len(fragment)) + fragment)
        link.sock.settimeout(10)
        started = time.monotonic()
        answer = pdu.read_pdu(link.sock, 0)  # nothing more is sent: the server gives up
        assert answer.kind == pdu.ABORT
        assert time.monotonic() - started < 9
        link.close()
        wait_until(lambda: running.staging_files() == [], what="the partial file removed")
        assert running.catalog.count_instances() == 0
        dcmtk("echoscu", *running.address)
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()
