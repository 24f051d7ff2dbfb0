"""Transport security (issue 14): DIMSE over TLS (PS3.15 B.9, the BCP 195 non-downgrading
profile) against DCMTK's TLS tools, mutual TLS mapping a client certificate to a known peer,
every SCU path over TLS, HTTPS with HSTS, certificates reloaded on change, and
``vesalius cert create``."""

from __future__ import annotations

import hashlib
import logging
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from conftest import RunningServer, dcmtk, free_port, make_server, wait_for_port, wait_until
from served import serve
from synth import make_instance
from test_retrieve import start_storescp
from vesalius import tls
from vesalius.cli import main
from vesalius.commands.certs import Issued, issue, make_authority, server_names
from vesalius.errors import ConfigError
from vesalius.services.audit import Auditor
from vesalius.services.events import Event
from vesalius.settings import Modality, Settings, load_settings
from vesalius.tls import TlsFiles
from vesalius.web.serving import bind_http, http_server
from vesalius.wiring import dimse_tls, http_app, http_limits, http_tls

HANDSHAKE_FAILED = "tls handshake failed peer=127.0.0.1"


@dataclass(frozen=True)
class Pki:
    """A test site's authority, server and client certificates, and some bad ones."""

    folder: Path
    ca: Issued
    server: Issued
    storescu: Issued  # CN=STORESCU, a known peer
    stranger: Issued  # CN=STRANGER, signed by our authority, no peer of that name
    other_ca_client: Issued  # CN=STORESCU, signed by another authority
    expired: Issued  # CN=STORESCU, expired yesterday

    def settings(self, **extra: object) -> dict[str, object]:
        return {
            "tls.certificate": str(self.server.certificate),
            "tls.private_key": str(self.server.private_key),
            "tls.ca_certificates": str(self.ca.certificate),
            "dicom.tls_port": 0,
            **extra,
        }

    def dcmtk(self, client: Issued | None = None) -> list[str]:
        """``+tls KEY CERT +cf CA`` for a DCMTK tool."""
        client = client or self.storescu
        return [
            "+tls",
            str(client.private_key),
            str(client.certificate),
            "+cf",
            str(self.ca.certificate),
        ]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_authority(folder)
    other = make_authority(folder / "other", "Another CA")
    return Pki(
        folder,
        ca,
        issue(ca, folder, "server", "localhost", names=server_names()),
        issue(ca, folder, "storescu", "STORESCU", client=True),
        issue(ca, folder, "stranger", "STRANGER", client=True),
        issue(other, folder / "other", "storescu", "STORESCU", client=True),
        issue(ca, folder, "expired", "STORESCU", client=True, expired=True),
    )


