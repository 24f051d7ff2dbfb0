"""The scenario registry and the scenarios that are built.

Each :class:`Scenario` declares which servers support it; the runner gives it those that are
installed and enabled. A scenario runs every server in turn, rotating the order on each
repeat (alternating runs), and returns :class:`Row` objects holding the raw samples. A server
that answers a scenario with a failure (a failed DIMSE status, HTTP 404, missing files) gets a
note and "n/a" in its cell instead of a number; the scenario goes on with the others.

Scenarios declared with ``pending`` are not built yet; they are listed in the report as such.
Scenarios 6 (bench/index_scale.py), 7 (bench/wado.py), 9 (bench/viewer.py) and 11
(bench/tls.py) live in modules of their own, imported lazily (they import this one).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydicom.dataset import Dataset

from bench.corpus import Corpora, Corpus, Query
from bench.servers import DEST_AE, LOOPBACK, Pool, Server, StoreScp, dcmtk_env
from bench.tools import require_dcmtk
from vesalius.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE, STUDY_ROOT_FIND
from vesalius.dimse.contexts import build_context

ALL = ("vesalius", "orthanc", "storescp")
ARCHIVES = ("vesalius", "orthanc")
TOOL_TIMEOUT = 3600.0


@dataclass
class Row:
    """One line of the report: a measure of one scenario, with raw samples per server.

    ``stat`` says how samples reduce to the figure (median, p50, p95); ``better`` whether a
    lower or a higher figure is better, which sets the direction of the ratios.
    """

    section: str
    scenario: str
    label: str
    metric: str
    unit: str
    better: str = "lower"
    stat: str = "median"
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(kind, []).append(value)

    def value(self, kind: str) -> float | None:
        values = self.samples.get(kind)
        if not values:
            return None
        return summarize(values, self.stat)

    def ratio(self, kind: str, reference: str) -> float | None:
        """Vesalius-vs-reference ratio, oriented so that >1 means ``kind`` is better."""
        mine, theirs = self.value(kind), self.value(reference)
        if mine is None or theirs is None or mine <= 0 or theirs <= 0:
            return None
        return theirs / mine if self.better == "lower" else mine / theirs


def summarize(values: Sequence[float], stat: str) -> float:
    if stat == "median":
        return float(statistics.median(values))
    if stat.startswith("p"):
        return percentile(values, float(stat[1:]))
    raise ValueError(f"unknown statistic {stat!r}")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


@dataclass
class Context:
    """What a scenario gets: corpora, the server pool and the run's parameters."""

    corpora: Corpora
    pool: Pool
    repeat: int
    samples: int
    log: Callable[[str], None] = print


class NotSupported(Exception):
    """A server answered the scenario's request with a failure: its cell is n/a."""


@dataclass(frozen=True)
class Scenario:
    number: int
    name: str
    title: str
    servers: tuple[str, ...]
    run: Callable[[Context, list[str]], list[Row]] | None = None
    pending: str = ""


def note(text: str, kind: str, *rows: Row) -> None:
    """Record why ``kind`` has no figure in these rows (the first reason sticks)."""
    for row in rows:
        row.notes.setdefault(kind, text)


def rotate(kinds: Sequence[str], rep: int) -> list[str]:
    """The servers in turn, starting one further on each repeat."""
    if not kinds:
        return []
    shift = rep % len(kinds)
    return [*kinds[shift:], *kinds[:shift]]


# -- DCMTK clients --------------------------------------------------------------------------


def run_tool(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=dcmtk_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1][:160] if lines else f"exit {proc.returncode}"


def storescu_argv(server: Server, corpus: Corpus, files: Sequence[str] | None) -> list[str]:
    """storescu to ``server``: the named files, or the whole corpus folder scanned."""
    argv = [require_dcmtk("storescu"), "-aec", server.ae_title, LOOPBACK, str(server.dicom_port)]
    if files is None:
        return [*argv, "+sd", "+r", "+sp", "*.dcm", str(corpus.root)]
    return [*argv, *files]


