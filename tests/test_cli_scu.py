"""`vesalius echo|send|find|move|get` run as a user runs them (subprocesses), against real peers:
the Vesalius server, DCMTK's storescp (bit-preserving) and DCMTK's Q/R server dcmqrscp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench.tools import dcmtk_tool
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from conftest import RunningServer, dcmtk, free_port, make_server, run_cli, wait_for_port
from vesalius.dicom.structure import dataset_offset
from vesalius.dicom.uids import STORAGE_SOP_CLASSES
from vesalius.dimse.scu import MAX_CONTEXTS, StoreItem, association_batches, get_contexts
from vesalius.settings import Modality

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))
J2K = Path(get_testdata_file("JPEG2000.dcm"))  # Secondary Capture, JPEG 2000 (…4.91)
RTPLAN = Path(get_testdata_file("rtplan.dcm"))  # its File Meta names another instance
SR = Path(get_testdata_file("reportsi.dcm"))
#: One file per encoding, with distinct SOP Instance UIDs.
ENCODINGS = [
    CT,  # Explicit VR Little Endian
    J2K,
    Path(get_testdata_file("MR_small_implicit.dcm")),
    Path(get_testdata_file("SC_rgb_small_odd_big_endian.dcm")),
    Path(get_testdata_file("SC_rgb_jpeg_gdcm.dcm")),  # JPEG Lossless
    Path(get_testdata_file("rtdose_rle.dcm")),  # RLE Lossless
]
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
J2K_STUDY = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
JPEG2000 = "1.2.840.10008.1.2.4.91"


def vesalius(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user would, in this process (conftest.run_cli; the large
    send, which measures its memory, runs in a process of its own)."""
    return run_cli(*args, env=env)


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: everything after the File Meta."""
    with open(path, "rb") as fh:
        fh.seek(dataset_offset(path))
        return fh.read()


def by_uid(folder: Path) -> dict[str, Path]:
    files = [p for p in folder.iterdir() if p.is_file()]
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def start(*command: str, log: Path) -> subprocess.Popen[bytes]:
    exe = dcmtk_tool(command[0])
    assert exe, f"{command[0]} not found: install Debian's dcmtk package"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [exe, *command[1:]],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class StoreSCP:
    ae_title: str
    port: int
    folder: Path

    @property
    def target(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"


StoreSCPFactory = Callable[..., StoreSCP]


@pytest.fixture
def storescp_factory(tmp_path: Path) -> Iterator[StoreSCPFactory]:
    """Start DCMTK storescp, bit-preserving (+B), writing into a fresh folder."""
    running: list[subprocess.Popen[bytes]] = []

    def factory(*options: str, ae_title: str = "STORE") -> StoreSCP:
        port = free_port()
        folder = tmp_path / f"storescp-{port}"
        folder.mkdir()
        proc = start(
            "storescp", "-aet", ae_title, "+B", "-od", str(folder), *options, str(port),
            log=tmp_path / f"storescp-{port}.log",
        )  # fmt: skip
        running.append(proc)
        wait_for_port(port)
        assert proc.poll() is None
        return StoreSCP(ae_title, port, folder)

    yield factory
    for proc in running:
        stop(proc)


@dataclass
class QRSCP:
    port: int
    dest: StoreSCP

    @property
    def target(self) -> str:
        return f"QRSCP@127.0.0.1:{self.port}"


@pytest.fixture
def dcmqrscp(tmp_path: Path, storescp_factory: StoreSCPFactory) -> Iterator[QRSCP]:
    """DCMTK's Q/R server holding CT, MR, JPEG 2000 and RT Plan instances, with a storescp
    known to it as the C-MOVE destination STORE. It forks per association (its
    --single-process mode crashes after the first association in DCMTK 3.6.7)."""
    dest = storescp_factory("+xa")
    db = tmp_path / "qrdb"
    db.mkdir()
    for source in (CT, MR, J2K, RTPLAN):
        shutil.copy(source, db / source.name)
    dcmtk("dcmqridx", str(db), *sorted(str(p) for p in db.glob("*.dcm")))
    port = free_port()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        f"HostTable BEGIN\nstore = (STORE, 127.0.0.1, {dest.port})\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQRSCP {db} RW (100, 1024mb) ANY\nAETable END\n"
    )
    proc = start("dcmqrscp", "-c", str(config), "+xw", log=tmp_path / "dcmqrscp.log")
    try:
        wait_for_port(port)
        assert proc.poll() is None
        yield QRSCP(port, dest)
    finally:
        stop(proc)


def target_of(server: RunningServer) -> str:
    return f"{server.ae_title}@127.0.0.1:{server.port}"


# ---------------------------------------------------------------------------------------------
# echo


def test_echo_by_address_and_by_modality_name(server: RunningServer) -> None:
    proc = vesalius("echo", target_of(server))
    assert proc.returncode == 0, proc.stderr
    assert "0x0000 (Success)" in proc.stdout
    env = {"VESALIUS_MODALITY_PACS": target_of(server)}
    proc = vesalius("echo", "PACS", "--aet", "OPERATOR", env=env)
    assert proc.returncode == 0, proc.stderr


def test_echo_failures(tmp_path: Path) -> None:
    proc = vesalius("echo", f"NOBODY@127.0.0.1:{free_port()}")
    assert proc.returncode == 1
    assert "no association with NOBODY@127.0.0.1" in proc.stderr
    proc = vesalius("echo", "UNKNOWN_NAME")
    assert proc.returncode == 2
    assert "unknown modality" in proc.stderr


def test_echo_rejected_called_ae(tmp_path: Path) -> None:
    running = make_server(
        tmp_path / "data", f"sqlite:///{tmp_path / 'i.sqlite'}", **{"dicom.require_called_ae": True}
    )
    try:
        proc = vesalius("echo", f"WRONG@127.0.0.1:{running.port}")
        assert proc.returncode == 1
        assert "rejected the association" in proc.stderr
        assert "Called AE title not recognised" in proc.stderr
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


# ---------------------------------------------------------------------------------------------
# send


def test_send_folder_to_vesalius(server: RunningServer, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    shutil.copy(CT, tree / "ct.dcm")
    shutil.copy(MR, tree / "a" / "mr.dcm")
    shutil.copy(J2K, tree / "a" / "b" / "j2k.dcm")
    (tree / "a" / "notes.txt").write_text("not DICOM")
    proc = vesalius("send", str(tree), str(SR), "--to", target_of(server))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 files: 4 succeeded, 0 with warnings, 0 failed" in proc.stdout
    assert "1 files in folders skipped" in proc.stdout
    assert "4/4" in proc.stderr  # the progress bar
    assert server.catalog.count_instances() == 4
    stored = {uid_of(p): dataset_bytes(p) for p in server.stored_files()}
    for source in (CT, MR, J2K, SR):
        assert stored[uid_of(source)] == dataset_bytes(source)


def test_send_is_bit_exact_to_storescp(storescp_factory: StoreSCPFactory, tmp_path: Path) -> None:
    scp: StoreSCP = storescp_factory("+xa")
    proc = vesalius("send", *map(str, ENCODINGS), "--to", scp.target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    received = by_uid(scp.folder)
    assert len(received) == len(ENCODINGS)
    for source in ENCODINGS:
        got = received[uid_of(source)]
        assert dataset_bytes(got) == dataset_bytes(source), source.name
        sent_syntax = dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID == sent_syntax


def test_send_reports_failures(storescp_factory: StoreSCPFactory, tmp_path: Path) -> None:
    scp: StoreSCP = storescp_factory()  # uncompressed transfer syntaxes only
    junk = tmp_path / "junk.dcm"
    junk.write_text("not DICOM at all")
    proc = vesalius("send", str(CT), str(J2K), str(junk), str(RTPLAN), "--to", scp.target)
    assert proc.returncode == 1
    assert "4 files: 1 succeeded, 0 with warnings, 3 failed" in proc.stdout
    assert "UID differs from the data set's" in proc.stdout
    assert "not sent: peer did not accept Secondary Capture Image Storage in JPEG 2000" in (
        proc.stdout
    )
    assert f"failure: {junk}: not sent: not a DICOM Part 10 file" in proc.stdout
    assert list(by_uid(scp.folder)) == [uid_of(CT)]


def large_file(path: Path, frames: int) -> Path:
    """CT_small's header with ``frames`` 512x512 16-bit frames of zeros, written in chunks."""
    ds = dcmread(CT)
    del ds.PixelData
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, frames
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path)
    frame = bytes(512 * 512 * 2)
    with open(path, "ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (len(frame) * frames).to_bytes(4, "little"))
        for _ in range(frames):
            fh.write(frame)
    return path


def test_send_streams_a_large_file(storescp_factory: StoreSCPFactory, tmp_path: Path) -> None:
    """A 320 MiB file goes out in PDU-sized pieces: the sender's memory stays far below it."""
    big = large_file(tmp_path / "big.dcm", frames=640)
    scp = storescp_factory("--ignore")  # receive, do not write
    # The peak RSS of this process image (VmHWM). Not getrusage's ru_maxrss: Linux carries the
    # forked parent's high-water mark across exec into it, so it reported pytest's own size.
    report = (
        "import atexit, sys\n"
        "def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            print('VMHWM_KIB', line.split()[1], file=sys.stderr)\n"
        "atexit.register(peak)\n"
        "from vesalius.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", report, "send", str(big), "--to", scp.target],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 succeeded" in proc.stdout
    max_rss = int(proc.stderr.rsplit("VMHWM_KIB", 1)[1].split()[0]) * 1024
    assert max_rss < big.stat().st_size / 2


def _tiny(sop_class: str, path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "MANY"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_send_more_pairs_than_one_association_holds(tmp_path: Path) -> None:
    classes = [uid for _, uid in STORAGE_SOP_CLASSES][: MAX_CONTEXTS + 3]
    folder = tmp_path / "many"
    folder.mkdir()
    for i, uid in enumerate(classes):
        _tiny(uid, folder / f"{i:03}.dcm")
    items = [
        StoreItem(folder / f"{i:03}.dcm", uid, str(i), ExplicitVRLittleEndian)
        for i, uid in enumerate(classes)
    ]
    batches = association_batches(items)
    assert [len(pairs) for pairs, _ in batches] == [MAX_CONTEXTS, 3]
    assert sum(len(batch) for _, batch in batches) == len(classes)

    running = make_server(tmp_path / "data", f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        proc = vesalius("send", str(folder), "--to", target_of(running))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert running.catalog.count_instances() == len(classes)
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


# ---------------------------------------------------------------------------------------------
# find, move, get against dcmqrscp


def test_find_table_json_and_models(dcmqrscp: QRSCP) -> None:
    proc = vesalius("find", dcmqrscp.target, "--level", "STUDY")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:3] == ["StudyDate", "PatientName", "PatientID"]
    assert len(rows) == 4
    assert any("CompressedSamples^CT1" in row and CT_STUDY in row for row in rows)
    assert "4 matches, 0x0000 (Success)" in proc.stderr

    proc = vesalius(
        "find", dcmqrscp.target, "-S", "-L", "SERIES",
        "-k", f"StudyInstanceUID={J2K_STUDY}", "-k", "Modality=", "-k", "0020,000E=", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    matches = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(matches) == 1
    assert matches[0]["0020000D"]["Value"] == [J2K_STUDY]
    assert matches[0]["0020000E"]["Value"][0].startswith("1.3.6.1.4.1.5962")

    proc = vesalius(
        "find", dcmqrscp.target, "-P", "--level", "PATIENT",
        "-k", "PatientName=CompressedSamples*", "-k", "0010,0020=",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["PatientName", "PatientID"]
    assert sorted(line.split()[1] for line in lines[1:]) == ["1CT1", "4MR1", "8NM1"]


def test_find_rejects_bad_keys(dcmqrscp: QRSCP) -> None:
    proc = vesalius("find", dcmqrscp.target, "-k", "NoSuchKeyword=1")
    assert proc.returncode == 2
    assert "unknown keyword 'NoSuchKeyword'" in proc.stderr
    proc = vesalius("find", dcmqrscp.target, "-P", "-S")
    assert proc.returncode == 2


def test_move_to_storescp(dcmqrscp: QRSCP) -> None:
    proc = vesalius(
        "move", dcmqrscp.target, "--dest", "STORE", "-k", f"StudyInstanceUID={CT_STUDY}"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0x0000 (Success); completed 1, failed 0, warning 0" in proc.stdout
    assert "1/1" in proc.stderr  # progress from the pending counts
    assert list(by_uid(dcmqrscp.dest.folder)) == [uid_of(CT)]

    proc = vesalius(
        "move", dcmqrscp.target, "-P", "--dest", "STORE", "-L", "PATIENT", "-k", "PatientID=4MR1"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert uid_of(MR) in by_uid(dcmqrscp.dest.folder)


def test_move_failures(dcmqrscp: QRSCP) -> None:
    proc = vesalius(
        "move", dcmqrscp.target, "--dest", "NOWHERE", "-k", f"StudyInstanceUID={CT_STUDY}"
    )
    assert proc.returncode == 1
    assert "0xA801 (Failure: Move destination unknown)" in proc.stdout
    # dcmqrscp proposes only uncompressed syntaxes and cannot decode JPEG 2000.
    proc = vesalius(
        "move", dcmqrscp.target, "--dest", "STORE", "-k", f"StudyInstanceUID={J2K_STUDY}"
    )
    assert proc.returncode == 1
    assert "failed 1" in proc.stdout
    assert f"failed: {uid_of(J2K)}" in proc.stdout


def test_get_matches_dcmtk_getscu(dcmqrscp: QRSCP, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = vesalius("get", dcmqrscp.target, "--out", str(out), "-k", f"StudyInstanceUID={CT_STUDY}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed 1, failed 0, warning 0; 1 files written" in proc.stdout
    assert "1/1" in proc.stderr
    ours = out / f"{uid_of(CT)}.dcm"
    assert sorted(out.iterdir()) == [ours]  # nothing half-written left behind

    reference = tmp_path / "getscu"
    reference.mkdir()
    dcmtk(
        "getscu", "-S", "+B", "-od", str(reference), "-aec", "QRSCP", "127.0.0.1",
        str(dcmqrscp.port), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_STUDY}",
    )  # fmt: skip
    theirs = by_uid(reference)[uid_of(CT)]
    assert dataset_bytes(ours) == dataset_bytes(theirs)
    meta = dcmread(ours, stop_before_pixels=True).file_meta
    assert (
        meta.TransferSyntaxUID
        == dcmread(theirs, stop_before_pixels=True).file_meta.TransferSyntaxUID
    )


def test_get_compressed_with_chosen_syntax(dcmqrscp: QRSCP, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["get", dcmqrscp.target, "--out", str(out), "-k", f"StudyInstanceUID={J2K_STUDY}"]
    # dcmqrscp uses the first context accepted for the SOP class (uncompressed by default)
    # and cannot decode JPEG 2000: the failure is reported with the instance's UID.
    proc = vesalius(*args)
    assert proc.returncode == 1
    assert f"failed: {uid_of(J2K)}" in proc.stdout
    proc = vesalius(*args, "--sop-class", "SecondaryCaptureImageStorage", "-x", JPEG2000)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = out / f"{uid_of(J2K)}.dcm"
    assert dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000


def test_get_context_plan_fits_one_association() -> None:
    contexts, roles = get_contexts("study")
    assert len(contexts) == MAX_CONTEXTS
    assert {str(r.sop_class_uid) for r in roles} >= {SECONDARY_CAPTURE, CT_IMAGE}
    pairs = {(str(cx.abstract_syntax), tuple(map(str, cx.transfer_syntax))) for cx in contexts}
    assert (SECONDARY_CAPTURE, (JPEG2000,)) in pairs
    contexts, roles = get_contexts("patient", [SECONDARY_CAPTURE], [JPEG2000])
    assert [str(cx.abstract_syntax) for cx in contexts][1:] == [SECONDARY_CAPTURE]
    assert len(roles) == 1


# ---------------------------------------------------------------------------------------------
# move and get against Vesalius


def test_get_and_move_from_vesalius(tmp_path: Path, storescp_factory: StoreSCPFactory) -> None:
    dest: StoreSCP = storescp_factory("+xa")
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        modalities={"dest": Modality("dest", dest.ae_title, "127.0.0.1", dest.port)},
    )
    try:
        target = target_of(running)
        proc = vesalius("send", str(J2K), str(CT), "--to", target)
        assert proc.returncode == 0, proc.stdout + proc.stderr

        out = tmp_path / "out"
        proc = vesalius("get", target, "--out", str(out), "-k", f"StudyInstanceUID={J2K_STUDY}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert dataset_bytes(out / f"{uid_of(J2K)}.dcm") == dataset_bytes(J2K)

        proc = vesalius(
            "move", target, "--dest", dest.ae_title, "-k", f"StudyInstanceUID={J2K_STUDY}"
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert dataset_bytes(by_uid(dest.folder)[uid_of(J2K)]) == dataset_bytes(J2K)
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def test_get_refuses_an_unsafe_sop_instance_uid(tmp_path: Path) -> None:
    """A peer's UID never becomes a path outside --out: a C-STORE sub-operation whose SOP
    Instance UID is not a UID is refused (0xC000) and nothing is written."""
    evil = dcmread(CT)
    evil.SOPInstanceUID = "../../escaped"
    evil.file_meta.MediaStorageSOPInstanceUID = evil.SOPInstanceUID
    ae = AE("EVIL")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)

    def handle_get(event: object) -> Iterator[object]:
        yield 1
        yield 0xFF00, evil

    peer = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_GET, handle_get)]
    )
    out = tmp_path / "a" / "out"
    try:
        port = peer.server_address[1]
        proc = vesalius("get", f"EVIL@127.0.0.1:{port}", "--out", str(out), "-k", "PatientID=x")
    finally:
        peer.shutdown()
    assert proc.returncode == 1
    assert "refused: '../../escaped': 0xC000 SOP Instance UID is not a valid UID" in proc.stdout
    assert "failed 1" in proc.stdout
    assert list(out.iterdir()) == []
    assert list(tmp_path.rglob("escaped*")) == []
