"""Remote AEs by their permissions (issue 14, "Remote AEs"): DCMTK's echoscu, storescu,
findscu, getscu and movescu call a real DIMSE server from an unknown AE title and from known
peers with different permissions. A refusal is an A-ASSOCIATE-RJ where the association itself
is refused (unknown callers with known_callers_only or without any permission, a known AE
calling from another host), else DIMSE 0x0124 with a reason in the log; never an empty answer.
On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from conftest import RunningServer, dcmtk, free_port, make_server
from test_retrieve import start_storescp, suboperation_counts
from vesalius.settings import Modality, parse_permissions

CT = get_testdata_file("CT_small.dcm")
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
STUDY_KEYS = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_STUDY}"]
CAREFUL = {"dicom.unknown_caller_permissions": "echo,store"}


def _status(output: str) -> int | None:
    """The last DIMSE status DCMTK printed (``-d``)."""
    found = re.findall(r"Status\s*:\s*0x([0-9a-fA-F]{1,4})", output)
    return int(found[-1], 16) if found else None


def _run(
    tool: str, running: RunningServer, *args: str, aet: str, files: tuple[str, ...] = ()
) -> tuple[int, str]:
    proc = dcmtk(
        tool,
        "-d",
        "-aet",
        aet,
        "-aec",
        running.ae_title,
        *args,
        "127.0.0.1",
        str(running.port),
        *files,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _peers(port: int) -> dict[str, Modality]:
    return {
        "reader": Modality("reader", "READER", "127.0.0.1", port, parse_permissions("echo,find")),
        "station": Modality("station", "STATION", "127.0.0.1", port),  # the default permissions
    }


@pytest.fixture
def careful(tmp_path: Path, database_url: str) -> Iterator[tuple[RunningServer, int]]:
    """A server with a careful site's defaults, holding one CT study; its known peers
    (READER: echo and find; STATION: echo, store, find, move, get) listen at the port given."""
    port = free_port()
    running = make_server(tmp_path / "data", database_url, _peers(port), **CAREFUL)
    try:
        dcmtk(
            "storescu",
            "-aet",
            "STATION",
            "-aec",
            running.ae_title,
            "127.0.0.1",
            str(running.port),
            CT,
        )
        yield running, port
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def test_an_unknown_ae_may_echo_and_store_but_not_query_or_retrieve(
    careful: tuple[RunningServer, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running, port = careful
    caplog.set_level(logging.INFO)
    code, out = _run("echoscu", running, aet="STRANGER")
    assert code == 0, out
    code, out = _run("storescu", running, aet="STRANGER", files=(CT,))
    assert code == 0 and _status(out) == 0x0000, out

    code, out = _run("findscu", running, "-S", *STUDY_KEYS, aet="STRANGER")
    assert _status(out) == 0x0124, out
    assert "Pending" not in out  # no identifier before the refusal
    assert "calling AE 'STRANGER' (an unknown AE title) has no find permission" in caplog.text

    (tmp_path / "got").mkdir()
    code, out = _run(
        "getscu", running, "-S", "-od", str(tmp_path / "got"), *STUDY_KEYS, aet="STRANGER"
    )
    assert _status(out) == 0x0124, out
    assert not list((tmp_path / "got").iterdir())
    assert "has no get permission" in caplog.text

    scp = start_storescp("STATION", port, tmp_path / "moved")
    try:
        code, out = _run("movescu", running, "-S", "-aem", "STATION", *STUDY_KEYS, aet="STRANGER")
        assert _status(out) == 0x0124, out
        assert "has no move permission" in caplog.text
        # and a C-MOVE to an AE that is no known peer stays 0xA801, whoever asks
        code, out = _run("movescu", running, "-S", "-aem", "NOWHERE", *STUDY_KEYS, aet="STATION")
        assert _status(out) == 0xA801, out
        # the known station may move to itself
        code, out = _run("movescu", running, "-S", "-aem", "STATION", *STUDY_KEYS, aet="STATION")
        assert _status(out) == 0x0000, out
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    assert len([p for p in (tmp_path / "moved").iterdir() if p.is_file()]) == 1


def test_a_known_peer_may_do_what_its_permissions_say(
    careful: tuple[RunningServer, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running, _ = careful
    caplog.set_level(logging.INFO)
    code, out = _run("echoscu", running, aet="READER")
    assert code == 0, out
    code, out = _run("findscu", running, "-S", *STUDY_KEYS, aet="READER")
    assert _status(out) == 0x0000 and CT_STUDY in out, out
    code, out = _run("storescu", running, aet="READER", files=(CT,))
    assert _status(out) == 0x0124, out
    assert "calling AE 'READER' (known peer reader) has no store permission" in caplog.text
    (tmp_path / "got").mkdir()
    code, out = _run(
        "getscu", running, "-S", "-od", str(tmp_path / "got"), *STUDY_KEYS, aet="READER"
    )
    assert _status(out) == 0x0124, out
    # the station, with the default permissions of a known peer, may get
    code, out = _run(
        "getscu", running, "-S", "-od", str(tmp_path / "got"), *STUDY_KEYS, aet="STATION"
    )
    assert _status(out) == 0x0000 and suboperation_counts(out)["completed"] == 1, out


def test_an_echo_the_policy_refuses_is_0124(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    peers = {"mute": Modality("mute", "MUTE", "127.0.0.1", port, parse_permissions("find"))}
    running = make_server(tmp_path / "data", database_url, peers, **CAREFUL)
    try:
        _, out = _run("echoscu", running, aet="MUTE")
        assert _status(out) == 0x0124, out
        assert "has no echo permission" in out  # the Error Comment says why
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


@pytest.mark.parametrize(
    "settings",
    [
        {"dicom.known_callers_only": True},
        {"dicom.unknown_caller_permissions": ""},
    ],
    ids=["known_callers_only", "no-permission-for-unknown"],
)
def test_an_unknown_caller_is_rejected_at_association(
    tmp_path: Path, database_url: str, settings: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = make_server(tmp_path / "data", database_url, _peers(free_port()), **settings)
    try:
        code, out = _run("echoscu", running, aet="STRANGER")
        assert code != 0 and "Calling AE Title Not Recognized" in out, out
        assert re.search(
            r"rejecting association from 127\.0\.0\.1: calling AE title 'STRANGER'", caplog.text
        )
        code, out = _run("echoscu", running, aet="STATION")
        assert code == 0, out
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def test_a_known_ae_from_another_host_is_rejected_with_check_caller_host(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    peers = {
        "far": Modality("far", "FAR", "192.0.2.7", 104),  # TEST-NET-1: never this machine
        "near": Modality("near", "NEAR", "localhost", 104),
    }
    running = make_server(
        tmp_path / "data", database_url, peers, **CAREFUL, **{"dicom.check_caller_host": True}
    )
    try:
        code, out = _run("echoscu", running, aet="FAR")
        assert code != 0 and "Calling AE Title Not Recognized" in out, out
        assert "called from 127.0.0.1, not from its host 192.0.2.7" in caplog.text
        code, out = _run("findscu", running, "-S", *STUDY_KEYS, aet="NEAR")
        assert code == 0 and _status(out) == 0x0000, out  # localhost resolves to the caller
        # an unknown AE title is not concerned by the host check: echo and store as before
        code, out = _run("echoscu", running, aet="STRANGER")
        assert code == 0, out
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def test_permissions_from_the_environment_and_toml(tmp_path: Path) -> None:
    from vesalius.errors import ConfigError
    from vesalius.settings import load_settings

    config = tmp_path / "v.toml"
    config.write_text(
        '[modalities.ws]\nae_title = "WS"\nhost = "h"\nport = 104\npermissions = ["echo", "find"]\n'
    )
    env = {"VESALIUS_MODALITY_LAB": "LAB@10.0.0.9:11112 echo,move"}
    settings = load_settings(config, environ=env)
    assert settings.modalities["ws"].permissions == {"echo", "find"}
    assert settings.modalities["LAB"].permissions == {"echo", "move"}
    with pytest.raises(ConfigError, match="unknown permission"):
        load_settings(environ={"VESALIUS_DICOM_UNKNOWN_CALLER_PERMISSIONS": "echo,fly"})