def store(server: Server, corpus: Corpus, associations: int = 1) -> float:
    """Send the corpus with ``associations`` concurrent storescu processes; wall seconds.

    Raises :class:`NotSupported` when a store fails or the server then holds a different
    number of instances than were sent.
    """
    if associations == 1:
        commands = [storescu_argv(server, corpus, None if corpus.count > 1000 else corpus.files)]
    else:
        chunks = [corpus.files[i::associations] for i in range(associations)]
        commands = [storescu_argv(server, corpus, chunk) for chunk in chunks if chunk]
    with ExitStack() as stack:
        # Messages go to files, not pipes: a client blocked on a full pipe would skew the time.
        logs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in commands]
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                argv, env=dcmtk_env(), cwd=corpus.root, stdout=log, stderr=subprocess.STDOUT
            )
            for argv, log in zip(commands, logs, strict=True)
        ]
        codes = [p.wait(timeout=TOOL_TIMEOUT) for p in procs]
        elapsed = time.perf_counter() - start
        for code, log in zip(codes, logs, strict=True):
            if code != 0:
                log.seek(0)
                lines = log.read().strip().splitlines()
                last = lines[-1][:160] if lines else ""
                raise NotSupported(f"storescu exited {code}: {last}")
    held = server.instance_count()
    if held != corpus.count:
        raise NotSupported(f"holds {held} instances after storing {corpus.count}")
    return elapsed


def ensure_loaded(ctx: Context, kind: str, corpus: Corpus) -> Server:
    """A running server of ``kind`` holding ``corpus`` (reused, or started and loaded)."""
    server = ctx.pool.loaded(kind, corpus.kind)
    if server is not None:
        return server
    ctx.log(f"  loading {corpus.count} {corpus.kind} instances into {kind}")
    server = ctx.pool.fresh(kind)
    try:
        store(server, corpus)
    except BaseException:
        ctx.pool.release(server)
        raise
    ctx.pool.adopt(corpus.kind, server)
    return server


# -- ingest (scenarios 1, 2, 3) -------------------------------------------------------------


def _ingest(
    ctx: Context, kinds: list[str], name: str, corpus_kind: str, associations: int
) -> list[Row]:
    corpus = ctx.corpora.get(corpus_kind)
    what = (
        f"{corpus.count} CT images ({corpus.megabytes:.0f} MB)"
        if corpus_kind == "ct"
        else f"{corpus.count} small images, {len(corpus.studies)} studies"
    )
    assoc = "1 association" if associations == 1 else f"{associations} concurrent associations"
    label = f"C-STORE {what}, {assoc}"
    time_row = Row("ingest", name, label, "time", "s")
    if corpus_kind == "ct":
        rate_row = Row("ingest", name, label, "throughput", "MB/s", better="higher")
    else:
        rate_row = Row("ingest", name, label, "throughput", "images/s", better="higher")
    memory = Row("memory", name, f"during {label}", "peak RSS", "MiB")
    idle = Row("memory", name, "idle, after start", "RSS", "MiB")
    for rep in range(ctx.repeat):
        for kind in rotate(kinds, rep):
            server = ctx.pool.fresh(kind, fork=associations > 1)
            keep = False
            try:
                idle.add(kind, server.idle_rss_mib)
                server.reset_peak()
                try:
                    elapsed = store(server, corpus, associations)
                except NotSupported as exc:
                    note(str(exc), kind, time_row, rate_row, memory)
                    continue
                time_row.add(kind, elapsed)
                work = corpus.megabytes if corpus_kind == "ct" else corpus.count
                rate_row.add(kind, work / elapsed)
                peak = server.peak_mib()
                memory.add(kind, peak)
                if peak is None:
                    memory.notes[kind] = "forked children (storescp --fork), not measured"
                ctx.log(f"  {kind}: {elapsed:.2f} s, peak {peak or 0:.0f} MiB")
                keep = kind in ARCHIVES
            finally:
                if keep:
                    ctx.pool.adopt(corpus.kind, server)
                else:
                    ctx.pool.release(server)
    rows = [time_row, rate_row]
    if corpus_kind == "ct":
        rows.append(memory)
    if associations == 1 and corpus_kind == "ct":
        rows.append(idle)
    return rows


