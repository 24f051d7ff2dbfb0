"""C-GET and C-MOVE SCP (PS3.4 C.4.2, C.4.3) against DCMTK's getscu, movescu and storescp.

Vesalius streams stored files as they are, so what a peer receives must equal, byte for byte
after the File Meta, what Vesalius stored. pynetdicom plays the peer where exact counts,
statuses, Failed SOP Instance UID Lists or C-CANCEL are needed.
"""

from __future__ import annotations

import logging
import os
import re
import select
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from bench.tools import dcmtk_tool
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from conftest import RunningServer, dcmtk, free_port, make_server, wait_for_port, wait_until
from pynetdicom_peer import configure_streaming
from vesalius.dicom.structure import dataset_offset
from vesalius.dimse.identifiers import keys_from_identifier
from vesalius.errors import QueryError
from vesalius.identity import Identity
from vesalius.services.retrieve import RetrieveService
from vesalius.settings import Modality

DESTINATIONS = ("DEST", "CTONLY", "PYDEST", "DOWN")
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"

# ---------------------------------------------------------------------------------------------
# Helpers shared with test_roundtrip.py


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: everything after the File Meta."""
    with open(path, "rb") as fh:
        fh.seek(dataset_offset(path))
        return fh.read()


def sop_instance_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def files_by_uid(paths: Sequence[Path]) -> dict[str, Path]:
    return {sop_instance_uid(p): p for p in paths}


def received_files(folder: Path) -> dict[str, Path]:
    return files_by_uid(sorted(p for p in folder.iterdir() if p.is_file()))


def storescu_config(pairs: Sequence[tuple[str, str]], path: Path) -> list[str]:
    """A storescu association profile proposing exactly these (SOP class, transfer syntax)
    pairs, one presentation context each; returns the ``-xf FILE PROFILE`` arguments."""
    unique = sorted({(sop, ts) for sop, ts in pairs if sop and ts})
    syntaxes = sorted({ts for _, ts in unique})
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for i, (sop, ts) in enumerate(unique, 1):
        lines.append(f"PresentationContext{i} = {sop}\\TS{syntaxes.index(ts)}")
    lines += ["[[Profiles]]", "[Exact]", "PresentationContexts = Contexts"]
    path.write_text("\n".join(lines) + "\n")
    return ["-xf", str(path), "Exact"]


def file_pair(path: Path) -> tuple[str, str]:
    meta = dcmread(path, stop_before_pixels=True).file_meta
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def store(
    server: RunningServer, files: Sequence[Path], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with one storescu association, each in its own transfer syntax."""
    profile = storescu_config([file_pair(p) for p in files], workdir / "storescu.cfg")
    return dcmtk("storescu", "-v", "-nh", *profile, *server.address, *map(str, files), check=False)


def stored_by_uid(server: RunningServer) -> dict[str, Path]:
    return files_by_uid(server.stored_files())


