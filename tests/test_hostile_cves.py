"""Regression tests for the attack classes of our peers' CVEs (docs/security.md, "Attack classes
tested"), each against a real ``vesalius serve`` process: path traversal in UIDs, URLs and file
names (DCMTK CVE-2022-2119/2120, pynetdicom issues 823 and 1092), malformed and oversized PDUs,
lengths and nesting (DCMTK CVE-2021-41687..41690 and CVE-2022-2121, Orthanc CVE-2026-5437), HTTP
framing that could desync a proxy (request smuggling), XML bodies with entities (XXE) and URLs
the server could be made to fetch (SSRF; dcm4chee-arc GHSA-9g23-9gp3-gcq8), and zip files given
to ``vesalius import`` (Orthanc CVE-2026-5439).

Every test asserts the answer (a DIMSE failure status, an A-ABORT, an HTTP 4xx with its reason),
that nothing was stored or left in staging, that no file appeared outside the data folder, and
that the server still answers C-ECHO and ``/health`` afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import dcmtk, wait_until
from dimse_client import echo
from served import Served, serve
from synth import CT_IMAGE_STORAGE, make_instance
from vesalius.dicom.structure import dataset_offset
from vesalius.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE, VERIFICATION, is_valid_uid
from vesalius.dimse import commands, pdu
from vesalius.dimse.associate_pdu import AssociateRequest, UserInformation, encode_request
from vesalius.dimse.association import Association
from vesalius.dimse.contexts import build_context
from vesalius.dimse.requestor import connect
from vesalius.storage.folder import FolderStorage

MIB = 1 << 20
BOUNDARY = "cve-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
#: A name a traversal would create: looked for in the server's folder, /tmp and the cwd.
CANARY = f"vesalius-hostile-canary-{os.getpid()}"


# ---------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module; each test checks it is left as it found it."""
    root = tmp_path_factory.mktemp("cves")
    viewer = root / "ohif"
    (viewer / "3.13.2").mkdir(parents=True)
    (viewer / "3.13.2" / "index.html").write_text("<!doctype html><title>viewer</title>\n")
    (viewer / "secret.txt").write_text("root:x:0:0:beside the viewer, never served\n")
    settings = {"dicom.workers": 1, "http.body_timeout": 2, "viewer.dir": str(viewer)}
    with serve(root, settings) as running:
        yield running


def index_count(served: Served) -> int:
    with contextlib.closing(sqlite3.connect(served.data_dir / "index.sqlite")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])


def blobs(served: Served) -> list[Path]:
    return sorted((served.data_dir / "storage" / "blobs").rglob("*.dcm"))


def staged(served: Served) -> list[Path]:
    """Staging files with content (the empty ones made ahead of need do not count)."""
    folder = served.data_dir / "storage" / "staging"
    return sorted(p for p in folder.iterdir() if p.is_file() and p.stat().st_size)


def outside_files(served: Served) -> set[Path]:
    """Every file in the server's folder but its data folder (settings, log)."""
    root = served.data_dir.parent
    return {p for p in root.rglob("*") if served.data_dir not in p.parents and p.is_file()}


def canaries(served: Served) -> list[Path]:
    """Files named like the canary anywhere a traversal could have put them."""
    places = [served.data_dir.parent.parent, Path("/tmp"), Path.cwd(), Path("/")]
    found = [p for place in places for p in place.glob(f"*{CANARY}*")]
    return found + [p for p in served.data_dir.parent.rglob(f"*{CANARY}*")]


def still_serving(served: Served) -> None:
    assert served.alive(), served.log_text()
    dcmtk("echoscu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port))
    assert httpx.get(served.url + "/health", timeout=30).status_code == 200


@pytest.fixture
def unharmed(served: Served) -> Iterator[Served]:
    """The server, checked afterwards: nothing more stored (``stored`` more instances than
    the test declares), staging empty, no file outside its data folder, still serving."""
    before = (index_count(served), len(blobs(served)), outside_files(served))
    served.expected_new = 0  # type: ignore[attr-defined]
    yield served
    wait_until(lambda: not staged(served), timeout=10, what="staging emptied")
    new = served.expected_new  # type: ignore[attr-defined]
    assert index_count(served) == before[0] + new
    assert len(blobs(served)) == before[1] + new
    assert outside_files(served) == before[2]
    assert canaries(served) == []
    still_serving(served)


@pytest.mark.parametrize(
    "key",
    ["../" * 8 + "etc/passwd", "/etc/passwd", "0" * 32 + "\n", "0" * 31 + "/", "0" * 33, ""],
)
def test_blob_keys_are_never_paths(tmp_path: Path, key: str) -> None:
    """The one place a name becomes a path in storage: a blob key is 32 hex digits or refused
    (it is the hash of the content, never a UID or a name a client chose)."""
    store = FolderStorage(tmp_path / "storage")
    with pytest.raises(ValueError, match="not a storage key"):
        store.put_file(key, tmp_path / "any")
    with pytest.raises(ValueError, match="not a storage key"):
        store.open(key)


# ---------------------------------------------------------------------------- DIMSE helpers


@contextlib.contextmanager
def linked(served: Served) -> Iterator[Association]:
    """An association proposing CT Image Storage and Verification."""
    link = connect(
        "127.0.0.1",
        served.dicom_port,
        calling_ae="CVESCU",
        called_ae=served.ae_title,
        contexts=[build_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE]), build_context(VERIFICATION)],
        max_pdu=16384,
        acse_timeout=10,
        network_timeout=10,
        dimse_timeout=10,
    )
    try:
        yield link
    finally:
        if link.ended:
            link.close()
        else:
            link.release()