def store_ct(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 1: corpus (a) over one association, DCMTK storescu as the client."""
    return _ingest(ctx, kinds, "store-ct", "ct", 1)


def store_ct_concurrent(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 2: corpus (a) over 4 concurrent associations (storescp runs with --fork)."""
    return _ingest(ctx, kinds, "store-ct-4", "ct", 4)


def store_small(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 3: corpus (b) over one association: the per-instance overhead."""
    return _ingest(ctx, kinds, "store-small", "small", 1)


# -- STOW-RS (scenario 4) -------------------------------------------------------------------

STOW_BATCH = 10  # instances per STOW-RS request


def _stow_body(paths: Sequence[Path], boundary: str) -> bytes:
    """A multipart/related body of Part 10 files (PS3.18 10.5.1.2.1)."""
    parts = []
    for path in paths:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def stow_send(server: Server, corpus: Corpus, clients: int) -> float:
    """Send the corpus by STOW-RS from ``clients`` threads, each with its own keep-alive
    connection and batches of ``STOW_BATCH`` instances; wall seconds."""
    if server.http_port is None:
        raise NotSupported("no HTTP server")
    boundary = "vesalius-bench-boundary"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    url = f"http://{LOOPBACK}:{server.http_port}/dicom-web/studies"
    shares = [corpus.paths[i::clients] for i in range(clients)]
    failures: list[str] = []

    def client(paths: list[Path]) -> None:
        with httpx.Client(timeout=600) as http:
            for i in range(0, len(paths), STOW_BATCH):
                body = _stow_body(paths[i : i + STOW_BATCH], boundary)
                answer = http.post(url, content=body, headers=headers)
                if answer.status_code != 200:
                    failures.append(f"STOW-RS answered HTTP {answer.status_code}")
                    return

    threads = [threading.Thread(target=client, args=(share,)) for share in shares if share]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise NotSupported(failures[0])
    held = server.instance_count()
    if held != corpus.count:
        raise NotSupported(f"holds {held} instances after storing {corpus.count}")
    return elapsed


def stow(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 4: corpus (a) by STOW-RS from 4 parallel clients, on a fresh server each run."""
    corpus = ctx.corpora.get("ct")
    label = f"STOW-RS {corpus.count} CT images ({corpus.megabytes:.0f} MB), 4 parallel clients"
    time_row = Row("ingest", "stow", label, "time", "s")
    rate_row = Row("ingest", "stow", label, "throughput", "MB/s", better="higher")
    memory = Row("memory", "stow", f"during {label}", "peak RSS", "MiB")
    for rep in range(ctx.repeat):
        for kind in rotate(kinds, rep):
            if kind in time_row.notes:
                continue
            server = ctx.pool.fresh(kind)
            try:
                server.reset_peak()
                try:
                    elapsed = stow_send(server, corpus, 4)
                except NotSupported as exc:
                    note(str(exc), kind, time_row, rate_row, memory)
                    continue
                time_row.add(kind, elapsed)
                rate_row.add(kind, corpus.megabytes / elapsed)
                memory.add(kind, server.peak_mib())
                ctx.log(f"  {kind}: {elapsed:.2f} s")
            finally:
                ctx.pool.release(server)
    return [time_row, rate_row, memory]


# -- queries (scenario 5) -------------------------------------------------------------------


class FindClient:
    """One persistent association (Study Root C-FIND) to a server, driven by Vesalius's own
    association layer: blocking I/O, so the client adds no per-message polling delay
    (pynetdicom's SCU sleeps 1 ms per reactor loop, which dominated queries with many matches,
    whichever server answered). Responses are counted, not decoded."""

    def __init__(self, server: Server) -> None:
        from vesalius.dimse.requestor import connect

        contexts = [build_context(STUDY_ROOT_FIND, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])]
        try:
            self.link = connect(
                LOOPBACK,
                server.dicom_port,
                calling_ae="BENCHFIND",
                called_ae=server.ae_title,
                contexts=contexts,
                max_pdu=262144,
                acse_timeout=120,
                network_timeout=120,
                dimse_timeout=120,
            )
        except Exception as exc:
            raise NotSupported(f"association for Study Root C-FIND refused: {exc}") from exc
        found = [cx for cx in self.link.contexts.values() if cx.abstract_syntax == STUDY_ROOT_FIND]
        if not found:
            self.link.release()
            raise NotSupported("Study Root C-FIND presentation context not accepted")
        self.context = found[0]

    def find(self, query: Query) -> int:
        """Run the query to its final response; the number of matches."""
        from vesalius.dimse import commands
        from vesalius.dimse.association import encode_data_set

        identifier = Dataset()
        identifier.QueryRetrieveLevel = query.level
        for keyword, value in (query.keys or {}).items():
            setattr(identifier, keyword, value)
        message_id = self.link.next_message_id()
        command = commands.encode(
            [
                (commands.COMMAND_FIELD, commands.C_FIND_RQ),
                (commands.MESSAGE_ID, message_id),
                (commands.PRIORITY, 0),
                (commands.DATA_SET_TYPE, commands.DATA_SET),
                (commands.AFFECTED_SOP_CLASS, STUDY_ROOT_FIND),
            ]
        )
        data = encode_data_set(identifier, self.context.transfer_syntax)
        self.link.send(self.context.id, command, data)
        matches = 0
        while True:
            try:
                response = self.link.receive(timeout=120).command
            except Exception as exc:
                raise NotSupported(f"C-FIND: no response ({exc})") from exc
            code = response.us(commands.STATUS)
            if code in (0xFF00, 0xFF01):
                matches += 1
            elif code == 0x0000:
                return matches
            else:
                comment = response.text(commands.ERROR_COMMENT)
                raise NotSupported(f"C-FIND answered 0x{code or 0:04X} {comment}".strip())

    def close(self) -> None:
        self.link.release()


class QidoClient:
    """One keep-alive HTTP client for QIDO-RS under ``/dicom-web`` (PS3.18 10.6)."""

    def __init__(self, server: Server) -> None:
        if server.http_port is None:
            raise NotSupported("no HTTP server")
        self.http = httpx.Client(
            base_url=f"http://{LOOPBACK}:{server.http_port}/dicom-web",
            headers={"Accept": "application/dicom+json"},
            timeout=120,
        )
        probe = self.http.get("/studies", params={"limit": "1"})
        if probe.status_code not in (200, 204):
            self.http.close()
            raise NotSupported(f"QIDO-RS /studies answered HTTP {probe.status_code}")

    def find(self, query: Query) -> int:
        # Wildcards, commas and dashes go unencoded: Orthanc 1.10 does not percent-decode
        # QIDO-RS query values (PatientName=TAN%2A matches nothing), and they are legal there.
        search = "&".join(f"{k}={quote(v, safe='*,-')}" for k, v in query.qido_params.items())
        answer = self.http.get(f"{query.qido_path}?{search}" if search else query.qido_path)
        if answer.status_code == 204:
            return 0
        if answer.status_code != 200:
            raise NotSupported(f"QIDO-RS answered HTTP {answer.status_code}")
        return len(answer.json())

    def close(self) -> None:
        self.http.close()


@contextmanager
def _clients(server: Server, protocol: str) -> Iterator[FindClient | QidoClient]:
    client: FindClient | QidoClient = (
        FindClient(server) if protocol == "C-FIND" else QidoClient(server)
    )
    try:
        yield client
    finally:
        client.close()


def queries(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 5: C-FIND and QIDO-RS latency (p50, p95) on corpus (b), one persistent
    association / keep-alive connection per server; each query warmed up once."""
    corpus = ctx.corpora.get("small")
    rows: dict[tuple[str, str, str], Row] = {}
    for protocol in ("C-FIND", "QIDO-RS"):
        for q in corpus.queries:
            label = (
                f"{protocol} {q.title} ({q.expected} {'match' if q.expected == 1 else 'matches'})"
            )
            for stat in ("p50", "p95"):
                rows[(protocol, q.name, stat)] = Row("query", "query", label, stat, "ms", stat=stat)
    servers: dict[str, Server] = {}
    for kind in kinds:
        try:
            servers[kind] = ensure_loaded(ctx, kind, corpus)
        except NotSupported as exc:
            for row in rows.values():
                row.notes[kind] = f"could not load corpus (b): {exc}"
    broken: set[tuple[str, str, str]] = set()
    for rep in range(ctx.repeat):
        for kind in rotate(list(servers), rep):
            for protocol in ("C-FIND", "QIDO-RS"):
                protocol_rows = [r for (p, _, _), r in rows.items() if p == protocol]
                if (kind, protocol, "*") in broken:
                    continue
                try:
                    with _clients(servers[kind], protocol) as client:
                        _time_queries(ctx, client, kind, protocol, corpus.queries, rows, broken)
                except NotSupported as exc:
                    broken.add((kind, protocol, "*"))
                    for row in protocol_rows:
                        row.notes.setdefault(kind, str(exc))
    return list(rows.values())


def _time_queries(
    ctx: Context,
    client: FindClient | QidoClient,
    kind: str,
    protocol: str,
    items: list[Query],
    rows: dict[tuple[str, str, str], Row],
    broken: set[tuple[str, str, str]],
) -> None:
    for q in items:
        p50, p95 = rows[(protocol, q.name, "p50")], rows[(protocol, q.name, "p95")]
        if (kind, protocol, q.name) in broken:
            continue
        if protocol == "C-FIND" and q.keys is None:
            p50.notes[kind] = p95.notes[kind] = "C-FIND has no paging"
            continue
        try:
            got = client.find(q)  # warm-up, and the correctness check
        except NotSupported as exc:
            if isinstance(client, FindClient) and client.link.ended:
                raise
            broken.add((kind, protocol, q.name))
            p50.notes[kind] = p95.notes[kind] = str(exc)
            continue
        if got != q.expected:
            p50.notes[kind] = p95.notes[kind] = f"returned {got} matches, expected {q.expected}"
        timings = []
        for _ in range(ctx.samples):
            start = time.perf_counter()
            client.find(q)
            timings.append((time.perf_counter() - start) * 1000)
        for value in timings:
            p50.add(kind, value)
            p95.add(kind, value)
        ctx.log(f"  {kind} {protocol} {q.name}: p50 {percentile(timings, 50):.1f} ms")


# -- retrieve (scenario 8) and the large object (scenario 10) --------------------------------


def _move(
    server: Server, dest: StoreScp, study: dict[str, Any], pool: Pool, level: str = "STUDY"
) -> float:
    """C-MOVE one study to the storescp destination; wall seconds of movescu."""
    dest.clear(pool.discard)
    argv = [
        require_dcmtk("movescu"),
        "-S",
        "-aec",
        server.ae_title,
        "-aem",
        DEST_AE,
        LOOPBACK,
        str(server.dicom_port),
        "-k",
        f"QueryRetrieveLevel={level}",
        "-k",
        f"StudyInstanceUID={study['StudyInstanceUID']}",
    ]
    start = time.perf_counter()
    proc = run_tool(argv)
    elapsed = time.perf_counter() - start
    got = dest.instance_count()
    if proc.returncode != 0 or got != study["instances"]:
        raise NotSupported(f"C-MOVE delivered {got}/{study['instances']}: {_tail(proc)}")
    dest.clear(pool.discard)
    return elapsed


def _get(server: Server, study: dict[str, Any], pool: Pool) -> float:
    """C-GET one study with getscu into a new folder; wall seconds of getscu."""
    folder = pool.workdir / "getscu"
    pool.discard(folder)
    folder.mkdir(parents=True)
    argv = [
        require_dcmtk("getscu"),
        "-S",
        "-aec",
        server.ae_title,
        LOOPBACK,
        str(server.dicom_port),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study['StudyInstanceUID']}",
        "-od",
        str(folder),
    ]
    start = time.perf_counter()
    proc = run_tool(argv)
    elapsed = time.perf_counter() - start
    got = sum(1 for p in folder.iterdir() if p.is_file())
    pool.discard(folder)
    if proc.returncode != 0 or got != study["instances"]:
        raise NotSupported(f"C-GET delivered {got}/{study['instances']}: {_tail(proc)}")
    return elapsed


def _destination(ctx: Context) -> StoreScp:
    dest = ctx.pool.fresh("storescp", ae=DEST_AE, port=ctx.pool.dest_port)
    assert isinstance(dest, StoreScp)
    return dest


def retrieve(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 8: C-MOVE of a CT study to a DCMTK storescp, and C-GET by getscu."""
    corpus = ctx.corpora.get("ct")
    study = corpus.studies[0]
    what = f"a CT study ({study['instances']} images, {study['bytes'] / 1e6:.0f} MB)"
    rows: dict[str, list[Row]] = {}
    for op in ("C-MOVE", "C-GET"):
        label = f"{op} {what}"
        rows[op] = [
            Row("retrieve", "retrieve", label, "time", "s"),
            Row("retrieve", "retrieve", label, "throughput", "MB/s", better="higher"),
            Row("memory", "retrieve", f"during {label}", "peak RSS", "MiB"),
        ]
    servers: dict[str, Server] = {}
    for kind in kinds:
        try:
            servers[kind] = ensure_loaded(ctx, kind, corpus)
        except NotSupported as exc:
            for group in rows.values():
                note(f"could not load corpus (a): {exc}", kind, *group)
    dest = _destination(ctx)
    try:
        for rep in range(ctx.repeat):
            for kind in rotate(list(servers), rep):
                server = servers[kind]
                for op in ("C-MOVE", "C-GET"):
                    time_row, rate_row, memory = rows[op]
                    if kind in time_row.notes:
                        continue
                    server.reset_peak()
                    try:
                        if op == "C-MOVE":
                            elapsed = _move(server, dest, study, ctx.pool)
                        else:
                            elapsed = _get(server, study, ctx.pool)
                    except NotSupported as exc:
                        note(str(exc), kind, time_row, rate_row, memory)
                        continue
                    time_row.add(kind, elapsed)
                    rate_row.add(kind, study["bytes"] / 1e6 / elapsed)
                    memory.add(kind, server.peak_mib())
                    ctx.log(f"  {kind} {op}: {elapsed:.2f} s")
    finally:
        ctx.pool.release(dest)
    return [row for group in rows.values() for row in group]


def big_object(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 10 (large object): the multi-frame object in by C-STORE and out by C-MOVE,
    on a fresh server each run; time and peak resident memory of the server."""
    corpus = ctx.corpora.get("big")
    study = corpus.studies[0]
    size = f"{corpus.total_bytes / 2**20:.0f} MiB"
    rows = {
        "in": Row("large", "big", f"{size} object in (C-STORE)", "time", "s"),
        "out": Row("large", "big", f"{size} object out (C-MOVE)", "time", "s"),
        "in-mem": Row("memory", "big", f"while {size} goes in (C-STORE)", "peak RSS", "MiB"),
        "out-mem": Row("memory", "big", f"while {size} goes out (C-MOVE)", "peak RSS", "MiB"),
    }
    dest = _destination(ctx)
    try:
        for rep in range(ctx.repeat):
            for kind in rotate(kinds, rep):
                server = ctx.pool.fresh(kind)
                try:
                    _big_round(ctx, server, corpus, study, dest, rows)
                finally:
                    ctx.pool.release(server)
    finally:
        ctx.pool.release(dest)
    return list(rows.values())


def _big_round(
    ctx: Context,
    server: Server,
    corpus: Corpus,
    study: dict[str, Any],
    dest: StoreScp,
    rows: dict[str, Row],
) -> None:
    kind = server.kind
    server.reset_peak()
    try:
        elapsed = store(server, corpus)
    except NotSupported as exc:
        note(str(exc), kind, *rows.values())
        return
    rows["in"].add(kind, elapsed)
    rows["in-mem"].add(kind, server.peak_mib())
    ctx.log(f"  {kind} in: {elapsed:.2f} s, peak {server.peak_mib() or 0:.0f} MiB")
    if kind not in ARCHIVES:
        rows["out"].notes[kind] = rows["out-mem"].notes[kind] = "store only"
        return
    server.reset_peak()
    try:
        elapsed = _move(server, dest, study, ctx.pool)
    except NotSupported as exc:
        note(str(exc), kind, rows["out"], rows["out-mem"])
        return
    rows["out"].add(kind, elapsed)
    rows["out-mem"].add(kind, server.peak_mib())
    ctx.log(f"  {kind} out: {elapsed:.2f} s, peak {server.peak_mib() or 0:.0f} MiB")


def _index_scale(ctx: Context, kinds: list[str]) -> list[Row]:
    from bench.index_scale import query_1m  # it imports this module

    return query_1m(ctx, kinds)


def _wado(ctx: Context, kinds: list[str]) -> list[Row]:
    from bench.wado import wado  # it imports this module

    return wado(ctx, kinds)


def _store_tls(ctx: Context, kinds: list[str]) -> list[Row]:
    from bench.tls import store_tls  # it imports this module

    return store_tls(ctx, kinds)


def _qido_auth(ctx: Context, kinds: list[str]) -> list[Row]:
    from bench.qido_auth import qido_auth  # it imports this module

    return qido_auth(ctx, kinds)


def _rest_api(ctx: Context, kinds: list[str]) -> list[Row]:
    from bench.api_resources import rest_api  # it imports this module

    return rest_api(ctx, kinds)


def _ohif(ctx: Context, kinds: list[str]) -> list[Row]:
    from bench.viewer import ohif  # it imports this module

    return ohif(ctx, kinds)


REGISTRY: tuple[Scenario, ...] = (
    Scenario(1, "store-ct", "C-STORE ingest of corpus (a), one association", ALL, store_ct),
    Scenario(
        2,
        "store-ct-4",
        "C-STORE ingest of corpus (a), 4 concurrent associations",
        ALL,
        store_ct_concurrent,
    ),
    Scenario(3, "store-small", "C-STORE ingest of corpus (b)", ALL, store_small),
    Scenario(
        4,
        "stow",
        "STOW-RS ingest of corpus (a), 4 parallel clients",
        ARCHIVES,
        stow,
    ),
    Scenario(5, "query", "C-FIND and QIDO-RS latency on corpus (b)", ARCHIVES, queries),
    Scenario(
        6,
        "query-1m",
        "The same queries with 1,000,000 instances indexed, SQLite and PostgreSQL",
        ("vesalius",),
        _index_scale,
    ),
    Scenario(
        7,
        "wado",
        "WADO-RS study retrieve, series metadata and frame latency",
        ARCHIVES,
        _wado,
    ),
    Scenario(8, "retrieve", "C-MOVE and C-GET of a CT study", ARCHIVES, retrieve),
    Scenario(
        9,
        "ohif",
        "Time to first image in OHIF (headless Chromium)",
        ARCHIVES,
        lambda ctx, kinds: _ohif(ctx, kinds),
    ),
    Scenario(10, "big", "Large object in and out; peak server memory", ALL, big_object),
    Scenario(
        11,
        "store-tls",
        "C-STORE ingest of corpus (a) over DIMSE-TLS against plain DIMSE, one association",
        ("vesalius",),
        _store_tls,
    ),
    Scenario(
        12,
        "qido-auth",
        "QIDO-RS with a bearer token or a session and access labels against the laptop "
        "defaults, interleaved",
        ("vesalius",),
        _qido_auth,
    ),
    Scenario(
        13,
        "rest-api",
        "REST API study list at 1,000,000 instances and a study page of 1,000 instances",
        ("vesalius",),
        _rest_api,
    ),
)


def by_name(names: Sequence[str]) -> list[Scenario]:
    """Scenarios by name or number, in registry order; ValueError for an unknown one."""
    known = {s.name: s for s in REGISTRY} | {str(s.number): s for s in REGISTRY}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}")
    chosen = {known[n].name for n in names}
    return [s for s in REGISTRY if s.name in chosen]
