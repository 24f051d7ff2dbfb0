"""Logs (docs/operations.md, "Logs"), against a real ``vesalius serve``: one format for every
line (logfmt or JSON), an access line per HTTP request with its X-Request-ID, an association
id on DIMSE lines, the DIMSE messages at debug, no patient data in the ordinary log, an audit
trail whatever the level, and rotation with worker processes writing."""

from __future__ import annotations

import json
import logging
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from conftest import dcmtk, free_port, run_cli, wait_until
from loglines import audit_records, audit_trail, parse, parse_logfmt, records
from served import Served, serve
from synth import make_instance
from vesalius.logs import LineFormatter

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FIELDS = ("time", "level", "logger", "process", "pid", "msg")
PATIENT_NAME = "Zyxwold^Quentessa"
PATIENT_ID = "PID-7Q4X9Z"
BIRTH_DATE = "19330517"


def echo(served: Served) -> None:
    dcmtk("echoscu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port))


def store(served: Served, *paths: Path) -> None:
    dcmtk(
        "storescu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port), *map(str, paths)
    )


def check_every_line(text: str, form: str) -> list[dict[str, Any]]:
    """Every line parses, and has the fields every line has."""
    parsed = records(text, form)
    assert parsed, "an empty log"
    for record in parsed:
        assert all(key in record for key in FIELDS), record
        assert TIME.match(record["time"]), record["time"]
        assert record["level"] in ("debug", "info", "warning", "error", "critical"), record
        assert record["process"] == "main" or record["process"].startswith("worker-"), record
    return parsed


@pytest.mark.parametrize("form", ["json", "logfmt"])
def test_every_line_parses_and_carries_its_ids(tmp_path: Path, form: str) -> None:
    """At debug, with a worker: every line (ours, uvicorn's, alembic's) parses; each HTTP
    request has an access line whose request id is the X-Request-ID answered (or the one
    sent); the lines of an association share its id, and the DIMSE messages are there."""
    settings = {"log.format": form, "log_level": "debug", "dicom.workers": 2}
    with serve(tmp_path, settings) as served:
        echo(served)
        instance = make_instance(tmp_path / "one.dcm")
        store(served, tmp_path / "one.dcm")
        with httpx.Client(base_url=served.url, timeout=30) as client:
            answers = [client.get("/dicom-web/studies", params={"limit": "5"}) for _ in range(4)]
            sent = client.get("/health", headers={"X-Request-ID": "from-the-proxy-1"})
            bogus = client.get("/health", headers={"X-Request-ID": "spaces are not ok"})
    parsed = check_every_line(served.log_text(), form)
    loggers = {r["logger"] for r in parsed}
    assert any(name.startswith("uvicorn") for name in loggers), loggers
    assert any(name.startswith("alembic") for name in loggers), loggers
    assert {r["process"] for r in parsed} >= {"main", "worker-1"}

    access = [r for r in parsed if r["logger"] == "vesalius.access"]
    by_id = {r["request_id"]: r for r in access}
    for answer in answers:
        request_id = answer.headers["X-Request-ID"]
        line = by_id[request_id]
        assert (line["method"], line["path"], line["query"]) == (
            "GET",
            "/dicom-web/studies",
            "limit",
        )
        assert int(line["status"]) == 200 and int(line["bytes"]) == len(answer.content)
        assert float(line["ms"]) >= 0 and line["client"] == "127.0.0.1"
    assert sent.headers["X-Request-ID"] == "from-the-proxy-1" and "from-the-proxy-1" in by_id
    assert bogus.headers["X-Request-ID"] != "spaces are not ok"
    for answer in (*answers, sent):
        request_id = answer.headers["X-Request-ID"]
        assert [r["request_id"] for r in access].count(request_id) == 1

    accepted = [r for r in parsed if " accepted: " in r["msg"]]
    assert len(accepted) == 2 and all("assoc_id" in r for r in accepted), accepted
    assert len({r["assoc_id"] for r in accepted}) == 2
    for line in accepted:
        assert line["calling_ae"] and line["called_ae"] == served.ae_title
        mine = [r for r in parsed if r.get("assoc_id") == line["assoc_id"]]
        messages = [r["msg"] for r in mine]
        (released,) = [m for m in messages if "released after" in m]
        if "received C-ECHO-RQ" in messages:
            assert "1 C-ECHO-RQ" in released
            (response,) = [r for r in mine if r["msg"] == "sent C-ECHO-RSP"]
            assert response["status"] == "0x0000"
        else:
            assert "1 C-STORE-RQ" in released
            (request,) = [r for r in mine if r["msg"] == "received C-STORE-RQ"]
            assert request["sop_instance"] == instance.SOPInstanceUID
            (response,) = [r for r in mine if r["msg"] == "sent C-STORE-RSP"]
            assert response["status"] == "0x0000"


def test_access_log_can_be_turned_off(tmp_path: Path) -> None:
    with serve(tmp_path, {"log.access": False, "dicom.workers": 1}) as served:
        answer = httpx.get(served.url + "/health", timeout=10)
        assert "X-Request-ID" not in answer.headers
    assert not [r for r in records(served.log_text()) if r["logger"] == "vesalius.access"]


def workload(served: Served, tmp_path: Path) -> str:
    """Store an instance of a named patient, find it by C-FIND and QIDO-RS by name and ID,
    retrieve its metadata; return its Study Instance UID."""
    study = generate_uid()
    path = tmp_path / "patient.dcm"
    make_instance(
        path,
        PatientName=PATIENT_NAME,
        PatientID=PATIENT_ID,
        PatientBirthDate=BIRTH_DATE,
        StudyInstanceUID=study,
    )
    store(served, path)
    found = dcmtk(
        "findscu",
        "-S",
        "-aec",
        served.ae_title,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"PatientName={PATIENT_NAME}",
        "-k",
        f"PatientID={PATIENT_ID}",
        "-k",
        "StudyInstanceUID",
        "127.0.0.1",
        str(served.dicom_port),
    )
    assert study in found.stdout + found.stderr
    with httpx.Client(base_url=served.url, timeout=30) as client:
        qido = client.get(
            "/dicom-web/studies",
            params={"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID},
        )
        assert qido.status_code == 200 and study in qido.text
        assert client.get(f"/dicom-web/studies/{study}/metadata").status_code == 200
        bad = client.get("/dicom-web/studies", params={"PatientBirthDate": f"{BIRTH_DATE}-x"})
        assert bad.status_code >= 400
    return study


@pytest.mark.parametrize("level", ["info", "debug"])
def test_no_patient_data_in_the_log(tmp_path: Path, level: str) -> None:
    """The ordinary log (a file here) holds no patient name, ID or birth date at info or at
    debug, and no Study Instance UID at info; the audit file has them."""
    log_file = tmp_path / "logs" / "vesalius.log"
    settings = {
        "log_level": level,
        "log.file": str(log_file),
        "dicom.workers": 2,
        # the audit trail's paths too: a syslog collector that is down (warnings logged)
        "audit.syslog_url": f"tls://127.0.0.1:{free_port()}",
    }
    with serve(tmp_path, settings) as served:
        study = workload(served, tmp_path)
        wado = httpx.get(f"{served.url}/dicom-web/studies/{study}", timeout=30)
        assert wado.status_code == 200
        if level == "info":  # a refused identifier's reason quotes it: at debug only
            refused = dcmtk(
                "findscu",
                "-S",
                "-aec",
                served.ae_title,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"PatientBirthDate={BIRTH_DATE}x",
                "127.0.0.1",
                str(served.dicom_port),
                check=False,
            )
            assert refused.returncode == 0
    text = log_file.read_text()
    check_every_line(text, "logfmt")
    for secret in (PATIENT_NAME, PATIENT_NAME.split("^")[0], PATIENT_ID, BIRTH_DATE):
        assert secret not in text, secret
        assert secret not in served.log_text(), secret  # stderr: nothing of it either
    if level == "info":
        assert study not in text
        assert "C-FIND refused (0xC000): QueryError" in text
    else:
        assert study in text  # the identifiers are there at debug, for the exchanges
    access = [r for r in records(text) if r["logger"] == "vesalius.access"]
    assert any(r["query"] == "PatientName,PatientID" for r in access), access
    trail = audit_trail(served.data_dir)
    events = [json.loads(line) for line in trail.splitlines()]
    stored = [e for e in events if e["event"] == "instance-stored"]
    assert stored and stored[0]["patient_id"] == PATIENT_ID
    assert PATIENT_ID in trail
    assert "syslog collector" in text  # the forwarding failed, and said so without them
    # the trail in the index has them, and says who accessed the patient's data how
    listed = run_cli("audit", "--patient", PATIENT_ID, "--json", "--data-dir", str(served.data_dir))
    assert listed.returncode == 0, listed.stderr
    kinds = {json.loads(line)["event"] for line in listed.stdout.splitlines()}
    assert {"instances-stored", "metadata-read", "instances-transferred"} <= kinds


@pytest.mark.parametrize("audit_file", ["", "-"])
def test_the_audit_does_not_depend_on_the_log_level(tmp_path: Path, audit_file: str) -> None:
    """At warning, no info line is logged, and every audit record is written: to data_dir's
    audit.log by default, and never in the log; or with the log (``audit.file = "-"``, for
    a container's one stream)."""
    settings = {"log_level": "warning", "dicom.workers": 2, "audit.file": audit_file}
    with serve(tmp_path, settings) as served:
        path = tmp_path / "warn.dcm"
        make_instance(path, PatientName=PATIENT_NAME, PatientID=PATIENT_ID)
        store(served, path)
    parsed = records(served.log_text())
    assert not [
        r for r in parsed if r["level"] in ("info", "debug") and r["logger"] != "vesalius.audit"
    ]
    in_log = audit_records(served.log_text())
    if audit_file == "-":
        events = in_log
        assert not (served.data_dir / "audit.log").exists()
    else:
        assert in_log == [] and PATIENT_ID not in served.log_text()
        events = [json.loads(line) for line in audit_trail(served.data_dir).splitlines()]
    assert [e["event"] for e in events].count("instance-stored") == 1
    (stored,) = [e for e in events if e["event"] == "instance-stored"]
    assert stored["patient_id"] == PATIENT_ID
    assert [e["event"] for e in events if e["event"].startswith("application-")] == [
        "application-start",
        "application-stop",
    ]


def test_rotation_with_workers(tmp_path: Path) -> None:
    """Two processes log into one file rotated small: every line of every file is whole and
    parses, lines of both processes are there, and the rotated files were kept."""
    log_file = tmp_path / "vesalius.log"
    settings = {
        "log.file": str(log_file),
        "log.max_mb": 0.02,
        "log.backups": 3,
        "log.format": "json",
        "log_level": "debug",
        "dicom.workers": 2,
    }
    with serve(tmp_path, settings) as served:

        def hit(n: int) -> int:
            with httpx.Client(base_url=served.url, timeout=30) as client:
                for _ in range(25):
                    client.get("/dicom-web/studies", params={"n": str(n)})
            return n

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(hit, range(8)))
        for _ in range(3):
            echo(served)
    files = sorted(tmp_path.glob("vesalius.log*"))
    assert [f.name for f in files] == [
        "vesalius.log",
        "vesalius.log.1",
        "vesalius.log.2",
        "vesalius.log.3",
    ]
    processes = set()
    for path in files[1:]:
        assert path.stat().st_size <= 0.02 * (1 << 20) + 4096
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n"), path
        for record in check_every_line(data.decode(), "json"):
            processes.add(record["process"])
    assert {"main", "worker-1"} <= processes


def test_a_line_is_one_line_whatever_the_message() -> None:
    """A value a peer controls (an AE title, a path) cannot split a line or forge a field."""
    nasty = 'AE\r\nlevel=error msg="forged"\x00\u2028 é " \\ = end'
    for form in ("logfmt", "json"):
        record = logging.LogRecord(
            "vesalius.dimse", logging.INFO, __file__, 1, "%s", (nasty,), None
        )
        record.peer = nasty
        line = LineFormatter(form).format(record)
        assert len(line.splitlines()) == 1 and line.isascii()
        parsed = parse(line, form)
        assert parsed["msg"] == nasty and parsed["peer"] == nasty and parsed["level"] == "info"
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    parsed = parse_logfmt(LineFormatter().format(record))
    assert "Traceback" in parsed["exc"] and "ValueError: boom" in parsed["exc"]


def test_bad_log_settings_are_one_clear_error(tmp_path: Path) -> None:
    from vesalius.errors import ConfigError
    from vesalius.logs import LogConfig
    from vesalius.settings import load_settings

    def config(**values: Any) -> LogConfig:
        overrides = {
            "data_dir": str(tmp_path),
            **{k.replace("__", "."): v for k, v in values.items()},
        }
        return LogConfig.from_settings(load_settings(environ={}, overrides=overrides))

    with pytest.raises(ConfigError, match=r"log\.format must be one of logfmt, json"):
        config(log__format="xml")
    with pytest.raises(ConfigError, match="log_level must be one of"):
        config(log_level="chatty")
    with pytest.raises(ConfigError, match=r"audit\.file must not be log\.file"):
        config(log__file="x.log", audit__file="x.log")
    default = config(log__file="logs/v.log")
    assert default.file == tmp_path / "logs" / "v.log"
    assert default.audit_file == tmp_path / "audit.log"
    assert config(audit__file="-").audit_file is None


def test_the_lines_of_a_job_carry_its_id(tmp_path: Path) -> None:
    """A send queued for the server's runner (to the server itself): the runner's lines about
    it carry ``job_id``; the association it opens is served under an ``assoc_id``."""
    port = free_port()
    settings = {
        "dicom.port": port,
        "dicom.workers": 1,
        "modalities.SELF.ae_title": "VESALIUS",
        "modalities.SELF.host": "127.0.0.1",
        "modalities.SELF.port": port,
    }
    with serve(tmp_path, settings) as served:
        path = tmp_path / "sent.dcm"
        study = str(make_instance(path).StudyInstanceUID)
        store(served, path)
        command = ["send", "--study", study, "--to", "SELF", "--no-wait"]
        queued = run_cli(*command, "--config", str(tmp_path / "vesalius.toml"))
        assert queued.returncode == 0, queued.stderr
        done = lambda: [r for r in records(served.log_text()) if "succeeded" in r["msg"]]  # noqa: E731
        wait_until(lambda: bool(done()), 60, "the job done")
    parsed = records(served.log_text())
    (finished,) = done()
    job_lines = [r for r in parsed if r.get("job_id") == finished["job_id"]]
    assert job_lines[0]["msg"].startswith(f"job {finished['job_id']} (send) attempt")
    accepted = [r for r in parsed if " accepted: " in r["msg"]]
    assert [r["calling_ae"] for r in accepted] == ["STORESCU", "VESALIUS"]
    assert all("assoc_id" in r and "job_id" not in r for r in accepted)