def store_data_set(link: Association, sop_instance: str, data_set: bytes) -> tuple[int, str]:
    """C-STORE of raw data set bytes on the CT context; the status and Error Comment."""
    context = next(c for c in link.contexts.values() if c.abstract_syntax == CT_IMAGE_STORAGE)
    request = commands.encode(
        [
            (commands.AFFECTED_SOP_CLASS, CT_IMAGE_STORAGE),
            (commands.COMMAND_FIELD, commands.C_STORE_RQ),
            (commands.MESSAGE_ID, link.next_message_id()),
            (commands.PRIORITY, 0),
            (commands.DATA_SET_TYPE, commands.DATA_SET),
            (commands.AFFECTED_SOP_INSTANCE, sop_instance),
        ]
    )
    link.send(context.id, request, data=data_set)
    answer = link.receive().command
    return answer.us(commands.STATUS) or 0, answer.text(commands.ERROR_COMMENT) or ""


def instance_file(tmp_path: Path, **attrs: object) -> Path:
    path = tmp_path / f"{generate_uid()}.dcm"
    make_instance(path, **attrs)
    return path


def with_raw_uid(tmp_path: Path, keyword: str, uid: str) -> tuple[Path, str]:
    """A synthetic instance whose ``keyword`` holds ``uid`` byte for byte (pydicom would
    strip or pad it): written with a placeholder UID of the same length, then patched. The
    file and the SOP Instance UID the command should name."""
    raw = uid + ("\0" if len(uid) % 2 else "")
    digits = generate_uid(prefix=None).replace(".", "") * 3
    placeholder = ("1.9." + digits)[: len(raw)]
    assert len(placeholder) == len(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 65-character placeholder is no valid UID
        path = instance_file(tmp_path, **{keyword: placeholder})
    data = path.read_bytes()
    patched = data.replace(placeholder.encode(), raw.encode("latin-1"))
    assert patched != data
    path.write_bytes(patched)
    sop_instance = uid if keyword == "SOPInstanceUID" else str(dcmread(path).SOPInstanceUID)
    return path, sop_instance


def data_set_of(path: Path) -> bytes:
    return path.read_bytes()[dataset_offset(path) :]


def element(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element (PS3.5 7.1.2), ``length`` overriding its own."""
    size = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
        return struct.pack("<HH2sHL", group, elem, vr, 0, size) + value
    return struct.pack("<HH2sH", group, elem, vr, size) + value


def raw_socket(served: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.dicom_port), timeout=30)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (a reset ends it too)."""
    out = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return bytes(out)


def associate_rq(contexts: int = 1, called: str = "VESALIUS") -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification ``contexts`` times (ids cycling 1..255)."""
    proposed = []
    for n in range(contexts):
        cx = build_context(VERIFICATION, [IMPLICIT_VR_LE])
        cx.context_id = (2 * n) % 256 + 1
        proposed.append(cx)
    info = UserInformation(max_length=16384, implementation_class_uid="1.2.3.4")
    return encode_request(AssociateRequest(called, "RAWSCU", proposed, info))


def associated_socket(served: Served) -> socket.socket:
    """A raw socket with an established association (Verification on context 1)."""
    sock = raw_socket(served)
    sock.sendall(associate_rq(called=served.ae_title))
    answer = pdu.read_pdu(sock, 0)
    assert answer.kind == pdu.ASSOCIATE_AC
    return sock


# ---------------------------------------------------------------------------- UIDs (DIMSE)

BAD_UIDS = {
    "relative-traversal": f"../../../../../../{CANARY}",
    "traversal-inside": f"1.2.3/../../../../../{CANARY}",
    "absolute-path": f"/tmp/{CANARY}",
    "backslashes": f"1.2.3\\..\\..\\{CANARY}",
    "nul-inside": "1.2.3\x00/../4",
    "newline-at-end": "1.2.3.4\n",
    "65-characters": "1.2." + "3" * 61,
    "letters": "1.2.abc.4",
}
UID_KEYWORDS = ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]


def indexed_uids(served: Served, sop_instance_uid: str) -> list[tuple[str, str, str]]:
    """(study, series, SOP instance) UIDs of the index rows for ``sop_instance_uid``."""
    with contextlib.closing(sqlite3.connect(served.data_dir / "index.sqlite")) as conn:
        rows = conn.execute(
            "SELECT s.study_uid, se.series_uid, i.sop_instance_uid FROM instances i"
            " JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk"
            " WHERE i.sop_instance_uid = ?",
            (sop_instance_uid,),
        ).fetchall()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("keyword", UID_KEYWORDS)
@pytest.mark.parametrize("uid", BAD_UIDS.values(), ids=BAD_UIDS.keys())
def test_c_store_with_a_uid_that_is_no_uid_is_refused(
    unharmed: Served, tmp_path: Path, keyword: str, uid: str
) -> None:
    """DCMTK CVE-2022-2119/2120 and pynetdicom issues 823/1092 (storescp, storescu and qrscp
    built file names from UIDs): a UID that is a path, or not a UID at all, gets a failure
    status with its reason; nothing is stored.

    The one exception is whitespace after a Study or Series UID, which pydicom (the reference
    reader) drops: that instance is stored under the UID without it. Either way the index never
    holds anything but digits and dots (before the fix, ``1.2.3.4\n`` was indexed as it came).
    """
    path, sop_instance = with_raw_uid(tmp_path, keyword, uid)
    with linked(unharmed) as link:
        status, comment = store_data_set(link, sop_instance, data_set_of(path))
    if uid.endswith("\n") and keyword != "SOPInstanceUID":
        assert status == 0x0000, (hex(status), comment)
        unharmed.expected_new = 1  # type: ignore[attr-defined]
        [row] = indexed_uids(unharmed, sop_instance)
        assert all(is_valid_uid(value) for value in row), row
        assert uid.strip() in row
        return
    assert 0xA000 <= status <= 0xCFFF, (hex(status), comment)
    assert comment


# ---------------------------------------------------------------------------- data sets


def _deep_sequence(depth: int) -> bytes:
    """``depth`` sequences of undefined length, each in an item of the one above."""
    seq = struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return (seq + item) * depth + (item_end + seq_end) * depth


def _after_uids(path: Path, extra: bytes) -> bytes:
    """The data set of ``path`` with ``extra`` put in tag order (after (0008,0018))."""
    data = data_set_of(path)
    ds = dcmread(path)
    # (0008,1115) and (0009,xxxx) sort after every (0008,00xx) element of the synthetic file.
    cut = len(data)
    for elem in ds:
        if elem.tag > 0x00081115:
            cut = _offset_of(data, elem.tag)
            break
    return data[:cut] + extra + data[cut:]


def _offset_of(data: bytes, tag: int) -> int:
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    pos = 0
    while True:
        pos = data.index(needle, pos)
        if pos % 2 == 0:
            return pos
        pos += 1


MALFORMED = {
    # PS3.5 7.1.1: 0xFFFFFFFE is no legal length; the value runs far past the data set.
    "element-length-fffffffe": element(0x0009, 0x1010, b"OB", b"\x00" * 8, 0xFFFFFFFE),
    # an item whose length reaches beyond the data set, in a sequence of defined length
    "item-beyond-the-data-set": struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 16)
    + struct.pack("<HHL", 0xFFFE, 0xE000, 0x7FFFFFF0)
    + b"\x00" * 8,
    # a sequence longer than what contains it
    "sequence-beyond-the-data-set": struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0x10000000),
    # undefined lengths nested 10,000 deep (pydicom and recursive parsers overflow)
    "nested-10000-deep": _deep_sequence(10_000),
    # an item delimiter at the top level, then garbage
    "stray-delimiter": struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + b"\xff" * 16,
}


#: Malformed data the reference reader (pydicom) reads without complaint, because the broken
#: part is inside a sequence no indexed attribute lies in: stored as it came, served as it is.
LENIENT = {"item-beyond-the-data-set"}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_data_set_is_refused(unharmed: Served, tmp_path: Path, name: str) -> None:
    """DCMTK CVE-2022-2121 (a NULL pointer dereferenced on malformed data) and Orthanc
    CVE-2026-5437 (out-of-bounds read on a crafted meta-header), both before authentication:
    lengths past the end, a sequence nested 10,000 deep. The answer is a failure status with a
    reason, the association goes on (a C-ECHO on it is answered), nothing is stored. What is
    stored leniently (an item length inside a sequence of defined length) is served afterwards
    without a server error: its metadata, rendering, thumbnail and the instance itself."""
    path = instance_file(tmp_path)
    data = _after_uids(path, MALFORMED[name])
    ds = dcmread(path)
    with linked(unharmed) as link:
        status, comment = store_data_set(link, str(ds.SOPInstanceUID), data)
        assert echo(link) == 0x0000
    if name not in LENIENT:
        assert 0xA000 <= status <= 0xCFFF, (hex(status), comment)
        assert comment
        return
    assert status == 0x0000, (hex(status), comment)
    unharmed.expected_new = 1  # type: ignore[attr-defined]
    instance = (
        f"{unharmed.url}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    for suffix in ("", "/metadata", "/rendered", "/thumbnail"):
        assert httpx.get(instance + suffix, timeout=30).status_code == 200, suffix


# ---------------------------------------------------------------------------- PDUs


def test_p_data_before_association_is_aborted(unharmed: Served) -> None:
    """PS3.8 9.2 (state Sta2, event 10): a P-DATA-TF before any A-ASSOCIATE-RQ is answered
    with an A-ABORT and the connection closes."""
    with raw_socket(unharmed) as sock:
        command = commands.encode([(commands.COMMAND_FIELD, commands.C_ECHO_RQ)])
        body = struct.pack(">LBB", len(command) + 2, 1, 0x03) + command
        sock.sendall(struct.pack(">BxL", pdu.P_DATA_TF, len(body)) + body)
        answer = read_until_closed(sock)
    assert answer[:1] == bytes([pdu.ABORT]), answer[:16]


@pytest.mark.parametrize("kind", [pdu.ASSOCIATE_RQ, pdu.P_DATA_TF, 0x55])
def test_pdu_announcing_4_gib_before_association(unharmed: Served, kind: int) -> None:
    """Orthanc CVE-2026-5440 and pynetdicom issue 1086 (memory allocated as a peer announced
    it) in the Upper Layer: a PDU header announcing 0xFFFFFFFF bytes, then nothing more, ends
    the connection at once; it is never allocated or waited for."""
    rss = unharmed.rss_mb()
    with raw_socket(unharmed) as sock:
        sock.sendall(struct.pack(">BxL", kind, 0xFFFFFFFF))
        read_until_closed(sock)
    assert unharmed.rss_mb() - rss < 64


def test_pdu_announcing_4_gib_on_an_association_is_aborted(unharmed: Served) -> None:
    """The same inside an association: over our Maximum Length (PS3.8 9.3.1): A-ABORT."""
    rss = unharmed.rss_mb()
    with associated_socket(unharmed) as sock:
        sock.sendall(struct.pack(">BxL", pdu.P_DATA_TF, 0xFFFFFFFF) + b"\x00" * 64)
        answer = read_until_closed(sock)
    assert answer[:1] == bytes([pdu.ABORT]), answer[:16]
    assert unharmed.rss_mb() - rss < 64


@pytest.mark.parametrize(
    "body",
    [
        struct.pack(">LBB", 0x7FFFFFFF, 1, 0x03) + b"\x00" * 26,  # PDV item beyond the PDU
        struct.pack(">LBB", 1, 1, 0x03),  # PDV item too short for its own header
        struct.pack(">LBB", 6, 99, 0x03) + b"\x00" * 4,  # a context never negotiated
    ],
    ids=["pdv-beyond-the-pdu", "pdv-too-short", "unknown-context"],
)
def test_malformed_p_data_is_aborted(unharmed: Served, body: bytes) -> None:
    """PDV items that lie about their length or name no negotiated context: A-ABORT."""
    with associated_socket(unharmed) as sock:
        sock.sendall(struct.pack(">BxL", pdu.P_DATA_TF, len(body)) + body)
        answer = read_until_closed(sock)
    assert answer[:1] == bytes([pdu.ABORT]), answer[:16]


def test_10000_presentation_contexts(unharmed: Served) -> None:
    """An A-ASSOCIATE-RQ of 10,000 presentation contexts (about 500 kB, under the 1 MiB cap
    on association PDUs). A context id is one odd byte (PS3.8 9.3.2.2), so ids repeat: A-ABORT
    naming the repeat. The most a request can hold, 128 distinct contexts, is accepted."""
    request = associate_rq(10_000, unharmed.ae_title)
    assert len(request) < pdu.MAX_ASSOCIATE_PDU
    with raw_socket(unharmed) as sock:
        sock.sendall(request)
        assert pdu.read_pdu(sock, 0).kind == pdu.ABORT
    wait_until(lambda: "presentation context id 1 repeated" in unharmed.log_text())
    with raw_socket(unharmed) as sock:
        sock.sendall(associate_rq(128, unharmed.ae_title))
        assert pdu.read_pdu(sock, 0).kind == pdu.ASSOCIATE_AC
        sock.sendall(pdu.release_rq())
        assert pdu.read_pdu(sock, 0).kind == pdu.RELEASE_RP


def _malformed_requests(called: str) -> list[bytes]:
    good = associate_rq(called=called)
    body = bytearray(good[6:])
    out = []
    # an item whose length runs past the PDU
    cut = bytearray(body)
    cut[68 + 2 : 68 + 4] = struct.pack(">H", 0xFFFF)
    out.append(struct.pack(">BxL", pdu.ASSOCIATE_RQ, len(cut)) + bytes(cut))
    # the PDU truncated in the user information item
    short = body[:-5]
    out.append(struct.pack(">BxL", pdu.ASSOCIATE_RQ, len(short)) + bytes(short))
    # a PDU shorter than its fixed fields
    out.append(struct.pack(">BxL", pdu.ASSOCIATE_RQ, 10) + bytes(10))
    # a presentation context item with a zero length
    zero = bytes(body[:68]) + struct.pack(">BxH", 0x20, 0) + bytes(body[68:])
    out.append(struct.pack(">BxL", pdu.ASSOCIATE_RQ, len(zero)) + zero)
    return out


def test_malformed_association_requests_leak_nothing(unharmed: Served) -> None:
    """DCMTK CVE-2021-41687..41690 (dcmqrdb leaked or freed memory twice on crafted requests)
    and CVE-2026-50254/35505 (memory leaked on repeated connection requests). Four kinds of
    malformed request, 100 times each: each is answered (A-ABORT or A-ASSOCIATE-RJ) or
    closed, the server's memory stays within 32 MB of where it started, and the log names the
    problem."""
    requests = _malformed_requests(unharmed.ae_title)
    rss = unharmed.rss_mb()
    answers = set()
    for _ in range(100):
        for request in requests:
            with raw_socket(unharmed) as sock:
                sock.sendall(request)
                answers.add(sock.recv(1))  # the answer's PDU type (b"" if just closed)
    assert answers <= {bytes([pdu.ABORT]), bytes([pdu.ASSOCIATE_RJ]), b""}, answers
    assert bytes([pdu.ABORT]) in answers
    assert unharmed.rss_mb() - rss < 32
    assert "bad association request" in unharmed.log_text()


# ---------------------------------------------------------------------------- HTTP helpers


def multipart(*parts: bytes, headers: str = "Content-Type: application/dicom\r\n") -> bytes:
    body = b"".join(
        f"--{BOUNDARY}\r\n{headers}\r\n".encode("latin-1") + part + b"\r\n" for part in parts
    )
    return body + f"--{BOUNDARY}--\r\n".encode()


def stow(served: Served, body: bytes, content_type: str = MULTIPART) -> httpx.Response:
    return httpx.post(
        served.url + "/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )


def failure_reasons(response: httpx.Response) -> list[int]:
    """Failure Reason (0008,1197) of each item of the Failed SOP Sequence (0008,1198) and the
    Other Failures Sequence (0008,119A: a failure naming no valid SOP Instance UID)."""
    module = response.json()
    failed = [
        item for tag in ("00081198", "0008119A") for item in module.get(tag, {}).get("Value", [])
    ]
    return [item["00081197"]["Value"][0] for item in failed]


def raw_http(served: Served, request: bytes) -> bytes:
    """Send ``request`` as it is; everything the server answers until it closes (or, for a
    connection it keeps open, until it has been quiet for 2 s after an answer)."""
    with socket.create_connection(("127.0.0.1", served.http_port), timeout=30) as sock:
        sock.sendall(request)
        out = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while True:
                if out:
                    sock.settimeout(2)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                out += chunk
    return bytes(out)


def statuses(answer: bytes) -> list[int]:
    """The status code of each HTTP response in ``answer``."""
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


# ---------------------------------------------------------------------------- UIDs (STOW-RS)


@pytest.mark.parametrize("keyword", UID_KEYWORDS)
@pytest.mark.parametrize(
    "uid",
    [
        BAD_UIDS[k]
        for k in ("relative-traversal", "traversal-inside", "nul-inside", "65-characters")
    ],
    ids=["relative-traversal", "traversal-inside", "nul-inside", "65-characters"],
)
def test_stow_with_a_uid_that_is_no_uid_is_refused(
    unharmed: Served, tmp_path: Path, keyword: str, uid: str
) -> None:
    """The same UIDs over STOW-RS: 409 with Failure Reason 0xC000 for the instance."""
    path, _ = with_raw_uid(tmp_path, keyword, uid)
    response = stow(unharmed, multipart(path.read_bytes()))
    assert response.status_code == 409, response.text
    assert failure_reasons(response) == [0xC000]
    # a UID that is no UID is not echoed back (Other Failures Sequence, without UIDs)
    assert CANARY not in response.text and "/.." not in response.text


# ---------------------------------------------------------------------------- URLs

TRAVERSALS = [
    "/dicom-web/studies/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/dicom-web/studies/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/dicom-web/studies/..%252f..%252f..%252fetc%252fpasswd",
    "/dicom-web/studies/..%5c..%5c..%5cetc%5cpasswd",
    "/dicom-web/studies/..\\..\\..\\etc\\passwd",
    "/dicom-web/studies/1.2.3/series/..%2f..%2f..%2f/instances/1.2.3",
    "/dicom-web/studies/1.2.3/series/1.2.3/instances/..%2f..%2fetc%2fpasswd/frames/1",
    "/dicom-web/studies/1.2.3%00.4/metadata",
    "/dicom-web/studies/1.2.3%0a/metadata",
    "/dicom-web/studies/" + "1." * 5000 + "1",
    "/dicom-web/studies/1.2.3/series/1.2.3/instances/1.2.3/bulkdata/..%2f..%2fetc%2fpasswd",
    "/wado?requestType=WADO&studyUID=../../etc&seriesUID=..&objectUID=..%2f..%2fetc%2fpasswd"
    "&contentType=application%2Fdicom",
    "/viewer/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/viewer/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/viewer/..%5c..%5c..%5cetc%5cpasswd",
    "/viewer/..%2fsecret.txt",
    "/viewer/%2e%2e/secret.txt",
    "/viewer/..%252fsecret.txt",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=range(len(TRAVERSALS)))
def test_traversal_in_urls_is_a_client_error(unharmed: Served, target: str) -> None:
    """Orthanc and DICOMweb servers that map URL parts to files: encoded dot segments, double
    encoding, backslashes, NUL, 10 kB UIDs, sent byte for byte (a client library would
    normalise them). Each is a 4xx, never a file of the host (or a 5xx)."""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    answer = raw_http(unharmed, request)
    [status] = statuses(answer)
    assert 400 <= status < 500, answer[:300]
    assert b"root:" not in answer


# ---------------------------------------------------------------------------- multipart


def test_part_file_name_is_never_a_path(unharmed: Served, tmp_path: Path) -> None:
    """A part whose Content-Disposition names ``../../x`` or an absolute path: the file name
    is ignored (an instance is stored by its content's hash), the instance is stored."""
    path = instance_file(tmp_path)
    disposition = (
        "Content-Type: application/dicom\r\n"
        f'Content-Disposition: attachment; filename="../../../../../../{CANARY}"; '
        f"filename*=UTF-8''%2Ftmp%2F{CANARY}\r\n"
        f"Content-Location: file:///tmp/{CANARY}\r\n"
    )
    response = stow(unharmed, multipart(path.read_bytes(), headers=disposition))
    assert response.status_code == 200, response.text
    unharmed.expected_new = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [17 * 1024, 8 * MIB])
def test_huge_part_headers_are_refused(unharmed: Served, tmp_path: Path, size: int) -> None:
    """Part headers over 16 KiB (one endless header line, or many): 400 with the reason, read
    no further."""
    path = instance_file(tmp_path)
    headers = "Content-Type: application/dicom\r\n" + "X-Padding: " + "a" * size + "\r\n"
    response = stow(unharmed, multipart(path.read_bytes(), headers=headers))
    assert response.status_code == 400, response.text
    assert "headers are too long" in response.json()["error"]


# ---------------------------------------------------------------------------- framing


def post_head(*fields: str) -> bytes:
    lines = ["POST /dicom-web/studies HTTP/1.1", "Host: x", f"Content-Type: {MULTIPART}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

FRAMING = {
    # RFC 9112 6.3: a Content-Length that is no number, or two that differ, is an error
    "negative": post_head("Content-Length: -1") + b"x",
    "not-a-number": post_head("Content-Length: 1e3") + b"x",
    "plus-sign": post_head("Content-Length: +5") + b"xxxxx",
    "two-that-differ": post_head("Content-Length: 5", "Content-Length: 50") + b"x" * 50,
    "list-that-differs": post_head("Content-Length: 5, 50") + b"x" * 50,
    # RFC 9112 6.1: Transfer-Encoding and Content-Length together (request smuggling)
    "te-and-cl": post_head("Content-Length: 44", "Transfer-Encoding: chunked")
    + b"0\r\n\r\n"
    + SMUGGLED,
    "cl-and-te": post_head("Transfer-Encoding: chunked", "Content-Length: 5")
    + b"0\r\n\r\n"
    + SMUGGLED,
    "te-obfuscated": post_head("Transfer-Encoding: xchunked", "Content-Length: 5")
    + b"0\r\n\r\n"
    + SMUGGLED,
    "te-not-last": post_head("Transfer-Encoding: chunked, identity") + b"0\r\n\r\n" + SMUGGLED,
    "te-with-space": post_head("Transfer-Encoding : chunked") + b"0\r\n\r\n" + SMUGGLED,
    "chunk-size-overflow": post_head("Transfer-Encoding: chunked")
    + b"fffffffffffffffffffffff\r\n"
    + b"x" * 64,
    "chunk-size-not-hex": post_head("Transfer-Encoding: chunked") + b"zz\r\nxx\r\n0\r\n\r\n",
    "cl-hex": post_head("Content-Length: 0x5") + b"xxxxx",
    "te-folded": post_head("Content-Length: 5", "X: y\r\n Transfer-Encoding: chunked")
    + b"0\r\n\r\n"
    + SMUGGLED,
    "chunk-bare-lf": post_head("Transfer-Encoding: chunked") + b"5\nxxxxx\n0\n\n" + SMUGGLED,
}


@pytest.mark.parametrize("request_bytes", FRAMING.values(), ids=FRAMING.keys())
def test_ambiguous_framing_is_refused_and_never_desyncs(
    unharmed: Served, request_bytes: bytes
) -> None:
    """HTTP request smuggling (Waitress CVE-2019-16789 and CVE-2022-24761, the class behind
    many proxy and server bugs): a body whose length the server could read otherwise than a
    proxy in front of it. Each is a 4xx and the connection ends there: the smuggled request
    behind it is never answered."""
    answer = raw_http(unharmed, request_bytes)
    codes = statuses(answer)
    assert len(codes) == 1, answer[:500]
    assert 400 <= codes[0] < 500, answer[:500]
    assert b"/smuggled" not in answer


def test_content_length_of_10_to_the_18_is_413(unharmed: Served) -> None:
    """Content-Length: 10^18 with a short body: 413 at once, before the body is read."""
    answer = raw_http(unharmed, post_head(f"Content-Length: {10**18}") + b"--x")
    assert statuses(answer) == [413], answer[:300]
    assert b"4096 MiB" in answer


def test_chunked_body_without_its_end_gets_408(unharmed: Served, tmp_path: Path) -> None:
    """A chunked body that stops before its last chunk (the instance sent whole, then nothing):
    408 after ``http.body_timeout`` (2 s here), nothing stored."""
    data = multipart(instance_file(tmp_path).read_bytes())
    chunk = f"{len(data):x}\r\n".encode() + data + b"\r\n"
    answer = raw_http(unharmed, post_head("Transfer-Encoding: chunked") + chunk)
    assert statuses(answer) == [408], answer[:300]


# ---------------------------------------------------------------------------- XML, URLs


def _xxe(secret: Path) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<!DOCTYPE NativeDicomModel [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
        '<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">'
        '<DicomAttribute tag="00100010" vr="PN" keyword="PatientName">'
        '<PersonName number="1"><Alphabetic><FamilyName>&xxe;</FamilyName></Alphabetic>'
        "</PersonName></DicomAttribute></NativeDicomModel>\n"
    ).encode()


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">'.encode()
        for n in range(1, 10)
    )
    + b']>\n<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">'
    + b"&lol9;</NativeDicomModel>\n"
)


def test_xml_bodies_are_never_parsed(unharmed: Served, tmp_path: Path) -> None:
    """dcm4chee-arc's XXE in DICOMweb XML bodies (GHSA-9g23-9gp3-gcq8, dcm4che issue 1181)
    and billion laughs:
    STOW-RS accepts no XML (PS3.18 10.5's Metadata form is not supported), so an XML body or
    part is refused by its media type (415, or 409 for a part), and no entity is expanded: the
    secret file's text is in no answer, memory stays flat."""
    secret = tmp_path / "secret.txt"
    secret.write_text(f"TOP-SECRET-{CANARY}")
    rss = unharmed.rss_mb()
    for body in (_xxe(secret), BILLION_LAUGHS):
        for content_type in (
            "application/dicom+xml",
            f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
        ):
            data = multipart(body, headers="Content-Type: application/dicom+xml\r\n")
            response = stow(unharmed, data if "multipart" in content_type else body, content_type)
            assert response.status_code == 415, response.text
            assert "TOP-SECRET" not in response.text
        response = stow(
            unharmed, multipart(body, headers="Content-Type: application/dicom+xml\r\n")
        )
        assert response.status_code == 409, response.text
        assert "TOP-SECRET" not in response.text
    assert unharmed.rss_mb() - rss < 32


def test_bulkdata_uris_are_never_fetched(unharmed: Served) -> None:
    """Server-side request forgery (dcm4che issue 1181: an entity fetched a URL): a STOW-RS of DICOM
    JSON metadata whose BulkDataURI points at a host the server can reach. The Metadata and
    Bulkdata form is refused (415) without fetching anything: the listener it names sees no
    connection."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/secret"
        metadata = (
            '[{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},'
            f'"7FE00010":{{"vr":"OW","BulkDataURI":"{url}"}}}}]'
        ).encode()
        for content_type, body in (
            ("application/dicom+json", metadata),
            (
                f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
                multipart(metadata, headers="Content-Type: application/dicom+json\r\n"),
            ),
        ):
            assert stow(unharmed, body, content_type).status_code == 415
        with pytest.raises(BlockingIOError):
            listener.accept()


# ---------------------------------------------------------------------------- vesalius import


def vesalius_import(served: Served, source: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``vesalius import SOURCE`` into the served archive, run from ``cwd`` (where a relative
    traversal would land)."""
    cwd.mkdir(parents=True, exist_ok=True)
    config = served.data_dir.parent / "vesalius.toml"
    return subprocess.run(
        [sys.executable, "-m", "vesalius.cli", "import", str(source), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith("VESALIUS_")},
        check=False,
    )


def test_zip_member_names_are_never_paths(unharmed: Served, tmp_path: Path) -> None:
    """Files written under names someone else chose (Zip Slip; pydicom CVE-2026-32711 for a
    File-set's referenced files): zip members named ``../x``, ``/tmp/x``, ``..\\x`` and
    ``a/../../x`` are imported by their content; no file is written under their names (not
    beside the zip, not in the working folder, not in /tmp)."""
    bundle = tmp_path / "in" / "bundle.zip"
    bundle.parent.mkdir()
    names = [
        f"../../../../../../{CANARY}-1.dcm",
        f"/tmp/{CANARY}-2.dcm",
        f"..\\..\\..\\{CANARY}-3.dcm",
        f"a/../../../{CANARY}-4.dcm",
    ]
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            info = zipfile.ZipInfo(name)
            zf.writestr(info, instance_file(tmp_path).read_bytes())
        link = zipfile.ZipInfo(f"{CANARY}-link")  # a symbolic link member (Unix mode 0o120777)
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    proc = vesalius_import(unharmed, bundle, tmp_path / "cwd")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "imported: 4" in lines, proc.stdout
    assert "  not DICOM: 1" in lines, proc.stdout  # the link's text, read as a member
    unharmed.expected_new = 4  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and CANARY in p.name) == []


