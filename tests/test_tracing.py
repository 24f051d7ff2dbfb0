"""OpenTelemetry tracing of a real ``vesalius serve`` (two processes) exporting over OTLP/HTTP
to a receiver here: an HTTP request joins the caller's trace (``traceparent``) and the
services' work is a child of its span; a DIMSE operation is a span with its ingest below."""

from __future__ import annotations

import gzip
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydicom.uid import generate_uid

from conftest import dcmtk, wait_until
from served import serve
from synth import make_instance
from test_metrics import BOUNDARY, stow_body


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, object]
    service: str


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def add(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes = {
                        a.key: getattr(a.value, a.value.WhichOneof("value")) for a in s.attributes
                    }
                    span = Span(
                        s.name,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        attributes,
                        service,
                    )
                    with self.lock:
                        self.spans.append(span)

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()


def test_requests_are_traced_through_the_services(tmp_path: Path, receiver: Receiver) -> None:
    study = generate_uid()
    stowed, stored = tmp_path / "in" / "stowed.dcm", tmp_path / "in" / "stored.dcm"
    make_instance(stowed, StudyInstanceUID=study)
    make_instance(stored, StudyInstanceUID=study)
    settings = {"dicom.workers": 2, "tracing.otlp_endpoint": receiver.url}
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{parent_id}-01"
    with serve(tmp_path / "pacs", settings) as served, httpx.Client(base_url=served.url) as web:
        stow = web.post(
            "/dicom-web/studies",
            content=stow_body([stowed]),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                "traceparent": traceparent,
            },
        )
        assert stow.status_code == 200, stow.text
        qido = web.get("/dicom-web/studies", headers={"traceparent": traceparent})
        assert qido.status_code == 200 and len(qido.json()) == 1
        wado = web.get(f"/dicom-web/studies/{study}", headers={"traceparent": traceparent})
        assert wado.status_code == 200
        dcmtk("storescu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port), str(stored))

        def arrived() -> bool:
            ours = {s.name for s in receiver.spans if s.trace_id == trace_id}
            wanted = {"POST /dicom-web/studies", "GET /dicom-web/studies", "ingest", "query"}
            return wanted <= ours and "retrieve" in ours and bool(receiver.named("C-STORE"))

        wait_until(arrived, 30, "the spans")

    ours = [s for s in receiver.spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in ours}
    for name, child in (
        ("POST /dicom-web/studies", "ingest"),
        ("GET /dicom-web/studies", "query"),
        ("GET /dicom-web/studies/{study}", "retrieve"),
    ):
        (server_span,) = [s for s in ours if s.name == name]
        assert server_span.parent_id == parent_id  # joined the caller's trace
        assert server_span.service == "vesalius"
        assert server_span.attributes["http.route"] == name.split(" ", 1)[1]
        assert server_span.attributes["http.response.status_code"] == 200
        (below,) = [s for s in ours if s.name == child]
        assert by_id[below.parent_id] is server_span, child
    assert next(s for s in ours if s.name == "retrieve").attributes["vesalius.completed"] == 1

    (store_span,) = receiver.named("C-STORE")
    assert store_span.attributes["dicom.calling_ae"] == "STORESCU"
    (ingest,) = [s for s in receiver.named("ingest") if s.trace_id == store_span.trace_id]
    assert ingest.parent_id == store_span.span_id
    assert ingest.attributes["vesalius.outcome"] == "created"
    for span in receiver.spans:  # no UIDs in span names or attributes
        assert study not in span.name and study not in str(span.attributes.values())