class Recorder(Auditor):
    """The audit events, kept for the test to read."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def dest_port() -> int:
    return free_port()


@pytest.fixture
def tls_server(
    tmp_path: Path, pki: Pki, recorder: Recorder, dest_port: int
) -> Iterator[RunningServer]:
    """DIMSE on a plain and a TLS port, client certificates checked when presented; peers:
    STORESCU (named by CN=STORESCU) and DEST, a storescp called over TLS."""
    modalities = {
        "STORESCU": Modality("STORESCU", "STORESCU", "127.0.0.1", 104),
        "DEST": Modality("DEST", "DEST", "127.0.0.1", dest_port, tls=True),
    }
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        modalities,
        auditor=recorder,
        **pki.settings(**{"tls.verify_clients": "optional"}),
    )
    try:
        yield running
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def tls_address(server: RunningServer) -> list[str]:
    return ["-aec", server.ae_title, "127.0.0.1", str(server.dimse.tls_port)]


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def methods(recorder: Recorder) -> set[str]:
    return {e.who.method for e in recorder.events if e.who.kind == "ae"}


# -- DIMSE over TLS with DCMTK -----------------------------------------------------------------


def test_echo_store_find_over_tls(
    tls_server: RunningServer, pki: Pki, tmp_path: Path, recorder: Recorder
) -> None:
    assert tls_server.dimse.tls_port and tls_server.dimse.port
    echo = dcmtk("echoscu", "-v", *pki.dcmtk(), "-aet", "STORESCU", *tls_address(tls_server))
    assert "Received Echo Response (Success)" in output(echo)
    path = tmp_path / "ct.dcm"
    ds = make_instance(path, PatientID="TLS-1")
    dcmtk("storescu", *pki.dcmtk(), "-aet", "STORESCU", *tls_address(tls_server), str(path))
    assert len(tls_server.stored_files()) == 1
    find = dcmtk(
        "findscu",
        "-v",
        "-S",
        *pki.dcmtk(),
        "-aet",
        "STORESCU",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientID=TLS-1",
        *tls_address(tls_server),
    )
    assert ds.StudyInstanceUID in output(find)
    # The client certificate named the peer: the identity is certificate-authenticated.
    assert methods(recorder) == {"certificate"}


def scu_config(tmp_path: Path, pki: Pki) -> Path:
    """Settings for our SCU commands calling as STORESCU with its client certificate."""
    config = tmp_path / "scu.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "scu-data"}"\n[dicom]\nae_title = "STORESCU"\n[tls]\n'
        f'certificate = "{pki.storescu.certificate}"\nprivate_key = "{pki.storescu.private_key}"\n'
        f'ca_certificates = "{pki.ca.certificate}"\n'
    )
    return config


def test_move_to_a_tls_destination_and_get_over_tls(
    tls_server: RunningServer, pki: Pki, tmp_path: Path, dest_port: int, recorder: Recorder
) -> None:
    """DCMTK 3.6.7's movescu and getscu have no TLS: ``vesalius move/get --tls`` ask."""
    path = tmp_path / "ct.dcm"
    ds = make_instance(path, PatientID="TLS-2")
    dcmtk("storescu", *pki.dcmtk(), "-aet", "STORESCU", *tls_address(tls_server), str(path))
    config = scu_config(tmp_path, pki)
    target = f"{tls_server.ae_title}@127.0.0.1:{tls_server.dimse.tls_port}"
    keys = ["-k", f"StudyInstanceUID={ds.StudyInstanceUID}"]
    # storescp +tls: DEST is called over TLS (its peer has tls = true); it checks our server
    # certificate, which we present as a client there too.
    received = tmp_path / "received"
    dest = start_storescp(
        "DEST", dest_port, received, "+tls", str(pki.server.private_key),
        str(pki.server.certificate), "+cf", str(pki.ca.certificate),
    )  # fmt: skip
    runner = CliRunner()
    try:
        moved = runner.invoke(
            main, ["move", target, "--tls", "--dest", "DEST", *keys, "-c", str(config)]
        )
        assert moved.exit_code == 0, moved.output
        wait_until(lambda: len(list(received.iterdir())) == 1, what="the moved instance")
    finally:
        dest.terminate()
        dest.wait(10)
    got = tmp_path / "got"
    fetched = runner.invoke(
        main, ["get", target, "--tls", "--out", str(got), *keys, "-c", str(config)]
    )
    assert fetched.exit_code == 0, fetched.output
    assert len([p for p in got.rglob("*") if p.is_file()]) == 1
    assert methods(recorder) == {"certificate"}


def test_a_plain_client_on_the_tls_port_is_refused_with_one_line(
    tls_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "vesalius.dimse.server")
    proc = dcmtk("echoscu", *tls_address(tls_server), check=False)
    assert proc.returncode != 0
    wait_until(lambda: HANDSHAKE_FAILED in caplog.text, what="the handshake log line")
    lines = [r.getMessage() for r in caplog.records if "tls handshake failed" in r.getMessage()]
    assert lines == [f'{HANDSHAKE_FAILED} reason="not a TLS client (plain DICOM on the TLS port?)"']
    # The plain port is still plain.
    assert dcmtk("echoscu", *tls_server.address).returncode == 0


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        (
            "other_ca_client",
            "a certificate signed by an authority not in tls.ca_certificates "
            "(unable to get local issuer certificate)",
        ),
        ("expired", "certificate has expired"),
    ],
)
def test_a_bad_client_certificate_is_refused_with_a_clear_line(
    tls_server: RunningServer,
    pki: Pki,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
    which: str,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, "vesalius.dimse.server")
    client: Issued = getattr(pki, which)
    proc = dcmtk("echoscu", *pki.dcmtk(client), *tls_address(tls_server), check=False)
    assert proc.returncode != 0
    wait_until(lambda: HANDSHAKE_FAILED in caplog.text, what="the handshake log line")
    assert f'{HANDSHAKE_FAILED} reason="{reason}"' in caplog.text
    # and audited as a Security Alert, Node Authentication (PS3.15 A.5.3.11)
    [alert] = [e for e in recorder.events if e.kind == "authentication-failed"]
    assert alert.outcome == "failure" and alert.who.host == "127.0.0.1"
    assert reason in alert.details["reason"]


