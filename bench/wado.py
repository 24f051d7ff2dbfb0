"""Scenario 7: WADO-RS timings on corpus (a) (PS3.18 10.4).

Three measures per archive, alternating servers on each repeat:

* the whole study (``GET {root}/studies/{uid}``, multipart/related of application/dicom in any
  transfer syntax, PS3.18 10.4.1.1.1), streamed and counted, never held: MB/s received;
* series metadata (``.../series/{uid}/metadata``, application/dicom+json, PS3.18 10.4.1.1.2):
  p50 and p95 over ``ctx.samples`` requests;
* one frame (``.../instances/{uid}/frames/1``, multipart/related of application/octet-stream,
  PS3.18 10.4.1.1.3) of a different instance each time: p50 and p95.

One keep-alive httpx client per server, ``Accept-Encoding: identity`` (no compression on either
side). A non-2xx answer, or a study that does not come back whole, makes the server's cells n/a
with the reason.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pydicom

from bench.corpus import Corpus
from bench.scenarios import (
    Context,
    NotSupported,
    Row,
    ensure_loaded,
    note,
    percentile,
    rotate,
)
from bench.servers import LOOPBACK, Server

STUDY_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
METADATA_ACCEPT = "application/dicom+json"


def dicomweb_root(server: Server) -> str:
    """The DICOMweb base URL: ``/dicom-web`` on both Vesalius and Orthanc (see servers.py)."""
    if server.http_port is None:
        raise NotSupported("no HTTP server")
    return f"http://{LOOPBACK}:{server.http_port}/dicom-web"


def instance_uids(corpus: Corpus, study: dict[str, Any]) -> list[str]:
    """The SOP Instance UIDs of ``study``, in file order, from the corpus files' headers."""
    found = []
    for path in corpus.paths:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SOPInstanceUID"],
        )
        if str(ds.StudyInstanceUID) == study["StudyInstanceUID"]:
            found.append(str(ds.SOPInstanceUID))
    return found


def _boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"').encode()
    raise NotSupported(f"no multipart boundary in Content-Type {content_type[:80]!r}")


def _check(answer: httpx.Response, what: str) -> None:
    if not 200 <= answer.status_code < 300:
        raise NotSupported(f"{what} answered HTTP {answer.status_code}")


def retrieve_study(http: httpx.Client, root: str, study: dict[str, Any]) -> tuple[float, int]:
    """Stream the whole study; (wall seconds, bytes received). Counts the multipart parts
    (delimiters, PS3.18 8.6.1.2 / RFC 2046 5.1.1) without holding the body."""
    url = f"{root}/studies/{study['StudyInstanceUID']}"
    received = delimiters = 0
    start = time.perf_counter()
    with http.stream("GET", url, headers={"Accept": STUDY_ACCEPT}) as answer:
        _check(answer, "WADO-RS study retrieve")
        marker = b"--" + _boundary(answer.headers.get("content-type", ""))
        tail = b""
        for chunk in answer.iter_raw():
            received += len(chunk)
            window = tail + chunk
            delimiters += window.count(marker)
            # Keep what could start a marker split across chunks (too short to hold a whole one).
            tail = window[-(len(marker) - 1) :]
    elapsed = time.perf_counter() - start
    parts = delimiters - 1  # the close delimiter ends the body
    if parts != study["instances"]:
        raise NotSupported(f"study retrieve returned {parts} parts, expected {study['instances']}")
    if received < study["bytes"] * 0.9:
        raise NotSupported(f"study retrieve returned {received} bytes, expected ~{study['bytes']}")
    return elapsed, received


def _timed_get(http: httpx.Client, url: str, accept: str, what: str) -> float:
    """One GET, body read to its end; milliseconds."""
    start = time.perf_counter()
    answer = http.get(url, headers={"Accept": accept})
    body = answer.content
    elapsed = (time.perf_counter() - start) * 1000
    _check(answer, what)
    if not body:
        raise NotSupported(f"{what} answered an empty body")
    return elapsed


#: Timed study retrieves per repeat and server (after one warm-up).
STUDY_RETRIEVES = 5


