"""The A-ASSOCIATE codec (dimse/associate_pdu.py), acceptor negotiation (dimse/contexts.py) and
status meanings (dimse/status_codes.py): round trips, malformed input refused with a clear
error, requests captured from DCMTK's tools off a real socket, and the same answers as
pynetdicom (the implementation they replace, kept as a test peer)."""

from __future__ import annotations

import itertools
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from bench.tools import dcmtk_tool
from pynetdicom import status as pynetdicom_status
from pynetdicom.presentation import PresentationContext as PynetdicomContext
from pynetdicom.presentation import negotiate_as_acceptor as pynetdicom_negotiate

from synth import CT_IMAGE_STORAGE, make_instance
from vesalius.dicom.uids import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_FIND,
    VERIFICATION,
)
from vesalius.dimse import negotiation, status_codes
from vesalius.dimse.associate_pdu import (
    AssociateAccept,
    AssociateRequest,
    CommonExtendedNegotiation,
    ExtendedNegotiation,
    RoleSelection,
    UserIdentity,
    UserInformation,
    decode_accept,
    decode_reject,
    decode_request,
    encode_accept,
    encode_request,
)
from vesalius.dimse.contexts import PresentationContext, build_context, negotiate_as_acceptor
from vesalius.dimse.pdu import ProtocolError
from vesalius.dimse.server import supported_contexts

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def full_request() -> AssociateRequest:
    """A request using every item the codec knows."""
    contexts = [build_context(VERIFICATION), build_context(CT_IMAGE_STORAGE, [JPEG_BASELINE])]
    for number, cx in enumerate(contexts):
        cx.context_id = 2 * number + 1
    info = UserInformation(
        max_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version="TEST_1",
        async_window=(5, 3),
        roles=[RoleSelection(CT_IMAGE_STORAGE, False, True)],
        extended=[ExtendedNegotiation(STUDY_ROOT_FIND, b"\x01\x01")],
        common_extended=[
            CommonExtendedNegotiation(CT_IMAGE_STORAGE, "1.2.840.10008.4.2", ("1.2",))
        ],
        user_identity=UserIdentity(2, True, b"user", b"secret"),
    )
    return AssociateRequest("CALLED", "CALLING", contexts, info)


def test_request_round_trip() -> None:
    rq = full_request()
    encoded = encode_request(rq)
    assert encoded[0] == 0x01 and struct.unpack(">L", encoded[2:6])[0] == len(encoded) - 6
    assert decode_request(encoded[6:]) == rq
    assert encode_request(decode_request(encoded[6:])) == encoded


def test_accept_round_trip() -> None:
    answer = PresentationContext(
        "", [EXPLICIT_VR_LE], context_id=1, result=0, as_scu=False, as_scp=False
    )
    refused = PresentationContext("", [IMPLICIT_VR_LE], context_id=3, result=3)
    info = UserInformation(
        32768,
        "1.2.3",
        "V",
        async_window=(1, 1),
        roles=[RoleSelection(CT_IMAGE_STORAGE, False, True)],
        identity_response=b"token",
    )
    ac = AssociateAccept("CALLED", "CALLING", [answer, refused], info)
    encoded = encode_accept(ac)
    assert decode_accept(encoded[6:]) == ac


def test_reject_decodes() -> None:
    rj = decode_reject(b"\x00\x02\x03\x02")
    assert (rj.result, rj.source, rj.reason) == (2, 3, 2)
    with pytest.raises(ProtocolError, match="not 4"):
        decode_reject(b"\x00\x01")


def _items(body: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 68
    while pos < len(body):
        kind, length = struct.unpack_from(">BxH", body, pos)
        out.append((kind, body[pos : pos + 4 + length]))
        pos += 4 + length
    return out


def _replace(body: bytes, kind: int, new: bytes) -> bytes:
    """``body`` with its first item of type ``kind`` replaced by ``new`` (a whole item)."""
    items = _items(body)
    index = next(i for i, (k, _) in enumerate(items) if k == kind)
    items[index] = (kind, new)
    return body[:68] + b"".join(raw for _, raw in items)


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(value)) + value


GOOD = encode_request(full_request())[6:]
AS = _item(0x30, VERIFICATION.encode())
TS = _item(0x40, IMPLICIT_VR_LE.encode())

