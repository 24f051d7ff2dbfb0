"""OpenTelemetry tracing (optional): a span for each HTTP request and DIMSE operation, with the
services' work (ingest, query, retrieve) as child spans, exported over OTLP/HTTP to
``tracing.otlp_endpoint``.

The code that makes spans uses only the OpenTelemetry API, whose tracer does nothing until an
SDK is installed; :func:`configure` installs one in each process when the setting names an
endpoint (the SDK and exporter come with the ``tracing`` extra). An HTTP request joins the
caller's trace when it sends a W3C ``traceparent`` header. Span attributes hold route
templates, commands, statuses and counts: no UIDs or patient data.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import propagate, trace

from vesalius import __version__
from vesalius.errors import ConfigError

tracer = trace.get_tracer("vesalius")
#: Seconds between exports of finished spans (the SDK's default is 5).
EXPORT_DELAY = 0.5
_enabled = False


def configure(endpoint: str) -> None:
    """Export this process's spans to ``endpoint`` (an OTLP/HTTP traces URL, e.g.
    ``http://collector:4318/v1/traces``); flushed at exit."""
    global _enabled
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            f"tracing.otlp_endpoint is set but the OpenTelemetry SDK is missing ({exc.name}): "
            "install it with `pip install 'vesalius[tracing]'`, or empty the setting"
        ) from exc
    resource = Resource.create(
        {"service.name": "vesalius", "service.version": __version__, "process.pid": os.getpid()}
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=endpoint)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=int(EXPORT_DELAY * 1000))
    )
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    _enabled = True


def enabled() -> bool:
    return _enabled


@contextmanager
def http_span(method: str, headers: Mapping[str, str]) -> Iterator[trace.Span]:
    """The server span of one HTTP request, in the trace its ``traceparent`` names (if any)."""
    parent = propagate.extract(headers)
    with tracer.start_as_current_span(
        f"HTTP {method}", context=parent, kind=trace.SpanKind.SERVER
    ) as span:
        span.set_attribute("http.request.method", method)
        yield span


def finish_http_span(span: trace.Span, method: str, route: str, status: int) -> None:
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)


@contextmanager
def dimse_span(command: str, calling_ae: str) -> Iterator[None]:
    """The server span of one DIMSE operation (``C-STORE``, ``C-FIND``, ...)."""
    if not _enabled:
        yield
        return
    with tracer.start_as_current_span(command, kind=trace.SpanKind.SERVER) as span:
        span.set_attribute("dicom.calling_ae", calling_ae)
        yield