def test_tls_1_1_is_refused(tls_server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "vesalius.dimse.server")
    proc = subprocess.run(
        ["openssl", "s_client", "-tls1_1", "-connect", f"127.0.0.1:{tls_server.dimse.tls_port}"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    wait_until(lambda: HANDSHAKE_FAILED in caplog.text, what="the handshake log line")
    assert "TLS version refused (TLS 1.2 or 1.3 only)" in caplog.text
    # And TLS 1.2 is served, with a BCP 195 suite.
    context = ssl.create_default_context(cafile=None)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", tls_server.dimse.tls_port)) as raw,
        context.wrap_socket(raw) as tls,
    ):
        cipher, version, _ = tls.cipher()
        assert version == "TLSv1.2"
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)


def test_drain_refuses_new_tls_associations_and_stop_closes_the_tls_port(
    tls_server: RunningServer, pki: Pki
) -> None:
    from vesalius.dicom.uids import VERIFICATION
    from vesalius.dimse.contexts import build_context
    from vesalius.dimse.requestor import AssociationRefused, connect
    from vesalius.tls import TlsFiles, client_context

    context = client_context(
        TlsFiles(
            str(pki.storescu.certificate), str(pki.storescu.private_key), str(pki.ca.certificate)
        )
    )
    port = tls_server.dimse.tls_port

    def associate() -> None:
        link = connect(
            "127.0.0.1", port, calling_ae="STORESCU", called_ae="VESALIUS",
            contexts=[build_context(VERIFICATION, ["1.2.840.10008.1.2"])], max_pdu=0,
            acse_timeout=10, network_timeout=10, dimse_timeout=10, tls=context,
        )  # fmt: skip
        link.release()

    associate()
    tls_server.dimse.drain()
    with pytest.raises(AssociationRefused, match="Temporary congestion"):
        associate()
    tls_server.dimse.stop(grace=1)
    assert not _accepts(port)


def test_an_idle_tls_association_is_ended_by_the_network_timeout(tmp_path: Path, pki: Pki) -> None:
    """The Upper Layer's kernel receive timeouts become the TLS socket's timeouts (OpenSSL
    would otherwise retry an expired read for ever): a silent peer is aborted."""
    from vesalius.dicom.uids import VERIFICATION
    from vesalius.dimse.contexts import build_context
    from vesalius.dimse.requestor import connect
    from vesalius.tls import client_context

    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **pki.settings(**{"dicom.network_timeout": 1}),
    )
    try:
        link = connect(
            "127.0.0.1", running.dimse.tls_port, calling_ae="IDLE", called_ae="VESALIUS",
            contexts=[build_context(VERIFICATION, ["1.2.840.10008.1.2"])], max_pdu=0,
            acse_timeout=10, network_timeout=None, dimse_timeout=None,
            tls=client_context(_ca_only(pki)),
        )  # fmt: skip
        link.sock.settimeout(30)
        first = link.sock.recv(1)  # the server's A-ABORT (type 0x07), or the end
        assert first in (b"\x07", b"")
        wait_until(lambda: not running.dimse.active(), what="the connection to end")
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def _ca_only(pki: Pki) -> TlsFiles:
    return TlsFiles("", "", str(pki.ca.certificate))


# -- Mutual TLS ---------------------------------------------------------------------------------


