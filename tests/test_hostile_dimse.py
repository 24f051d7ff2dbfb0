"""What a hostile or broken DIMSE peer can do to a real ``vesalius serve`` process, and the
bound that holds (issue 11): memory it can make the server allocate, time it can hold a
connection, slots it can take from other hosts, and what a full disk mid-transfer does.

Memory is the VmRSS of all server processes (main and workers); "under 64 MB" of growth is
the bound each memory test asserts.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from conftest import dcmtk, wait_until
from dimse_client import echo, store
from served import Served, serve
from synth import CT_IMAGE_STORAGE, make_instance
from vesalius.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, VERIFICATION
from vesalius.dimse import commands, negotiation, pdu
from vesalius.dimse.association import Aborted, Association
from vesalius.dimse.contexts import build_context
from vesalius.dimse.requestor import connect

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
GROWTH_MB = 64


_OPEN: list[Association] = []


@contextlib.contextmanager
def serving(
    tmp_path: Path, settings: dict[str, object] | None = None, **kwargs: object
) -> Iterator[Served]:
    """:func:`served.serve`, closing the links a test left open before the server stops (it
    would otherwise wait for them through its shutdown grace period)."""
    with serve(tmp_path, settings, **kwargs) as served:  # type: ignore[arg-type]
        try:
            yield served
        finally:
            while _OPEN:
                _OPEN.pop().close()


def associate(served: Served, contexts: list[object], *, max_pdu: int = 16384) -> Association:
    """An association from our own requestor, announcing ``max_pdu`` as its Maximum Length."""
    link = connect(
        "127.0.0.1",
        served.dicom_port,
        calling_ae="PROBE",
        called_ae=served.ae_title,
        contexts=contexts,  # type: ignore[arg-type]
        max_pdu=max_pdu,
        acse_timeout=10,
        network_timeout=30,
        dimse_timeout=30,
    )
    _OPEN.append(link)
    return link


def echo_from(served: Served, source: str) -> bool:
    """Whether a C-ECHO from ``source`` (a loopback address other hosts can be played from)
    is answered with Success."""
    ae = AE(ae_title="OTHERHOST")
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", served.dicom_port, ae_title=served.ae_title, bind_address=(source, 0)
    )
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        assoc.release()


def wait_for_log(served: Served, text: str, timeout: float = 10) -> None:
    wait_until(lambda: text in served.log_text(), timeout, f"{text!r} in the server log")


def closed_within(
    sock: socket.socket, limit: float, trickle: bytes = b"", every: float = 0
) -> float:
    """Send ``trickle`` a byte at a time every ``every`` seconds (or nothing) until the server
    closes the connection; the seconds that took. Fails past ``limit``."""
    started = time.monotonic()
    sock.settimeout(every or limit)
    position = 0
    while time.monotonic() - started < limit:
        try:
            if trickle:
                sock.sendall(trickle[position % len(trickle) : position % len(trickle) + 1])
                position += 1
            data = sock.recv(65536)
            if not data:
                return time.monotonic() - started
            if data[:1] == bytes([pdu.ABORT]):
                continue  # an A-ABORT first, then the close
        except TimeoutError:
            continue
        except OSError:  # reset by the server
            return time.monotonic() - started
    raise AssertionError(f"connection still open after {limit} s")


@contextlib.contextmanager
def sockets(count: int, port: int) -> Iterator[list[socket.socket]]:
    opened = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


# ---------------------------------------------------------------------------- memory


def test_peer_maximum_length_does_not_size_our_buffers(tmp_path: Path) -> None:
    """Item 1: three peers announcing Maximum Length 0xFFFFFFFF, then a C-ECHO each, cost the
    server nothing like 4 GB each: we send in fragments of our own cap."""
    with serving(tmp_path) as served:
        before = served.rss_mb()
        links = [
            associate(
                served,
                [build_context(VERIFICATION), build_context(STUDY_ROOT_FIND, [EXPLICIT_VR_LE])],
                max_pdu=0xFFFFFFFF,
            )
            for _ in range(3)
        ]
        for link in links:
            assert echo(link) == 0
        peak = served.rss_mb()
        for link in links:
            link.release()
        assert peak - before < GROWTH_MB, (before, peak)


def test_command_set_over_the_cap_is_aborted(tmp_path: Path) -> None:
    """Item 3: a 200 MB command set sent in 16 kB fragments is cut off (A-ABORT) after a few
    kB, not accepted whole."""
    with serving(tmp_path) as served:
        before = served.rss_mb()
        link = associate(served, [build_context(VERIFICATION)])
        context = next(iter(link.contexts.values()))
        fragment = b"\x00" * 16000
        sent = 0
        with pytest.raises(OSError):  # the server aborts and closes: our sends fail
            while sent < 200 << 20:
                link.sock.sendall(pdu.pdata_header(context.id, 0x01, len(fragment)) + fragment)
                sent += len(fragment)
        assert sent < 8 << 20, sent  # a socket buffer or two, not 200 MB
        assert served.rss_mb() - before < GROWTH_MB
        assert served.alive()
        wait_for_log(served, "command set longer than")


def _find_command(link: Association, context_id: int) -> bytes:
    return commands.encode(
        [
            (commands.AFFECTED_SOP_CLASS, STUDY_ROOT_FIND),
            (commands.COMMAND_FIELD, commands.C_FIND_RQ),
            (commands.MESSAGE_ID, link.next_message_id()),
            (commands.PRIORITY, 0),
            (commands.DATA_SET_TYPE, commands.DATA_SET),
        ]
    )


def test_identifier_over_the_cap_is_aborted(tmp_path: Path) -> None:
    """Item 3: an identifier (C-FIND keys) larger than 1 MiB ends the association; memory
    stays bounded."""
    with serving(tmp_path) as served:
        before = served.rss_mb()
        link = associate(served, [build_context(STUDY_ROOT_FIND, [EXPLICIT_VR_LE])])
        context = next(iter(link.contexts.values()))
        link.send_command(context.id, _find_command(link, context.id))
        chunk = b"\x08\x00" * 8000
        with pytest.raises(OSError):
            for _ in range((20 << 20) // len(chunk)):
                link.sock.sendall(pdu.pdata_header(context.id, 0x00, len(chunk)) + chunk)
        assert served.rss_mb() - before < GROWTH_MB
        wait_for_log(served, "longer than 1024 KiB to hold in memory")


def test_deflated_identifier_bomb_is_refused(tmp_path: Path) -> None:
    """Item 3: a small deflated identifier that would inflate to 256 MiB is refused once it
    passes 1 MiB, instead of being inflated whole."""
    with serving(tmp_path) as served:
        before = served.rss_mb()
        link = associate(served, [build_context(STUDY_ROOT_FIND, [DEFLATED_EXPLICIT_VR_LE])])
        context = next(iter(link.contexts.values()))
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        bomb = b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()
        assert len(bomb) < 1 << 20  # 256 MiB inflated
        with contextlib.suppress(Aborted, OSError):
            link.send(context.id, _find_command(link, context.id), bomb)
            link.receive()
        assert served.rss_mb() - before < GROWTH_MB
        assert served.alive()
        wait_for_log(served, "inflates past")


def test_announced_pdus_cost_only_what_arrives(tmp_path: Path) -> None:
    """Item 4: 200 connections that each announce a 1 MiB A-ASSOCIATE-RQ and send nothing
    more hold buffers of what arrived, not of what was announced."""
    settings = {
        "dicom.max_associations": 300,
        "dicom.max_associations_per_host": 0,
        "dicom.workers": 1,
        "dicom.acse_timeout": 60,
    }
    with serving(tmp_path, settings) as served:
        before = served.rss_mb()
        with sockets(200, served.dicom_port) as opened:
            header = struct.pack(">BxL", pdu.ASSOCIATE_RQ, (1 << 20) - 1)
            for sock in opened:
                sock.sendall(header + b"\x00\x01" + bytes(64))
            peak = 0.0
            for _ in range(20):  # the connections' threads read what was sent meanwhile
                peak = max(peak, served.rss_mb())
                time.sleep(0.05)
            assert peak - before < GROWTH_MB


# ---------------------------------------------------------------------------- time


def test_artim_timer_ends_a_trickled_association_request(tmp_path: Path) -> None:
    """Item 4: one byte per 0.3 s of an A-ASSOCIATE-RQ keeps the connection only until the
    ARTIM timer (dicom.acse_timeout) runs out, not per byte."""
    with serving(tmp_path, {"dicom.acse_timeout": 2}) as served:
        request = negotiation.request("SLOW", served.ae_title, [build_context(VERIFICATION)], 0)
        with socket.create_connection(("127.0.0.1", served.dicom_port)) as sock:
            took = closed_within(sock, 2 + 5, request, every=0.3)
        assert took >= 1.5
        wait_for_log(served, "no complete A-ASSOCIATE-RQ")


def test_pdu_deadline_ends_a_trickled_pdu(tmp_path: Path) -> None:
    """Item 4: a PDU trickled a byte at a time must still arrive whole within
    dicom.network_timeout of its first byte (plus a second per dicom.min_receive_rate
    bytes), whatever the gaps between bytes."""
    settings = {"dicom.network_timeout": 2, "dicom.dimse_timeout": 60}
    with serving(tmp_path, settings) as served:
        link = associate(served, [build_context(VERIFICATION)])
        context = next(iter(link.contexts.values()))
        command = commands.encode(
            [
                (commands.AFFECTED_SOP_CLASS, VERIFICATION),
                (commands.COMMAND_FIELD, commands.C_ECHO_RQ),
                (commands.MESSAGE_ID, 1),
                (commands.DATA_SET_TYPE, commands.NO_DATA_SET),
            ]
        )
        whole = pdu.pdata_header(context.id, 0x03, len(command)) + command
        took = closed_within(link.sock, 2 + 5, whole, every=0.3)
        assert took >= 1.5
        wait_for_log(served, "too slow: PDU did not arrive in time")


def test_message_deadline_ends_a_trickle_of_small_pdus(tmp_path: Path) -> None:
    """Item 4: whole PDUs of one byte each, every 0.3 s, keep no message alive past
    dicom.dimse_timeout from its first byte."""
    settings = {"dicom.network_timeout": 60, "dicom.dimse_timeout": 2}
    with serving(tmp_path, settings) as served:
        link = associate(served, [build_context(VERIFICATION)])
        context = next(iter(link.contexts.values()))
        started = time.monotonic()
        with contextlib.suppress(OSError):
            while time.monotonic() - started < 2 + 5:
                link.sock.sendall(pdu.pdata_header(context.id, 0x01, 1) + b"\x00")
                time.sleep(0.3)
        assert time.monotonic() - started < 2 + 5
        wait_for_log(served, "too slow: DIMSE message did not arrive in time")


def test_one_host_cannot_take_every_slot(tmp_path: Path) -> None:
    """Item 4: 64 connections from one host that trickle a byte every 20 s fill only that
    host's share (dicom.max_associations_per_host); C-ECHO from another host is answered
    throughout, and the host over its cap gets A-ASSOCIATE-RJ (transient, local limit)."""
    settings = {"dicom.max_associations_per_host": 4, "dicom.acse_timeout": 30}
    with serving(tmp_path, settings) as served:
        request = negotiation.request("HOG", served.ae_title, [build_context(VERIFICATION)], 0)
        stop = threading.Event()
        with sockets(64, served.dicom_port) as hogs:

            def trickle() -> None:
                while not stop.wait(20):
                    for sock in hogs:
                        with contextlib.suppress(OSError):
                            sock.send(request[:1])

            thread = threading.Thread(target=trickle, daemon=True)
            thread.start()
            try:
                for _ in range(3):
                    assert echo_from(served, "127.0.0.2")
                # While the flood's own refusals are in progress, more connections from
                # that host are closed at once; then they get a proper rejection.
                ae = AE(ae_title="SAMEHOST")
                ae.add_requested_context(Verification)
                deadline = time.monotonic() + 10
                while True:
                    refused = ae.associate("127.0.0.1", served.dicom_port, ae_title=served.ae_title)
                    assert not refused.is_established
                    if refused.is_rejected or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert refused.is_rejected
                rejection = refused.acceptor.primitive
                assert (rejection.result, rejection.result_source, rejection.diagnostic) == (
                    0x02,
                    0x03,
                    0x02,
                )
            finally:
                stop.set()
        wait_for_log(served, "dicom.max_associations_per_host")


# ---------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Served]:
    """A server whose storage folder is a 4 MiB tmpfs, mounted in a mount namespace of its
    own (``unshare``): the disk fills mid-transfer, past the free-space check."""
    storage = tmp_path / "data" / "storage"
    storage.mkdir(parents=True)
    probe = [
        "unshare",
        "-rm",
        "sh",
        "-c",
        f"mount -t tmpfs -o size=4m tmpfs {storage} && test -d {storage}",
    ]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (unshare -rm / mount -t tmpfs)")
    wrapper = [
        "unshare",
        "-rm",
        "sh",
        "-c",
        f'mount -t tmpfs -o size=4m tmpfs {storage} && exec "$@"',
        "sh",
    ]
    with serving(tmp_path, {"dicom.workers": 1}, command_prefix=wrapper) as served:
        yield served


def test_disk_full_mid_store_answers_a700_and_keeps_the_association(
    small_disk: Served, tmp_path: Path
) -> None:
    """Item 7: ENOSPC while a data set streams in: 0xA700 with a comment, the association
    goes on (a smaller instance then fits), no traceback in the log, nothing half-stored."""
    big = tmp_path / "big.dcm"
    small = tmp_path / "small.dcm"
    make_instance(big, rows=1536, columns=1536)  # 4.5 MB: more than the disk holds
    make_instance(small)
    link = associate(
        small_disk, [build_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE]), build_context(VERIFICATION)]
    )
    try:
        for path, expected in ((big, 0xA700), (small, 0x0000)):
            status, comment = store(link, path)
            assert status == expected, (path.name, hex(status or 0), comment)
            if expected:
                assert "staging" in comment
        assert echo(link) == 0
    finally:
        link.release()
    log = small_disk.log_text()
    assert "Traceback" not in log
    assert "cannot write a received data set to staging" in log


# ---------------------------------------------------------------------------- small items


def test_malformed_ae_title_is_one_log_line(tmp_path: Path) -> None:
    """Item 10: a calling AE title with bytes an AE may not hold is rejected (A-ASSOCIATE-RJ,
    calling AE not recognized) with one line in the log, no traceback."""
    with serving(tmp_path) as served:
        request = bytearray(
            negotiation.request("GOOD", served.ae_title, [build_context(VERIFICATION)], 0)
        )
        request[26:42] = b"\xff\xfe\x01\\" + b" " * 12
        with socket.create_connection(("127.0.0.1", served.dicom_port)) as sock:
            sock.settimeout(10)
            sock.sendall(request)
            answer = sock.recv(10)
        assert answer[0] == pdu.ASSOCIATE_RJ
        assert tuple(answer[7:10]) == (0x01, 0x01, 0x03)
        dcmtk("echoscu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port))
        log = served.log_text()
        assert "holds characters an AE title may not" in log
        assert "Traceback" not in log