def test_symlinks_in_a_folder(unharmed: Served, tmp_path: Path) -> None:
    """A folder with a link to a directory above it (a loop) and a link to a file outside:
    links to directories are not followed (no loop, nothing outside walked); a linked file is
    read like any file the operator named, and /etc/passwd is skipped as not DICOM."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "root").symlink_to("/", target_is_directory=True)
    (folder / "passwd").symlink_to("/etc/passwd")
    proc = vesalius_import(unharmed, folder, tmp_path / "cwd")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "imported: 0" in lines and "  not DICOM: 1" in lines, proc.stdout


def _claim_size(data: bytes, claimed: int) -> bytes:
    """A one-member zip whose central directory claims ``claimed`` uncompressed bytes (with a
    ZIP64 extra field past 4 GiB, PKWARE APPNOTE 4.5.3), whatever the member inflates to."""
    cd = data.rindex(b"PK\x01\x02")
    eocd = data.rindex(b"PK\x05\x06")
    head = bytearray(data[cd : cd + 46])
    extra_len, comment_len = struct.unpack_from("<HH", head, 30)
    assert extra_len == 0 and comment_len == 0
    rest = data[cd + 46 : eocd]
    if claimed < 0xFFFFFFFF:
        struct.pack_into("<L", head, 24, claimed)
        entry = bytes(head) + rest
    else:
        struct.pack_into("<L", head, 24, 0xFFFFFFFF)
        struct.pack_into("<H", head, 30, 12)
        entry = bytes(head) + rest + struct.pack("<HHQ", 0x0001, 8, claimed)
    end = bytearray(data[eocd:])
    struct.pack_into("<L", end, 12, len(entry))
    return data[:cd] + entry + bytes(end)


def test_zip_bombs_are_refused_before_they_are_written(unharmed: Served, tmp_path: Path) -> None:
    """Zip bombs (Orthanc CVE-2026-5439: buffers sized by a forged uncompressed size; Python's
    CVE-2019-9674): a member claiming a terabyte is refused before a byte of it is extracted (its
    size against the free space); a member that inflates past the size it claims is cut at
    that size and refused (Bad CRC); a zip inside the zip is not opened (no recursion: 42.zip).
    Nothing is stored, staging stays empty."""
    member = instance_file(tmp_path).read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()

    huge = io.BytesIO()
    with zipfile.ZipFile(huge, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("terabyte.dcm", member + bytes(MIB))
    (folder / "terabyte.zip").write_bytes(_claim_size(huge.getvalue(), 1 << 40))

    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lying.dcm", member + bytes(64 * MIB))
    (folder / "lying.zip").write_bytes(_claim_size(lying.getvalue(), len(member) + 1024))

    with zipfile.ZipFile(folder / "nested.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner.zip", huge.getvalue())

    proc = vesalius_import(unharmed, folder, tmp_path / "cwd")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "imported: 0" in lines, proc.stdout
    assert f"  {folder / 'terabyte.zip'}:terabyte.dcm: rejected: larger than the free space" in (
        lines
    ), proc.stdout
    assert f"  {folder / 'lying.zip'}:lying.dcm: unreadable: Bad CRC-32 for file 'lying.dcm'" in (
        lines
    ), proc.stdout
    assert "  not DICOM: 1" in lines, proc.stdout  # the zip inside the zip


def _overlapping_zip(member: bytes, name: str, entries: int) -> bytes:
    """One compressed member listed ``entries`` times in the central directory, every entry
    pointing at the same bytes: each inflates to the whole member (the overlapping,
    "non-recursive" zip bomb)."""
    single = io.BytesIO()
    with zipfile.ZipFile(single, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, member)
    data = single.getvalue()
    cd, eocd = data.rindex(b"PK\x01\x02"), data.rindex(b"PK\x05\x06")
    entry = data[cd:eocd]
    end = bytearray(data[eocd:])
    struct.pack_into("<HHL", end, 8, entries, entries, len(entry) * entries)
    return data[:cd] + entry * entries + bytes(end)


def test_overlapping_zip_bomb_is_refused_whole(unharmed: Served, tmp_path: Path) -> None:
    """A zip whose 200 entries all point at one member of 32 MiB (6.4 GB to extract from a
    zip of a few hundred kB): refused as a whole before any member is read, nothing stored.
    Python's zipfile finds such overlaps itself only from 3.11.8 and 3.12.2; before the check
    in the importer, every entry was extracted in turn."""
    path = tmp_path / "big.dcm"
    make_instance(path, rows=4096, columns=4096)  # 32 MiB of zero pixels
    bomb = tmp_path / "in" / "overlap.zip"
    bomb.parent.mkdir()
    bomb.write_bytes(_overlapping_zip(path.read_bytes(), "big.dcm", 200))
    assert bomb.stat().st_size < 2 * MIB
    with zipfile.ZipFile(bomb) as zf:
        assert len(zf.infolist()) == 200  # Python 3.11.7's zipfile lists them all
    proc = vesalius_import(unharmed, bomb, tmp_path / "cwd")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "imported: 0" in lines, proc.stdout
    assert f"  {bomb}: unreadable: members overlap (a zip bomb)" in lines, proc.stdout