def test_a_calling_ae_other_than_the_certificates_peer_is_rejected(
    tls_server: RunningServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "vesalius.dimse.server")
    proc = dcmtk(
        "echoscu", "-v", *pki.dcmtk(), "-aet", "IMPOSTOR", *tls_address(tls_server), check=False
    )
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in output(proc)
    assert "calling AE IMPOSTOR, but its TLS certificate (CN=STORESCU) names peer STORESCU" in (
        caplog.text
    )
    stranger = dcmtk(
        "echoscu", *pki.dcmtk(pki.stranger), "-aet", "STRANGER", *tls_address(tls_server),
        check=False,
    )  # fmt: skip
    assert stranger.returncode != 0
    assert "(CN=STRANGER) names no known peer" in caplog.text


def test_certificate_subject_names_a_peer_by_another_common_name(
    tmp_path: Path, pki: Pki, recorder: Recorder
) -> None:
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        {"CT1": Modality("CT1", "CT_ONE", "127.0.0.1", 104, certificate_subject="STRANGER")},
        auditor=recorder,
        **pki.settings(**{"tls.verify_clients": "required"}),
    )
    try:
        path = tmp_path / "ct.dcm"
        make_instance(path)
        dcmtk(
            "storescu", *pki.dcmtk(pki.stranger), "-aet", "CT_ONE", *tls_address(running), str(path)
        )
        assert methods(recorder) == {"certificate"}
        # Required: a client without a certificate is refused.
        anonymous = dcmtk(
            "echoscu", "+tla", "+cf", str(pki.ca.certificate), *tls_address(running), check=False
        )
        assert anonymous.returncode != 0
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


# -- Our SCU over TLS ---------------------------------------------------------------------------