MALFORMED = {
    "shorter than its fixed fields": GOOD[:60],
    "overruns its parent": GOOD[:-3],
    "stray bytes": GOOD + b"\x10\x00",
    "is not odd": _replace(GOOD, 0x20, _item(0x20, b"\x02\x00\x00\x00" + AS + TS)),
    "needs one abstract syntax": _replace(GOOD, 0x20, _item(0x20, b"\x01\x00\x00\x00" + TS)),
    "is not a UID": _replace(
        GOOD, 0x20, _item(0x20, b"\x01\x00\x00\x00" + _item(0x30, b"1.2.x") + TS)
    ),
    "is not ASCII": _replace(
        GOOD, 0x20, _item(0x20, b"\x01\x00\x00\x00" + _item(0x30, b"1.2\xff") + TS)
    ),
    "repeated": GOOD[:68]
    + _item(0x10, b"1.2.840.10008.3.1.1.1")
    + _item(0x20, b"\x01\x00\x00\x00" + AS + TS) * 2,
    "unexpected item 0x99": GOOD + _item(0x99, b""),
    "no Application Context": GOOD[:68]
    + b"".join(raw for kind, raw in _items(GOOD) if kind != 0x10),
    "not 4": _replace(GOOD, 0x50, _item(0x50, _item(0x51, b"\x00\x00\x40"))),
    "roles missing": _replace(GOOD, 0x50, _item(0x50, _item(0x54, struct.pack(">H", 3) + b"1.2"))),
    "User Identity sub-item: trailing": _replace(
        GOOD, 0x50, _item(0x50, _item(0x58, b"\x01\x00\x00\x01u\x00\x00extra"))
    ),
}


@pytest.mark.parametrize("problem", sorted(MALFORMED))
def test_malformed_request_is_a_protocol_error(problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem) as caught:
        decode_request(MALFORMED[problem])
    assert "malformed A-ASSOCIATE-RQ" in str(caught.value) or "malformed" in str(caught.value)


def test_unknown_user_information_sub_items_are_skipped() -> None:
    info = _item(0x50, _item(0x51, struct.pack(">L", 4096)) + _item(0x7F, b"future"))
    assert decode_request(_replace(GOOD, 0x50, info)).user_info.max_length == 4096


def test_accept_tolerates_empty_syntax_of_a_refused_context() -> None:
    fixed = struct.pack(">HH16s16s32x", 1, 0, b"A".ljust(16), b"B".ljust(16))
    body = fixed + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x21, b"\x01\x00\x03\x00")
    body += _item(0x21, b"\x03\x00\x00\x00" + _item(0x40, EXPLICIT_VR_LE.encode()))
    ac = decode_accept(body)
    assert [(cx.context_id, cx.result, cx.transfer_syntax) for cx in ac.contexts] == [
        (1, 3, []),
        (3, 0, [EXPLICIT_VR_LE]),
    ]


# -- what DCMTK sends ---------------------------------------------------------------------------