def start_storescp(ae_title: str, port: int, folder: Path, *options: str) -> subprocess.Popen[str]:
    """DCMTK's storescp writing what it receives, bit-preserved, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = dcmtk_tool("storescp")
    assert exe, "storescp not found: install Debian's dcmtk package"
    proc = subprocess.Popen(
        [exe, "-aet", ae_title, "+B", "-od", str(folder), *options, str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_port(port)
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None
    return proc


def suboperation_counts(output: str) -> dict[str, int]:
    """The final counts getscu prints ("Number of Completed Suboperations : 3")."""
    return {
        kind.lower(): int(n)
        for kind, n in re.findall(r"Number of (\w+) Suboperations\s*:\s*(\d+)", output)
    }


def discard(event: Any) -> int:
    """EVT_C_STORE of a test peer: accept and drop the data set.

    When pynetdicom is configured as the ``vesalius`` SCU commands configure it
    (STORE_RECV_CHUNKED_DATASET, set by other tests in this process), the data set arrives as a
    file, which the handler must remove; otherwise it arrives in memory.
    """
    if event.dataset_path is not None:
        Path(event.dataset_path).unlink()
    return 0x0000


def pynetdicom_get(
    server: RunningServer,
    ds: Dataset,
    model: str,
    pairs: Sequence[tuple[str, str]],
    scp_role: bool = True,
) -> tuple[list[Dataset], dict[str, bytes]]:
    """C-GET with pynetdicom proposing one storage context per (SOP class, transfer syntax)
    pair, with the SCP role unless ``scp_role`` is False; returns the responses' statuses and
    the data sets received."""
    received: dict[str, bytes] = {}
    configure_streaming(server.data_dir / "scu-rx")  # received data sets land in files

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        received[uid] = dataset_bytes(Path(event.dataset_path))
        return discard(event)

    ae = AE(ae_title="PYGETSCU")
    ae.add_requested_context(model)
    unique = sorted(set(pairs))
    for sop, ts in unique:
        ae.add_requested_context(sop, [ts])
    roles = [build_role(sop, scp_role=True) for sop in sorted({sop for sop, _ in unique})]
    if not scp_role:
        roles = []
    assoc = ae.associate(
        "127.0.0.1",
        server.port,
        ae_title=server.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        statuses = [status for status, _ in assoc.send_c_get(ds, model)]
    finally:
        assoc.release()
    return statuses, received


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def ports() -> dict[str, int]:
    return {ae: free_port() for ae in DESTINATIONS}


@pytest.fixture
def qr(tmp_path: Path, database_url: str, ports: dict[str, int]) -> Iterator[RunningServer]:
    """A Vesalius server that knows the move destinations in ``ports`` (none started)."""
    modalities = {
        ae.lower(): Modality(ae.lower(), ae, "127.0.0.1", port) for ae, port in ports.items()
    }
    running = make_server(tmp_path / "data", database_url, modalities=modalities)
    try:
        yield running
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


@pytest.fixture
def storescp(tmp_path: Path, ports: dict[str, int]) -> Iterator[Callable[..., Path]]:
    """Start a storescp for one of the configured destinations; returns its folder."""
    procs: list[subprocess.Popen[str]] = []

    def start(ae_title: str, *options: str) -> Path:
        folder = tmp_path / f"received-{ae_title}"
        procs.append(start_storescp(ae_title, ports[ae_title], folder, *options))
        return folder

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


class Corpus:
    """Synthetic instances made from pydicom's test files, with fresh UIDs.

    PAT1 / study1: series A (CT, explicit VR LE, 3 instances stored out of order) and
    series B (MR, implicit VR LE, 2); PAT1 / study2: series C (CT, 1);
    PAT2 / study3: series D (MR, RLE Lossless, 1).
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder
        self.study = {n: generate_uid() for n in (1, 2, 3)}
        self.series = {s: generate_uid() for s in "ABCD"}
        self.files: dict[str, list[Path]] = {s: [] for s in "ABCD"}
        for number in (3, 1, 2):
            self._make("CT_small.dcm", "PAT1", 1, "A", 1, number)
        for number in (1, 2):
            self._make("MR_small_implicit.dcm", "PAT1", 1, "B", 2, number)
        self._make("CT_small.dcm", "PAT1", 2, "C", 1, 1)
        self._make("MR_small_RLE.dcm", "PAT2", 3, "D", 1, 1)

    def _make(
        self, source: str, patient: str, study: int, series: str, series_no: int, number: int
    ) -> None:
        ds = dcmread(get_testdata_file(source))
        ds.PatientID = patient
        ds.StudyInstanceUID = self.study[study]
        ds.SeriesInstanceUID = self.series[series]
        ds.SeriesNumber = series_no
        ds.InstanceNumber = number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = self.folder / f"{series}{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        self.files[series].append(path)

    def uids(self, *series: str) -> set[str]:
        return {sop_instance_uid(p) for s in series for p in self.files[s]}

    @property
    def all_files(self) -> list[Path]:
        return [p for files in self.files.values() for p in files]