def wado(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 7: WADO-RS study retrieve (MB/s), series metadata and frame latency."""
    corpus = ctx.corpora.get("ct")
    study = corpus.studies[0]
    what = f"a CT study ({study['instances']} images, {study['bytes'] / 1e6:.0f} MB)"
    retrieve_label = f"WADO-RS retrieve of {what}, streamed"
    time_row = Row("wado", "wado", retrieve_label, "time", "s")
    rate_row = Row("wado", "wado", retrieve_label, "throughput", "MB/s", better="higher")
    meta_label = f"WADO-RS series metadata ({study['instances']} instances)"
    matrix = corpus.params["matrix"]
    frame_label = f"WADO-RS one frame ({matrix}x{matrix} 16-bit), a different instance each time"
    meta = [Row("wado", "wado", meta_label, s, "ms", stat=s) for s in ("p50", "p95")]
    frame = [Row("wado", "wado", frame_label, s, "ms", stat=s) for s in ("p50", "p95")]
    all_rows = [time_row, rate_row, *meta, *frame]
    uids = instance_uids(corpus, study)
    servers: dict[str, Server] = {}
    for kind in kinds:
        try:
            servers[kind] = ensure_loaded(ctx, kind, corpus)
        except NotSupported as exc:
            note(f"could not load corpus (a): {exc}", kind, *all_rows)
    for rep in range(ctx.repeat):
        for kind in rotate(list(servers), rep):
            root = dicomweb_root(servers[kind])
            headers = {"Accept-Encoding": "identity"}
            with httpx.Client(timeout=600, headers=headers) as http:
                _round(ctx, http, root, kind, study, uids, rep, time_row, rate_row, meta, frame)
    return all_rows


def _round(
    ctx: Context,
    http: httpx.Client,
    root: str,
    kind: str,
    study: dict[str, Any],
    uids: list[str],
    rep: int,
    time_row: Row,
    rate_row: Row,
    meta: list[Row],
    frame: list[Row],
) -> None:
    """One repeat on one server: the study (once to warm up, then :data:`STUDY_RETRIEVES`
    timed times: one cold 50 ms retrieve per repeat was mostly noise), then the metadata and
    frame samples."""
    if kind not in time_row.notes:
        try:
            retrieve_study(http, root, study)  # warm-up and check
            for _ in range(min(STUDY_RETRIEVES, ctx.samples)):
                elapsed, received = retrieve_study(http, root, study)
                time_row.add(kind, elapsed)
                rate_row.add(kind, received / 1e6 / elapsed)
        except (NotSupported, httpx.HTTPError) as exc:
            note(str(exc), kind, time_row, rate_row)
        else:
            ctx.log(f"  {kind} study: {elapsed:.2f} s, {received / 1e6 / elapsed:.0f} MB/s")
    study_url = f"{root}/studies/{study['StudyInstanceUID']}"
    series_url = f"{study_url}/series/{study['SeriesInstanceUID']}"
    if kind not in meta[0].notes:
        url = f"{series_url}/metadata"
        try:
            _timed_get(http, url, METADATA_ACCEPT, "series metadata")  # warm-up and check
            timings = [
                _timed_get(http, url, METADATA_ACCEPT, "series metadata")
                for _ in range(ctx.samples)
            ]
        except (NotSupported, httpx.HTTPError) as exc:
            note(str(exc), kind, *meta)
        else:
            for row in meta:
                for value in timings:
                    row.add(kind, value)
            ctx.log(f"  {kind} series metadata: p50 {percentile(timings, 50):.1f} ms")
    if kind not in frame[0].notes:
        # A different instance each time, and different ones on each repeat.
        first = (rep * ctx.samples + 1) % len(uids)
        picks = [uids[(first + i) % len(uids)] for i in range(ctx.samples)]
        try:
            _timed_get(
                http, f"{series_url}/instances/{uids[0]}/frames/1", FRAME_ACCEPT, "frame"
            )  # warm-up and check
            timings = [
                _timed_get(http, f"{series_url}/instances/{uid}/frames/1", FRAME_ACCEPT, "frame")
                for uid in picks
            ]
        except (NotSupported, httpx.HTTPError) as exc:
            note(str(exc), kind, *frame)
        else:
            for row in frame:
                for value in timings:
                    row.add(kind, value)
            ctx.log(f"  {kind} frame: p50 {percentile(timings, 50):.1f} ms")