def capture_request(*command: str, files: tuple[str, ...] = ()) -> bytes:
    """The A-ASSOCIATE-RQ a DCMTK tool sends, read off a real socket (nothing is answered:
    the tool gives up when the connection closes)."""
    exe = dcmtk_tool(command[0])
    if exe is None:
        pytest.skip(f"DCMTK's {command[0]} is not installed")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        tool = subprocess.Popen(
            [exe, *command[1:], "127.0.0.1", str(port), *files],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            server.settimeout(30)
            peer, _ = server.accept()
            with peer:
                peer.settimeout(30)
                data = b""
                while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
                    chunk = peer.recv(65536)
                    assert chunk, "the tool closed before sending its A-ASSOCIATE-RQ"
                    data += chunk
        finally:
            tool.kill()
            tool.wait()
    return data


def assert_same_bytes_but_reserved(ours: bytes, theirs: bytes) -> None:
    """Equal, except that DCMTK puts 0xFF in a reserved byte of each presentation context
    item (PS3.8 Table 9-13: "not tested" by the receiver), where we send 0x00."""
    assert len(ours) == len(theirs)
    for at, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b:
            assert (a, b) == (0x00, 0xFF) and theirs[at - 6] == 0x20, f"byte {at} differs"


def test_dcmtk_echoscu_request() -> None:
    raw = capture_request("echoscu", "-aet", "ECHOER", "-aec", "ARCHIVE")
    rq = decode_request(raw[6:])
    assert (rq.calling_ae, rq.called_ae) == ("ECHOER", "ARCHIVE")
    assert rq.application_context == negotiation.APPLICATION_CONTEXT
    assert [(cx.context_id, cx.abstract_syntax) for cx in rq.contexts] == [(1, VERIFICATION)]
    assert rq.contexts[0].transfer_syntax == [IMPLICIT_VR_LE]
    assert rq.user_info.max_length == 16384
    assert rq.user_info.implementation_version.startswith("OFFIS_DCMTK")
    assert_same_bytes_but_reserved(encode_request(rq), raw)


def test_dcmtk_getscu_request_with_role_selection() -> None:
    raw = capture_request("getscu", "-aet", "GETTER", "-aec", "ARCHIVE", "-k", "0008,0052=STUDY")
    rq = decode_request(raw[6:])
    assert PATIENT_ROOT_GET in {cx.abstract_syntax for cx in rq.contexts}
    assert len(rq.contexts) > 50  # the get contexts and a storage context per class
    roles = {role.sop_class: (role.scu, role.scp) for role in rq.user_info.roles}
    assert roles and roles.get(CT_IMAGE_STORAGE) == (False, True)
    assert_same_bytes_but_reserved(encode_request(rq), raw)


def test_dcmtk_storescu_request_is_accepted(tmp_path: Path) -> None:
    """storescu proposing a CT file: decoded, re-encoded the same, and accepted by our
    acceptor in the file's transfer syntax with the default roles."""
    make_instance(tmp_path / "ct.dcm")
    raw = capture_request(
        "storescu",
        "-aet",
        "SENDER",
        "-aec",
        "ARCHIVE",
        "--required",
        files=(str(tmp_path / "ct.dcm"),),
    )
    rq = decode_request(raw[6:])
    assert rq.calling_ae == "SENDER"
    assert CT_IMAGE_STORAGE in {cx.abstract_syntax for cx in rq.contexts}
    assert_same_bytes_but_reserved(encode_request(rq), raw)
    policy = negotiation.AcceptorPolicy("ARCHIVE", 65536, supported_contexts())
    answer, agreed = negotiation.accept(raw[6:], policy, over_limit=False)
    ac = decode_accept(answer[6:])
    assert ac.user_info.max_length == 65536 and ac.calling_ae == "SENDER"
    ct = [cx for cx in agreed.contexts.values() if cx.abstract_syntax == CT_IMAGE_STORAGE]
    assert ct and ct[0].transfer_syntax == EXPLICIT_VR_LE and ct[0].as_scp


# -- acceptor negotiation: the same answers as pynetdicom ---------------------------------------

ROLES: list[bool | None] = [None, True, False]


@pytest.mark.parametrize(
    ("ours", "proposed"),
    list(
        itertools.product(
            itertools.product(ROLES, ROLES), [None, *itertools.product([True, False], repeat=2)]
        )
    ),
)
def test_role_selection_matches_pynetdicom(
    ours: tuple[bool | None, bool | None], proposed: tuple[bool, bool] | None
) -> None:
    """PS3.7 D.3.3.4 as pynetdicom implements it, for every combination of what we allow and
    what the requestor proposes; and the requestor's first supported syntax wins."""
    request = [
        build_context(CT_IMAGE_STORAGE, [JPEG_BASELINE, EXPLICIT_VR_LE, IMPLICIT_VR_LE]),
        build_context("1.2.3.4.5", [EXPLICIT_VR_LE]),
        build_context(VERIFICATION, ["1.2.9"]),
    ]
    for number, cx in enumerate(request):
        cx.context_id = 2 * number + 1
    supported = [
        build_context(CT_IMAGE_STORAGE, [IMPLICIT_VR_LE, EXPLICIT_VR_LE]),
        build_context(VERIFICATION, [IMPLICIT_VR_LE]),
    ]
    supported[0].scu_role, supported[0].scp_role = ours
    roles = {} if proposed is None else {CT_IMAGE_STORAGE: proposed}
    answers, replies = negotiate_as_acceptor(request, supported, roles)

    def theirs(cx: PresentationContext) -> PynetdicomContext:
        other = PynetdicomContext()
        other.context_id = cx.context_id
        other.abstract_syntax = cx.abstract_syntax
        other.transfer_syntax = list(cx.transfer_syntax)
        other.scu_role, other.scp_role = cx.scu_role, cx.scp_role
        return other

    expected, expected_roles = pynetdicom_negotiate(
        [theirs(cx) for cx in request], [theirs(cx) for cx in supported], roles or None
    )
    assert [
        (cx.context_id, cx.abstract_syntax, cx.result, cx.as_scu, cx.as_scp) for cx in answers
    ] == [(cx.context_id, cx.abstract_syntax, cx.result, cx.as_scu, cx.as_scp) for cx in expected]
    assert [(r.sop_class, r.scu, r.scp) for r in replies] == [
        (str(r.sop_class_uid), r.scu_role, r.scp_role) for r in expected_roles
    ]
    accepted = [cx for cx in answers if cx.result == 0]
    for cx in accepted:  # the requestor's order decides, not ours
        assert cx.transfer_syntax == [EXPLICIT_VR_LE] if cx.context_id == 1 else True


def test_status_meanings_match_pynetdicom() -> None:
    tables = {
        "C-ECHO": pynetdicom_status.VERIFICATION_SERVICE_CLASS_STATUS,
        "C-STORE": pynetdicom_status.STORAGE_SERVICE_CLASS_STATUS,
        "C-FIND": pynetdicom_status.QR_FIND_SERVICE_CLASS_STATUS,
        "C-MOVE": pynetdicom_status.QR_MOVE_SERVICE_CLASS_STATUS,
        "C-GET": pynetdicom_status.QR_GET_SERVICE_CLASS_STATUS,
    }
    general = pynetdicom_status.GENERAL_STATUS
    for code in range(0x10000):
        assert status_codes.category(code) == pynetdicom_status.code_to_category(code), hex(code)
        for service, table in tables.items():
            expected = table.get(code, general.get(code, ("", "")))[1]
            assert status_codes.meaning(service, code) == expected, (service, hex(code))