@pytest.fixture
def corpus(qr: RunningServer, tmp_path: Path) -> Corpus:
    """The synthetic corpus, stored in ``qr`` with one storescu association."""
    made = Corpus(tmp_path / "corpus")
    proc = store(qr, made.all_files, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert qr.catalog.count_instances() == 7
    return made


def scu(*contexts: str, store_contexts: Sequence[str] = ()) -> AE:
    ae = AE(ae_title="PYSCU")
    for uid in (*contexts, *store_contexts):
        ae.add_requested_context(uid)
    return ae


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    if level:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# ---------------------------------------------------------------------------------------------
# C-GET


def test_get_at_every_level_is_bit_exact(
    qr: RunningServer, corpus: Corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vesalius.audit")
    stored = stored_by_uid(qr)
    s1, s2 = corpus.study[1], corpus.study[2]
    image_uids = sorted(corpus.uids("A"))[:2]
    cases: list[tuple[list[str], set[str]]] = [
        (["-P", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PAT1"], corpus.uids(*"ABC")),
        (["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={s1}\\{s2}"],
         corpus.uids(*"ABC")),
        ([
            "-S", "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={s1}",
            "-k", f"SeriesInstanceUID={corpus.series['A']}",
        ], corpus.uids("A")),
        ([
            "-P", "-k", "QueryRetrieveLevel=IMAGE", "-k", "PatientID=PAT1",
            "-k", f"StudyInstanceUID={s1}", "-k", f"SeriesInstanceUID={corpus.series['A']}",
            "-k", "SOPInstanceUID=" + "\\".join(image_uids),
        ], set(image_uids)),
        # A higher-level key that does not fit narrows the match to nothing: success, 0 sent.
        (["-P", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT2",
          "-k", f"StudyInstanceUID={s2}"], set()),
    ]  # fmt: skip
    for i, (args, expected) in enumerate(cases):
        out = tmp_path / f"get{i}"
        out.mkdir()
        proc = dcmtk("getscu", "-v", "+B", "-od", str(out), *args, *qr.address)
        received = received_files(out)
        assert set(received) == expected, args
        counts = suboperation_counts(proc.stderr + proc.stdout)
        assert counts.get("completed", 0) == len(expected)
        assert counts.get("failed", 0) == 0
        for uid, path in received.items():
            source = dcmread(stored[uid], stop_before_pixels=True).file_meta.TransferSyntaxUID
            got = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            if source == "1.2.840.10008.1.2":
                # Of getscu's proposal (Explicit VR LE, Big Endian, Implicit VR LE in one
                # context) Vesalius accepts Explicit VR LE, so the instance stored in Implicit
                # VR is re-encoded (lossless) and must keep every element.
                assert got == "1.2.840.10008.1.2.1"
                assert dcmread(path) == dcmread(stored[uid])
            else:
                assert got == source
                assert dataset_bytes(path) == dataset_bytes(stored[uid])

    records = [r.getMessage() for r in caplog.records if r.name == "vesalius.audit"]
    transfers = [r for r in records if '"instances-transferred"' in r]
    assert len(transfers) == len(cases)
    assert all('"who": "ae:GETSCU@127.0.0.1"' in r for r in transfers)
    assert '"operation": "C-GET"' in transfers[0] and '"completed": 6' in transfers[0]


def test_get_order_and_match_limit(qr: RunningServer, corpus: Corpus) -> None:
    """Instances go out by series number then instance number, whatever the arrival order;
    more matches than sub-operation counts can express (65535) are refused with a comment."""
    keys = keys_from_identifier(identifier("STUDY", StudyInstanceUID=corpus.study[1]), "STUDY")
    plan = qr.archive.retrieve.plan(keys, Identity.system(), "C-GET")
    numbers = []
    for instance in plan.instances:
        with qr.archive.retrieve.open(instance) as stored:
            ds = dcmread(stored, stop_before_pixels=True)
        numbers.append((int(ds.SeriesNumber), int(ds.InstanceNumber)))
    assert numbers == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    small = RetrieveService(qr.catalog, qr.stores, oversight=qr.archive.oversight, max_matches=4)
    with pytest.raises(QueryError, match="over 4 instances"):
        small.plan(keys, Identity.system(), "C-GET")
    assert len(small.plan(
        keys_from_identifier(identifier("SERIES", SeriesInstanceUID=corpus.series["A"]), "STUDY"),
        Identity.system(),
        "C-GET",
    ).instances) == 3  # fmt: skip

    # The same refusal over DIMSE, with the running archive's limit lowered to 4.
    qr.archive.retrieve.max_matches = 4
    ds = identifier("STUDY", StudyInstanceUID=corpus.study[1])
    model = StudyRootQueryRetrieveInformationModelGet
    statuses, received = pynetdicom_get(qr, ds, model, [(CTImageStorage, EXPLICIT_VR_LE)])
    assert statuses[-1].Status == 0xC000
    assert "over 4 instances match" in statuses[-1].ErrorComment
    assert received == {}


def test_get_compressed_to_uncompressed_peer_decompresses(
    qr: RunningServer, corpus: Corpus, tmp_path: Path
) -> None:
    """getscu proposes only uncompressed syntaxes by default: the RLE instance is decompressed
    for it by the converter WADO-RS uses (lossless, the same pixels), and the stored file does
    not change. (Until issue 12 this was a failed sub-operation, 0xA702, where Orthanc
    delivered.)"""
    out = tmp_path / "get"
    out.mkdir()
    [stored] = [stored_by_uid(qr)[uid] for uid in corpus.uids("D")]
    before = stored.read_bytes()
    args = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={corpus.study[3]}"]
    proc = dcmtk("getscu", "-v", "+B", "-od", str(out), *args, *qr.address)
    text = proc.stderr + proc.stdout
    assert suboperation_counts(text) == {"remaining": 0, "completed": 1, "failed": 0, "warning": 0}
    [received] = list(out.iterdir())
    got = dcmread(received)
    assert got.file_meta.TransferSyntaxUID in (EXPLICIT_VR_LE, "1.2.840.10008.1.2")
    original = dcmread(stored)
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert (got.pixel_array == original.pixel_array).all()
    assert stored.read_bytes() == before

    # getscu proposes RLE in one context with the uncompressed syntaxes, and Vesalius accepts
    # an uncompressed one first; a requestor proposing RLE on its own gets the file as stored.
    ds = identifier("STUDY", StudyInstanceUID=corpus.study[3])
    model = StudyRootQueryRetrieveInformationModelGet
    statuses, received = pynetdicom_get(qr, ds, model, [(MRImageStorage, RLE_LOSSLESS)])
    assert (statuses[-1].Status, statuses[-1].NumberOfCompletedSuboperations) == (0x0000, 1)
    [(uid, data)] = received.items()
    assert data == dataset_bytes(stored_by_uid(qr)[uid])

    # A storage context proposed without the SCP role cannot carry C-GET sub-operations.
    ds = identifier("SERIES", SeriesInstanceUID=corpus.series["C"])
    pair = (CTImageStorage, EXPLICIT_VR_LE)
    statuses, received = pynetdicom_get(qr, ds, model, [pair], scp_role=False)
    assert (statuses[-1].Status, statuses[-1].NumberOfFailedSuboperations) == (0xA702, 1)
    assert received == {}
    statuses, received = pynetdicom_get(qr, ds, model, [pair])
    assert statuses[-1].Status == 0x0000 and set(received) == corpus.uids("C")


def _get_scu() -> AE:
    ae = scu(
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelGet,
        store_contexts=[CTImageStorage, MRImageStorage],
    )
    return ae


def test_bad_identifiers_fail_with_a_comment(qr: RunningServer, corpus: Corpus) -> None:
    ae = _get_scu()
    roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    assoc = ae.associate(
        "127.0.0.1",
        qr.port,
        ae_title=qr.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, discard)],
    )
    assert assoc.is_established
    try:
        study = StudyRootQueryRetrieveInformationModelGet
        patient = PatientRootQueryRetrieveInformationModelGet
        cases = [
            (study, identifier("", StudyInstanceUID=corpus.study[1]), "QueryRetrieveLevel"),
            (study, identifier("PATIENT", PatientID="PAT1"), "not in STUDY Root"),
            (study, identifier("STUDY"), "StudyInstanceUID is required"),
            (patient, identifier("PATIENT"), "PatientID is required"),
            (study, identifier("SERIES", SeriesInstanceUID="1.2.x"), "invalid UID"),
            (study, identifier("IMAGE", SOPInstanceUID="*"), "invalid UID"),
        ]
        for model, ds, comment in cases:
            responses = list(assoc.send_c_get(ds, model))
            status, _ = responses[-1]
            assert status.Status == 0xA900, comment
            assert comment in status.ErrorComment
        # The association still serves a good request afterwards.
        ok = identifier("SERIES", SeriesInstanceUID=corpus.series["C"])
        assert list(assoc.send_c_get(ok, study))[-1][0].Status == 0x0000
    finally:
        assoc.release()


def test_cancel_get(qr: RunningServer, corpus: Corpus) -> None:
    """C-CANCEL (PS3.7 9.3.2.3) sent while the first sub-operation is being answered."""
    state: dict[str, Any] = {"stored": []}

    def on_store(event: Any) -> int:
        if not state["stored"]:
            event.assoc.send_c_cancel(1, state["context_id"])
        state["stored"].append(str(event.request.AffectedSOPInstanceUID))
        return discard(event)

    ae = _get_scu()
    roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    assoc = ae.associate(
        "127.0.0.1",
        qr.port,
        ae_title=qr.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        model = PatientRootQueryRetrieveInformationModelGet
        state["context_id"] = next(
            cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == model
        )
        responses = list(assoc.send_c_get(identifier("PATIENT", PatientID="PAT1"), model, msg_id=1))
    finally:
        assoc.release()
    final = responses[-1][0]
    assert final.Status == 0xFE00
    assert final.NumberOfCompletedSuboperations == 1
    assert final.NumberOfRemainingSuboperations == 5
    assert final.NumberOfFailedSuboperations == 0
    assert len(state["stored"]) == 1


# ---------------------------------------------------------------------------------------------
# C-MOVE


def test_move_to_storescp_is_bit_exact(
    qr: RunningServer, corpus: Corpus, storescp: Callable[..., Path], tmp_path: Path
) -> None:
    folder = storescp("DEST", "+xa")
    stored = stored_by_uid(qr)
    uids = "\\".join(corpus.study.values())
    args = [
        "-S",
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={uids}",
    ]
    proc = dcmtk("movescu", "-v", *args, *qr.address)
    assert "Received Final Move Response (Success)" in proc.stderr + proc.stdout
    received = received_files(folder)
    assert set(received) == corpus.uids(*"ABCD")
    for uid, path in received.items():
        assert file_pair(path) == file_pair(stored[uid])
        assert dataset_bytes(path) == dataset_bytes(stored[uid])


def test_move_patient_root_counts_and_pending(
    qr: RunningServer, corpus: Corpus, storescp: Callable[..., Path]
) -> None:
    folder = storescp("DEST", "+xa")
    ae = scu(PatientRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", qr.port, ae_title=qr.ae_title)
    assert assoc.is_established
    try:
        model = PatientRootQueryRetrieveInformationModelMove
        responses = [
            s for s, _ in assoc.send_c_move(identifier("PATIENT", PatientID="PAT1"), "DEST", model)
        ]
        empty = [
            s
            for s, _ in assoc.send_c_move(identifier("PATIENT", PatientID="NOBODY"), "DEST", model)
        ]
    finally:
        assoc.release()
    pending = [r for r in responses if r.Status == 0xFF00]
    assert [r.NumberOfRemainingSuboperations for r in pending] == [5, 4, 3, 2, 1, 0]
    assert [r.NumberOfCompletedSuboperations for r in pending] == [1, 2, 3, 4, 5, 6]
    assert all(r.NumberOfFailedSuboperations == 0 for r in pending)
    final = responses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 6)
    assert set(received_files(folder)) == corpus.uids(*"ABC")
    assert [(r.Status, r.NumberOfCompletedSuboperations) for r in empty] == [(0x0000, 0)]


def test_move_unknown_or_unreachable_destination(
    qr: RunningServer, corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vesalius.audit")
    args = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={corpus.study[1]}"]
    for destination in ("NOWHERE", "DOWN"):  # DOWN is configured but nothing listens there
        proc = dcmtk("movescu", "-v", "-aem", destination, *args, *qr.address, check=False)
        assert "MoveDestinationUnknown" in proc.stderr + proc.stdout, destination
    refused = [r.getMessage() for r in caplog.records if r.name == "vesalius.audit"]
    assert any('"reason": "unknown destination"' in r and "NOWHERE" in r for r in refused)
    assert any('"outcome": "incomplete"' in r and '"DOWN"' in r for r in refused)


def test_move_jpeg_to_a_default_storescp_decompresses(
    qr: RunningServer, storescp: Callable[..., Path], tmp_path: Path
) -> None:
    """A JPEG-stored study C-MOVEd to a default DCMTK storescp, which accepts uncompressed
    syntaxes only, arrives decompressed (as Orthanc delivers it), not 0xA702; the stored file
    stays as it was."""
    source = dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    study = generate_uid()
    source.StudyInstanceUID = study
    source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "jpeg.dcm"
    source.save_as(path, enforce_file_format=True)
    dcmtk("storescu", "-xy", *qr.address, str(path))  # proposes JPEG baseline: stored as is
    [stored] = stored_by_uid(qr).values()
    before = stored.read_bytes()
    assert dcmread(stored).file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    folder = storescp("DEST")  # storescp's defaults: uncompressed syntaxes only
    args = ["-S", "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY", "-k"]
    proc = dcmtk("movescu", "-v", *args, f"StudyInstanceUID={study}", *qr.address)
    assert "Received Final Move Response (Success)" in proc.stderr + proc.stdout
    [received] = received_files(folder).values()
    got = dcmread(received)
    assert not got.file_meta.TransferSyntaxUID.is_compressed
    assert got.pixel_array.shape == source.pixel_array.shape
    assert stored.read_bytes() == before


def test_move_to_destination_accepting_only_ct(
    qr: RunningServer, corpus: Corpus, storescp: Callable[..., Path], tmp_path: Path
) -> None:
    """storescp limited by a profile to CT Image Storage: MR sub-operations fail."""
    config = tmp_path / "ctonly.cfg"
    config.write_text(
        "[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LittleEndianExplicit\n"
        "TransferSyntax2 = LittleEndianImplicit\n"
        "[[PresentationContexts]]\n[CT]\nPresentationContext1 = CTImageStorage\\Uncompressed\n"
        "PresentationContext2 = VerificationSOPClass\\Uncompressed\n"
        "[[Profiles]]\n[CTOnly]\nPresentationContexts = CT\n"
    )
    folder = storescp("CTONLY", "-xf", str(config), "CTOnly")
    ae = scu(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", qr.port, ae_title=qr.ae_title)
    assert assoc.is_established
    model = StudyRootQueryRetrieveInformationModelMove
    try:
        mixed = list(
            assoc.send_c_move(
                identifier("STUDY", StudyInstanceUID=corpus.study[1]), "CTONLY", model
            )
        )
        mr_only = list(
            assoc.send_c_move(
                identifier("STUDY", StudyInstanceUID=corpus.study[3]), "CTONLY", model
            )
        )
        bad = list(
            assoc.send_c_move(
                identifier("SERIES", StudyInstanceUID=corpus.study[1]), "CTONLY", model
            )
        )
    finally:
        assoc.release()
    status, failed = mixed[-1]
    assert status.Status == 0xB000
    assert (
        status.NumberOfCompletedSuboperations,
        status.NumberOfFailedSuboperations,
        status.NumberOfWarningSuboperations,
    ) == (3, 2, 0)
    assert failed is not None
    assert set(failed.FailedSOPInstanceUIDList) == corpus.uids("B")
    assert set(received_files(folder)) == corpus.uids("A")
    status, failed = mr_only[-1]
    assert (status.Status, status.NumberOfFailedSuboperations) == (0xA702, 1)
    assert failed is not None and failed.FailedSOPInstanceUIDList == sorted(corpus.uids("D"))[0]
    status, _ = bad[-1]
    assert status.Status == 0xA900
    assert "SeriesInstanceUID is required" in status.ErrorComment


def test_cancel_move(qr: RunningServer, corpus: Corpus, ports: dict[str, int]) -> None:
    """C-CANCEL during a C-MOVE, to a pynetdicom destination that cancels on its first store.

    The destination answers its first C-STORE only once the server has received the cancel,
    so the server sees it before the next sub-operation whatever the scheduling.
    """
    state: dict[str, Any] = {"stored": []}

    def server_got_cancel() -> bool:
        # Observed, not changed: the C-CANCEL waits, unread, on the socket of the server's
        # association with the C-MOVE requestor until the C-MOVE checks for it.
        sockets = [c.sock for c in qr.dimse.active() if c.association is not None]
        return any(select.select([s], [], [], 0)[0] for s in sockets if s.fileno() >= 0)

    def on_store(event: Any) -> int:
        if not state["stored"]:
            state["move_assoc"].send_c_cancel(1, state["context_id"])
            wait_until(server_got_cancel, 10, "the server to receive C-CANCEL")
        state["stored"].append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    dest = AE(ae_title="PYDEST")
    dest.add_supported_context(CTImageStorage)
    dest.add_supported_context(MRImageStorage, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
    listener = dest.start_server(
        ("127.0.0.1", ports["PYDEST"]), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        ae = scu(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", qr.port, ae_title=qr.ae_title)
        assert assoc.is_established
        state["move_assoc"] = assoc
        state["context_id"] = assoc.accepted_contexts[0].context_id
        try:
            ds = identifier("STUDY", StudyInstanceUID=corpus.study[1])
            responses = list(
                assoc.send_c_move(
                    ds, "PYDEST", StudyRootQueryRetrieveInformationModelMove, msg_id=1
                )
            )
        finally:
            assoc.release()
    finally:
        listener.shutdown()
    final = responses[-1][0]
    assert final.Status == 0xFE00
    assert (final.NumberOfCompletedSuboperations, final.NumberOfRemainingSuboperations) == (1, 4)
    assert len(state["stored"]) == 1
