"""The authorization point and the audit sink of the services (issue 12, item 2): a policy
refusal is 0x0124 over DIMSE and 403 over HTTP, whichever door; the audit trail records
whatever the log level, and a retrieve is audited by the service however it ends."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from conftest import RunningServer, dcmtk, make_server, running_http, wait_until
from loglines import audit_trail
from served import serve
from vesalius.errors import ForbiddenError
from vesalius.identity import Identity
from vesalius.services.audit import AuditEvent, Auditor, MemorySink
from vesalius.services.events import Event
from vesalius.services.policy import ARCHIVE, Action, Resource

CT = get_testdata_file("CT_small.dcm")
#: How DCMTK prints status 0x0124 (it has no name for it on every service).
NOT_AUTHORIZED = re.compile(r"NotAuthorized|0x0?124\b", re.I)
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


class Refuse:
    """A policy refusing some (identity name, action) pairs, allowing the rest."""

    def __init__(self, *refused: tuple[str, Action]) -> None:
        self.refused = set(refused)
        self.asked: list[tuple[str, Action, Resource]] = []

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        self.asked.append((who.name, action, resource))
        if (who.name, action) in self.refused:
            raise ForbiddenError(f"{who.name} may not {action}")

    def visible_labels(self, who: Identity) -> frozenset[str] | None:
        return None  # every study


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[RunningServer, Refuse, MemorySink]]:
    policy = Refuse(
        ("NOSTORE", "store"),
        ("NOFIND", "query"),
        ("NOGET", "retrieve"),
        ("anonymous", "read"),
    )
    sink = MemorySink()
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        policy=policy,
        auditor=Auditor([sink]),
    )
    try:
        yield running, policy, sink
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def test_refusals_are_0124_over_dimse(
    guarded: tuple[RunningServer, Refuse, MemorySink], tmp_path: Path
) -> None:
    server, policy, sink = guarded
    address = ["-aec", server.ae_title, "127.0.0.1", str(server.port)]
    refused = dcmtk("storescu", "-v", "-aet", "NOSTORE", *address, CT, check=False)
    assert NOT_AUTHORIZED.search(refused.stdout + refused.stderr)
    assert server.catalog.count_instances() == 0
    dcmtk("storescu", "-aet", "ALLOWED", *address, CT)
    assert server.catalog.count_instances() == 1
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_STUDY}"]
    find = dcmtk("findscu", "-v", "-S", "-aet", "NOFIND", *address, *keys, check=False)
    assert NOT_AUTHORIZED.search(find.stdout + find.stderr)
    get = dcmtk(
        "getscu", "-v", "-S", "-aet", "NOGET", "-od", str(tmp_path), *address, *keys, check=False
    )
    assert NOT_AUTHORIZED.search(get.stdout + get.stderr)
    assert list(tmp_path.glob("*.dcm")) == [] and not list(tmp_path.glob("CT*"))
    # the policy saw who asked what, on which study
    retrieve = [r for name, action, r in policy.asked if action == "retrieve" and name == "NOGET"]
    assert retrieve and retrieve[0].study_uids == (CT_STUDY,)
    # and the refused retrieve is in the audit trail, recorded by the service
    refusals = [
        e for e in sink.events if e.event == "instances-transferred" and e.who.name == "NOGET"
    ]
    assert [e.outcome for e in refusals] == ["failure"]
    assert "may not retrieve" in refusals[0].details["reason"]


def test_refusals_are_403_over_http(guarded: tuple[RunningServer, Refuse, MemorySink]) -> None:
    server, _policy, _sink = guarded
    dcmtk("storescu", "-aet", "ALLOWED", "-aec", server.ae_title, "127.0.0.1", str(server.port), CT)
    with running_http(server.archive, server.settings) as url:
        answer = httpx.get(f"{url}/dicom-web/studies/{CT_STUDY}/metadata", timeout=10)
        assert answer.status_code == 403
        assert "anonymous may not read" in answer.json()["error"]
        assert httpx.get(f"{url}/dicom-web/studies", timeout=10).status_code == 200


def test_every_transfer_is_audited_by_the_service(
    guarded: tuple[RunningServer, Refuse, MemorySink],
) -> None:
    """A WADO-RS retrieve streamed to the end, and one the client drops after its first
    byte: both audited by the retrieve service, the first as a success."""
    server, _policy, sink = guarded
    dcmtk("storescu", "-aet", "ALLOWED", "-aec", server.ae_title, "127.0.0.1", str(server.port), CT)
    with running_http(server.archive, server.settings) as url, httpx.Client(timeout=10) as http:
        assert http.get(f"{url}/dicom-web/studies/{CT_STUDY}").status_code == 200
        with http.stream("GET", f"{url}/dicom-web/studies/{CT_STUDY}") as answer:
            next(answer.iter_raw(1))

        def transfers() -> list[AuditEvent]:
            return [e for e in sink.events if e.event == "instances-transferred"]

        wait_until(lambda: len(transfers()) == 2, what="both transfers audited")
    first = transfers()[0]
    assert (first.outcome, first.details["completed"], first.details["remaining"]) == (
        "success",
        1,
        0,
    )


def test_audit_records_whatever_the_log_level(tmp_path: Path) -> None:
    """A server logging at ``error`` still writes every audit record."""
    with serve(tmp_path, {"log_level": "error", "dicom.workers": 1}) as served:
        dcmtk("storescu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port), CT)
        log = served.log_text()
    assert '"event": "instance-stored"' in audit_trail(served.data_dir)
    assert "level=info" not in log  # the rest of the log is at error level


def test_the_audit_logger_ignores_the_root_level() -> None:
    """Audit records reach the root logger's handlers even with the root level at ERROR (as
    ``log_level = error`` sets it)."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    level, handler = root.level, Keep()
    root.setLevel(logging.ERROR)
    root.addHandler(handler)
    try:
        Auditor()(Event("query", Identity.system("test"), details={"matches": 0}))
        logging.getLogger("vesalius.other").info("not audit: filtered by the root level")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert [r.name for r in seen] == ["vesalius.audit"]
    assert '"event": "query"' in seen[0].getMessage()