def test_vesalius_echo_and_send_over_tls(
    tls_server: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    config = scu_config(tmp_path, pki)
    target = f"{tls_server.ae_title}@127.0.0.1:{tls_server.dimse.tls_port}"
    runner = CliRunner()
    echo = runner.invoke(main, ["echo", target, "--tls", "--config", str(config)])
    assert echo.exit_code == 0, echo.output
    assert "Success" in echo.output
    plain = runner.invoke(main, ["echo", target, "--config", str(config)])
    assert plain.exit_code != 0  # a plain association on the TLS port
    # A server whose authority we do not trust: refused, with the reason.
    distrust = tmp_path / "distrust.toml"
    other_ca = pki.other_ca_client.certificate.parent / "ca.pem"
    distrust.write_text(config.read_text().replace(str(pki.ca.certificate), str(other_ca)))
    refused = runner.invoke(main, ["echo", target, "--tls", "--config", str(distrust)])
    assert refused.exit_code != 0
    assert "TLS handshake with VESALIUS" in refused.output
    assert "an authority not in tls.ca_certificates" in refused.output
    path = tmp_path / "ct.dcm"
    make_instance(path)
    sent = runner.invoke(main, ["send", str(path), "--to", target, "--tls", "-c", str(config)])
    assert sent.exit_code == 0, sent.output
    assert len(tls_server.stored_files()) == 1


def test_a_send_job_goes_over_tls_to_a_tls_peer(
    tls_server: RunningServer, pki: Pki, tmp_path: Path, dest_port: int
) -> None:
    from vesalius.identity import Identity
    from vesalius.services.retrieve import RetrieveKeys

    path = tmp_path / "ct.dcm"
    ds = make_instance(path)
    dcmtk("storescu", *tls_server.address, str(path))
    received = tmp_path / "received"
    dest = start_storescp(
        "DEST", dest_port, received, "+tls", str(pki.server.private_key),
        str(pki.server.certificate), "-rc", "+cf", str(pki.ca.certificate),
    )  # fmt: skip
    try:
        archive = tls_server.archive
        job = archive.sending.submit(
            RetrieveKeys("STUDY", study_uids=(ds.StudyInstanceUID,)), "DEST", Identity.system()
        )
        ended = archive.jobs.run_job(job.pk)
        assert ended is not None
        assert ended.state == "succeeded", ended
        assert len(list(received.iterdir())) == 1
    finally:
        dest.terminate()
        dest.wait(10)


# -- Configuration errors -----------------------------------------------------------------------


def test_unreadable_or_mismatched_files_are_one_config_error(pki: Pki, tmp_path: Path) -> None:
    def settings(**values: object) -> Settings:
        return load_settings(environ={}, overrides={"data_dir": str(tmp_path), **values})

    missing = settings(**pki.settings(**{"tls.certificate": str(tmp_path / "none.pem")}))
    with pytest.raises(ConfigError, match=r"none\.pem: cannot read it: No such file"):
        dimse_tls(missing)
    mismatched = settings(**pki.settings(**{"tls.private_key": str(pki.storescu.private_key)}))
    with pytest.raises(ConfigError, match=r"is not the key of tls\.certificate"):
        dimse_tls(mismatched)
    with pytest.raises(ConfigError, match="set both"):
        settings(**{"tls.certificate": str(pki.server.certificate)})
    with pytest.raises(ConfigError, match=r"http\.tls is true: set tls\.certificate"):
        settings(**{"http.tls": True})
    with pytest.raises(ConfigError, match=r"dicom\.plain is false: DIMSE over TLS needs"):
        settings(**{"dicom.plain": False})
    with pytest.raises(ConfigError, match=r"dicom\.tls_port is 70000: a TCP port is 1 to 65535"):
        settings(**pki.settings(**{"dicom.tls_port": 70000}))
    with pytest.raises(ConfigError, match=r"set tls\.ca_certificates to the authorities"):
        settings(**{"tls.verify_clients": "required"})
    with pytest.raises(ConfigError, match="must be one of none, optional, required"):
        settings(**pki.settings(**{"tls.verify_clients": "yes"}))
    # Relative paths in a settings file are the file's folder's.
    (tmp_path / "site").mkdir()
    config = tmp_path / "site" / "vesalius.toml"
    config.write_text('[tls]\ncertificate = "tls/server.pem"\nprivate_key = "tls/key.pem"\n')
    loaded = load_settings(config, environ={})
    assert loaded["tls.certificate"] == str(tmp_path / "site" / "tls" / "server.pem")
    assert loaded["dicom.tls_port"] == 2762
    assert dimse_tls(load_settings(environ={})) is None  # no certificate: no TLS port
    # [modalities.NAME] tls and certificate_subject.
    config.write_text(
        '[modalities.CT1]\nae_title = "CT1"\nhost = "ct1"\nport = 2762\ntls = true\n'
        'certificate_subject = "ct1.example.org"\n'
    )
    ct1 = load_settings(config, environ={}).modalities["CT1"]
    assert (ct1.tls, ct1.certificate_subject) == (True, "ct1.example.org")
    config.write_text('[modalities.CT1]\nae_title = "CT1"\nhost = "ct1"\nport = 104\ntls = "yes"\n')
    with pytest.raises(ConfigError, match="tls is true or false"):
        load_settings(config, environ={})


def test_serve_with_a_mismatched_key_exits_78_with_one_line(pki: Pki, tmp_path: Path) -> None:
    with serve(
        tmp_path, pki.settings(**{"tls.private_key": str(pki.storescu.private_key)}), ready=False
    ) as served:
        code = served.proc.wait(60)
        text = served.log_text()
    assert code == 78
    assert "is not the key of tls.certificate" in text
    assert "Traceback" not in text


# -- vesalius serve: TLS only, HTTPS, reload ------------------------------------------------------


def test_serve_tls_only_with_https_and_hsts(pki: Pki, tmp_path: Path) -> None:
    tls_port = free_port()
    settings = pki.settings(
        **{"dicom.tls_port": tls_port, "dicom.plain": False, "http.tls": True, "dicom.workers": 2}
    )
    with serve(tmp_path, settings, ready=False) as served:
        wait_for_port(served.http_port)
        wait_for_port(tls_port)
        with httpx.Client(verify=ssl.create_default_context(cafile=pki.ca.certificate)) as http:
            answer = http.get(f"https://localhost:{served.http_port}/health")
        assert answer.status_code == 200
        assert answer.headers["strict-transport-security"] == "max-age=31536000"
        for _ in range(3):  # spread over both processes
            dcmtk("echoscu", *pki.dcmtk(), "-aec", "VESALIUS", "127.0.0.1", str(tls_port))
        assert not _accepts(served.dicom_port)  # no plain DIMSE port
        # SIGHUP with the settings naming another pair: every process serves it.
        renewed = issue(pki.ca, tmp_path, "renewed", "localhost", names=server_names())
        config = tmp_path / "vesalius.toml"
        text = config.read_text()
        text = text.replace(str(pki.server.certificate), str(renewed.certificate))
        text = text.replace(str(pki.server.private_key), str(renewed.private_key))
        config.write_text(text)
        served.proc.send_signal(signal.SIGHUP)
        second = _fingerprint(renewed.certificate)
        wait_until(
            lambda: all(
                _served_fingerprint(port, pki.ca.certificate) == second
                for port in [tls_port] * 4 + [served.http_port] * 4
            ),
            what="the new pair in every process",
        )
    log = served.log_text()
    assert "on port " in log and "(TLS)" in log
    assert "restart needed" not in log


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _served_fingerprint(port: int, ca: Path) -> str:
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _fingerprint(certificate: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(certificate.read_text())).hexdigest()


def test_a_renewed_certificate_is_served_without_a_restart(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "vesalius.tls")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.server.certificate, live / "server.pem")
    shutil.copy(pki.server.private_key, live / "server-key.pem")
    settings = {
        **pki.settings(),
        "tls.certificate": str(live / "server.pem"),
        "tls.private_key": str(live / "server-key.pem"),
    }
    running = make_server(tmp_path / "data", f"sqlite:///{tmp_path / 'index.sqlite'}", **settings)
    loaded = load_settings(environ={}, overrides={"data_dir": str(tmp_path), **settings})
    https = http_tls(loaded.__class__({**loaded.values, "http.tls": True}))
    assert https is not None
    listener = bind_http("127.0.0.1", 0)
    http = http_server(
        http_app(running.archive, running.settings), http_limits(running.settings), tls=https
    )
    thread = threading.Thread(target=http.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    tls.watch()  # as vesalius serve does in each process, once its contexts are made
    try:
        wait_until(lambda: http.started, what="HTTPS start")
        http_port = listener.getsockname()[1]
        port = running.dimse.tls_port
        first = _fingerprint(pki.server.certificate)
        assert _served_fingerprint(port, pki.ca.certificate) == first
        assert _served_fingerprint(http_port, pki.ca.certificate) == first
        # A broken pair: the running certificate stays, and the error is logged.
        (live / "server.pem").write_text("not a certificate\n")
        wait_until(lambda: "the new certificate does not load" in caplog.text, what="error")
        assert _served_fingerprint(port, pki.ca.certificate) == first
        # A renewed pair, written as a deployment tool would (key first, then certificate).
        renewed = issue(pki.ca, tmp_path, "renewed", "localhost", names=server_names())
        shutil.copy(renewed.private_key, live / "server-key.pem")
        shutil.copy(renewed.certificate, live / "server.pem")
        second = _fingerprint(renewed.certificate)
        wait_until(
            lambda: _served_fingerprint(port, pki.ca.certificate) == second,
            what="the renewed certificate on DIMSE",
        )
        wait_until(
            lambda: _served_fingerprint(http_port, pki.ca.certificate) == second,
            what="the renewed certificate on HTTPS",
        )
    finally:
        http.should_exit = True
        thread.join(10)
        listener.close()
        running.dimse.stop(grace=2)
        running.archive.close()


# -- vesalius cert create -----------------------------------------------------------------------


def test_cert_create_makes_a_working_site(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    result = CliRunner().invoke(
        main,
        ["cert", "create", "--dir", str(folder), "--san", "pacs.example.org", "--client", "CT1"],
    )
    assert result.exit_code == 0, result.output
    for name in ("ca", "server", "client-CT1"):
        assert (folder / f"{name}.pem").is_file()
        assert (folder / f"{name}-key.pem").stat().st_mode & 0o777 == 0o600
    assert f'certificate = "{folder / "server.pem"}"' in result.output
    assert f'ca_certificates = "{folder / "ca.pem"}"' in result.output
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(folder / "server.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    assert "DNS:pacs.example.org" in text
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(folder / "ca.pem"), str(folder / "client-CT1.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Run again: the authority is kept, so certificates made before stay valid.
    ca = (folder / "ca.pem").read_bytes()
    again = CliRunner().invoke(main, ["cert", "create", "--dir", str(folder)])
    assert again.exit_code == 0
    assert (folder / "ca.pem").read_bytes() == ca
