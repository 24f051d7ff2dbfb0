"""Audit messages forwarded to a syslog collector (RFC 5424), Debian's rsyslog receiving: over
TLS (RFC 5425, its gtls driver, a CA and certificate made here) and UDP (RFC 5426). The
messages it parses carry the event kind as MSGID and a valid A.5 message as MSG; a collector
that is down holds nothing up, and is reached once it comes up."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from pydicom.uid import generate_uid

from conftest import dcmtk, free_port, make_server, port_open, wait_until
from synth import make_instance
from vesalius.identity import Identity
from vesalius.index.audit_trail import AuditRecord
from vesalius.services.audit_messages import AuditSource, validator
from vesalius.services.audit_trail import to_record
from vesalius.services.events import Event
from vesalius.telemetry.syslog import Collector, SyslogSender, format_message, tls_context

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
PATIENT = "SYSLOG-PAT-1"
#: RFC 5424 HEADER: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD
HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\d+) "
    rb"(?P<msgid>\S+) - \xef\xbb\xbf<AuditMessage>"
)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1 and localhost: (ca, cert, key) PEMs."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("audit test CA"))
        .issuer_name(_name("audit test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextmanager
def rsyslog(folder: Path, udp_port: int, tls_port: int) -> Iterator[Path]:
    """rsyslogd in the foreground, a child of this test: UDP and TLS (gtls) inputs on
    127.0.0.1, every message's MSGID, APP-NAME, input and MSG written to a file, one line
    each. Yields that file once the TLS port accepts connections."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca, cert, key = pki if all(p.exists() for p in pki) else make_pki(folder)
    out = folder / "received.log"
    conf = folder / "rsyslog.conf"
    conf.write_text(
        f"""
global(workDirectory="{folder}" maxMessageSize="64k"
       defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="{tls_port}")
template(name="fields" type="list") {{
  property(name="msgid") constant(value="\\t") property(name="app-name")
  constant(value="\\t") property(name="inputname") constant(value="\\t")
  property(name="msg") constant(value="\\n")
}}
action(type="omfile" file="{out}" template="fields")
"""
    )
    proc = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(folder / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: proc.poll() is not None or port_open(tls_port), what="rsyslogd to listen"
        )
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        yield out
    finally:
        proc.terminate()
        proc.wait(30)


def received(out: Path) -> list[tuple[str, str, str, str]]:
    """(msgid, app-name, input, msg) of every message rsyslog wrote."""
    if not out.exists():
        return []
    rows = []
    for line in out.read_text(encoding="utf-8").splitlines():
        msgid, app, source, msg = line.split("\t", 3)
        rows.append((msgid, app, source, msg.lstrip("\ufeff ").strip()))
    return rows


def workload(tmp_path: Path, url: str, ca: Path | None) -> str:
    """An archive forwarding to ``url``: one C-STORE association (two instances) and one
    C-FIND; closed at the end (a clean shutdown). Returns the study stored."""
    extra: dict[str, object] = {"audit.syslog_url": url, "audit.syslog_app_name": "pacs-test"}
    if ca is not None:
        extra["audit.syslog_ca"] = str(ca)
    running = make_server(tmp_path / "data", f"sqlite:///{tmp_path / 'index.sqlite'}", **extra)
    study = generate_uid()
    paths = []
    for n in range(2):
        path = tmp_path / f"i{n}.dcm"
        make_instance(path, PatientID=PATIENT, StudyInstanceUID=study)
        paths.append(path)
    try:
        dcmtk("storescu", *running.address, *map(str, paths))
        dcmtk(
            "findscu",
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"PatientID={PATIENT}",
            *running.address,
        )
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()
    return study


@pytest.mark.parametrize("scheme", ["tls", "udp"])
def test_rsyslog_receives_valid_audit_messages(tmp_path: Path, scheme: str) -> None:
    udp_port, tls_port = free_port(), free_port()
    with rsyslog(tmp_path / "rsyslog", udp_port, tls_port) as out:
        port = tls_port if scheme == "tls" else udp_port
        ca = tmp_path / "rsyslog" / "ca.pem" if scheme == "tls" else None
        study = workload(tmp_path, f"{scheme}://127.0.0.1:{port}", ca)
        wait_until(
            lambda: {"instances-stored", "query"} <= {r[0] for r in received(out)},
            what="rsyslog to write the messages",
        )
    schema = validator()
    rows = received(out)
    for msgid, app, source, msg in rows:
        assert app == "pacs-test"
        assert source == ("imtcp" if scheme == "tls" else "imudp")
        message = etree.fromstring(msg.encode())
        assert schema.validate(message), (msgid, schema.error_log)
    (stored,) = [etree.fromstring(m.encode()) for k, _, _, m in rows if k == "instances-stored"]
    objects = {e.get("ParticipantObjectID") for e in stored.iter("ParticipantObjectIdentification")}
    assert objects == {PATIENT, study}
    assert [e.get("NumberOfInstances") for e in stored.iter("SOPClass")] == ["2"]


def record(n: int) -> AuditRecord:
    event = Event("query", Identity.ae("FINDER", "127.0.0.1"), details={"level": "STUDY", "n": n})
    return to_record(event, AuditSource("TEST@host", "TEST"))


def test_the_message_is_rfc5424() -> None:
    """PRI authpriv.notice (85), version 1, the record's time, APP-NAME, PROCID, MSGID the
    event kind, no structured data, a BOM and the XML."""
    raw = format_message(record(1), "vesalius", "pacs.example", 4242)
    match = HEADER.match(raw)
    assert match, raw[:120]
    assert match["pri"] == b"85" and match["app"] == b"vesalius" and match["pid"] == b"4242"
    assert match["msgid"] == b"query" and match["host"] == b"pacs.example"
    assert dt.datetime.fromisoformat(match["time"].decode()).tzinfo is not None
    refused = Event("access-refused", Identity.http("10.0.0.9", "eve"), "refused")
    failed = format_message(to_record(refused, AuditSource("S", "AE")), "v", "h", 1)
    assert failed.startswith(b"<84>1 ")  # authpriv.warning


def test_a_down_collector_holds_nothing_up_and_is_reached_when_it_comes_up(
    tmp_path: Path,
) -> None:
    """Records for a collector not listening wait in the bounded queue (the rest are dropped
    and counted), submit never blocks; once rsyslog listens on that port, the sender connects
    and what waited arrives."""
    udp_port, tls_port = free_port(), free_port()
    folder = tmp_path / "rsyslog"
    folder.mkdir()
    ca, _, _ = make_pki(folder)  # rsyslog() below uses these
    sender = SyslogSender(
        Collector("tls", "127.0.0.1", tls_port), context=tls_context(str(ca)), max_queue=5
    )
    try:
        for n in range(50):
            sender.submit(record(n))  # returns at once: the collector is down
        assert sender.dropped >= 50 - 5 - 1  # the queue, and the one being tried
        assert sender.sent == 0
        with rsyslog(folder, udp_port, tls_port) as out:
            wait_until(lambda: len(received(out)) >= 5, timeout=90, what="the queued records")
            assert all(r[0] == "query" for r in received(out))
    finally:
        sender.close()
    assert sender.sent >= 5
