"""What a hostile or broken HTTP client can do to a real ``vesalius serve`` process, and the bound
that stops it (docs/security.md, "HTTP"): connections that send nothing, half a request, half a
body or read nothing are closed within their timeout; more connections than the cap, or than the
open-file limit allows, are refused without starving DIMSE or ``/health``; a STOW-RS body declared
over the upload limit is refused before it is sent; a gzip bomb is refused while it decodes,
having written to staging no more than ``http.max_inflation_ratio`` times what it sent.

Clients are raw sockets (and httpx where an ordinary client is the point). A socket counts as
closed by the server once its TCP state is CLOSE_WAIT (FIN) or CLOSE (RST), read without
reading from it. Bounds are "within the timeout + SLACK seconds", never a speed.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from conftest import dcmtk, wait_until
from served import Served, serve
from synth import make_instance
from vesalius.errors import TooLargeError
from vesalius.settings import load_settings
from vesalius.web.serving import bind_http, http_server
from vesalius.web.upload import decoded_body
from vesalius.wiring import http_limits

HEADER, KEEPALIVE, BODY, SEND = 2.0, 1.0, 2.0, 2.0
#: What a bound may overrun its timeout by (a loaded machine, timer granularity).
SLACK = 5.0
#: How long the server still reads after a 413 (vesalius.web.serving.LINGER_SECONDS).
LINGER = 2.0
MIB = 1 << 20
BOUNDARY = "hostile-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8


# ---------------------------------------------------------------------------- helpers


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """The server sent FIN or RST (TCP_INFO's state; nothing is read from the socket)."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state in (TCP_CLOSE, TCP_CLOSE_WAIT)


def wait_closed(socks: list[socket.socket], since: float, bound: float, what: str) -> float:
    """Wait until the server closed every socket in ``socks``: seconds since ``since``."""
    left = bound - (time.monotonic() - since)
    wait_until(lambda: all(closed_by_server(s) for s in socks), timeout=max(left, 0), what=what)
    return time.monotonic() - since


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a reset ends it too)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def multipart(*parts: bytes) -> bytes:
    out = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    )
    return out + f"--{BOUNDARY}--\r\n".encode()


def instance(tmp_path: Path, **attrs: object) -> tuple[bytes, dict[str, str]]:
    """A synthetic CT instance: its bytes and its study/series/instance UIDs."""
    path = tmp_path / f"{generate_uid()}.dcm"
    ds = make_instance(path, **attrs)
    uids = {
        "study": ds.StudyInstanceUID,
        "series": ds.SeriesInstanceUID,
        "instance": ds.SOPInstanceUID,
    }
    return path.read_bytes(), uids


def staged_bytes(served: Served) -> int:
    """Bytes in staging files (the empty ones made ahead of need count nothing)."""
    folder = served.data_dir / "storage" / "staging"
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def written_bytes(served: Served) -> int:
    """Bytes all server processes wrote with write(2) and friends (/proc/<pid>/io wchar)."""
    total = 0
    for pid in served.server_pids():
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                total += int(line.split()[1])
    return total


def gzip_bomb(decoded: int) -> bytes:
    """gzip members of 64 MiB of zeros each, ``decoded`` bytes in all, about 1/1000 of that."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    member = b"".join([*(compressor.compress(block) for _ in range(64)), compressor.flush()])
    return member * (decoded // (64 * MIB))


def test_inflation_ratio_is_checked_before_the_piece_is_handed_on() -> None:
    """decoded_body: past the first MiB, no piece is handed on (to be staged) that would put
    the decoded total over ratio x the bytes received so far."""
    bomb = gzip_bomb(256 * MIB)
    received = handed = 0

    async def raw() -> AsyncIterator[bytes]:
        nonlocal received
        for start in range(0, len(bomb), 64 * 1024):
            received += len(bomb[start : start + 64 * 1024])
            yield bomb[start : start + 64 * 1024]

    async def collect() -> None:
        nonlocal handed
        async for piece in decoded_body(raw(), "gzip", 1 << 40, max_ratio=100):
            handed += len(piece)
            assert handed <= max(MIB, 100 * received)

    with pytest.raises(TooLargeError, match="decompression bomb"):
        asyncio.run(collect())
    assert 2 * MIB < handed < 256 * MIB


def echo(served: Served) -> None:
    dcmtk("echoscu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port), timeout=30)


# ------------------------------------------------------------------ timeouts (two processes)


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = {
        "dicom.workers": 2,  # the main process and a worker: both serve HTTP
        "http.header_timeout": HEADER,
        "http.keepalive_timeout": KEEPALIVE,
        "http.body_timeout": BODY,
        "http.send_timeout": SEND,
    }
    with serve(tmp_path_factory.mktemp("timed"), settings) as served:
        yield served


def test_idle_and_half_sent_connections_are_closed(timed: Served) -> None:
    """500 silent connections, 100 with half a request head, 20 idle after a request: all
    closed within their timeout (408 for a half-sent head), /health answering meanwhile."""
    start = time.monotonic()
    idle = [connect(timed.http_port) for _ in range(500)]
    half = [connect(timed.http_port) for _ in range(100)]
    kept: list[http.client.HTTPConnection] = []
    try:
        for sock in half:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert httpx.get(timed.url + "/health", timeout=30).status_code == 200
        kept_start = time.monotonic()
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", timed.http_port, timeout=30)
            conn.request("GET", "/health")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
            kept.append(conn)
        assert not any(closed_by_server(s) for s in idle + half)  # not closed at once

        kept_socks = [conn.sock for conn in kept if conn.sock is not None]
        assert len(kept_socks) == len(kept)
        kept_took = wait_closed(kept_socks, kept_start, KEEPALIVE + SLACK, "keep-alive closed")
        took = wait_closed(idle + half, start, HEADER + SLACK, "idle connections closed")
        assert all(sock.recv(64).startswith(b"HTTP/1.1 408 ") for sock in half)
        print(f"600 idle/half-sent closed after {took:.1f} s, keep-alive after {kept_took:.1f} s")
        assert httpx.get(timed.url + "/health", timeout=30).status_code == 200
    finally:
        close_all(idle + half)
        for conn in kept:
            conn.close()


def test_stalled_body_gets_408(timed: Served) -> None:
    """A STOW-RS body that stops arriving: 408 within the body timeout; nothing left staged."""
    sock = connect(timed.http_port)
    with sock:
        sock.sendall(
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Type: {MULTIPART}\r\nContent-Length: 100000\r\n\r\n".encode()
            + f"--{BOUNDARY}\r\n\r\n".encode()
            + bytes(1000)
        )
        start = time.monotonic()
        answer = read_all(sock)
        took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert took <= BODY + SLACK
    wait_until(lambda: staged_bytes(timed) == 0, timeout=10, what="staging emptied")


def test_slow_but_steady_body_is_not_cut(timed: Served, tmp_path: Path) -> None:
    """The body timeout is for silence, not a deadline: a body sent in pieces with pauses
    under it, over longer than it in all, is stored."""
    data, _uids = instance(tmp_path)
    body = multipart(data)
    third = len(body) // 3
    pieces = [body[:third], body[third:-10], body[-10:]]
    pause = threading.Event()
    with connect(timed.http_port) as sock:
        sock.sendall(
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Type: {MULTIPART}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        start = time.monotonic()
        for piece in pieces:
            pause.wait(BODY * 0.6)  # a slow client, pacing itself (not a wait for readiness)
            sock.sendall(piece)
        assert time.monotonic() - start > BODY
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_client_that_reads_nothing_is_dropped(timed: Served, tmp_path: Path) -> None:
    """A client that asks for a 12 MB instance and reads nothing holds the connection for the
    send timeout, then it is aborted; the server goes on serving."""
    data, uids = instance(tmp_path, rows=2500, columns=2500)  # 12.5 MB of pixel data
    stored = httpx.post(
        timed.url + "/dicom-web/studies",
        content=multipart(data),
        headers={"Content-Type": MULTIPART},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    path = "/dicom-web/studies/{study}/series/{series}/instances/{instance}".format(**uids)
    sock = connect(timed.http_port, rcvbuf=4096)
    with sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
            + b'Accept: multipart/related; type="application/dicom"\r\n\r\n'
        )
        start = time.monotonic()
        took = wait_closed([sock], start, SEND + SLACK, "a non-reading client dropped")
    print(f"non-reading client dropped after {took:.1f} s")
    assert httpx.get(timed.url + "/health", timeout=30).status_code == 200


def test_slow_application_is_not_mistaken_for_a_stalled_body() -> None:
    """The body timeout counts only while the server reads: an application that takes three
    body timeouts before reading (uvicorn's flow control pauses the socket meanwhile), and a
    client waiting for ``100 Continue`` that long, both get their 200 (in-process server)."""
    timeout = 1.0

    async def slow(request: Request) -> Response:
        await asyncio.sleep(3 * timeout)  # a busy application, not a readiness wait
        return PlainTextResponse(str(len(await request.body())))

    app = Starlette(routes=[Route("/slow", slow, methods=["POST"])])
    settings = load_settings(environ={}, overrides={"http.body_timeout": timeout})
    server = http_server(app, http_limits(settings))
    listener = bind_http("127.0.0.1", 0)
    port = listener.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="HTTP server start")
        body = bytes(4 * MIB)
        response = httpx.post(f"http://127.0.0.1:{port}/slow", content=body, timeout=60)
        assert response.status_code == 200 and response.text == str(len(body))

        with connect(port) as sock:
            sock.sendall(
                b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            assert sock.recv(64).startswith(b"HTTP/1.1 100 ")
            sock.sendall(bytes(10))
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


# ----------------------------------------------------------- upload limits (the defaults)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The default limits (http.max_upload_mb 4096, http.max_inflation_ratio 100)."""
    with serve(tmp_path_factory.mktemp("defaults"), {"dicom.workers": 1}) as served:
        yield served


def stow_head(length: int, *extra: str) -> bytes:
    lines = [
        "POST /dicom-web/studies HTTP/1.1",
        "Host: x",
        f"Content-Type: {MULTIPART}",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100-continue"])
def test_declared_huge_stow_gets_413_before_its_body(defaults: Served, expect: bool) -> None:
    """Content-Length: 10 GB and not one byte of body: the 413 comes back anyway (it does not
    wait for the body, nor for the body timeout), and the connection ends."""
    with connect(defaults.http_port) as sock:
        sock.sendall(stow_head(10 * 10**9, *(["Expect: 100-continue"] if expect else [])))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"4096 MiB" in answer
    assert b"connection: close" in answer.lower()


def test_huge_stow_still_sending_is_cut_off(defaults: Served) -> None:
    """A client that sends on regardless after the 413 is read from for a moment, so one that
    stops soon reads the answer rather than a reset; one that goes on is disconnected."""
    with connect(defaults.http_port) as sock:
        sock.sendall(stow_head(10 * 10**9) + bytes(4 * MIB))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]

    sent = 0
    with connect(defaults.http_port) as sock:
        sock.sendall(stow_head(10 * 10**9))
        start = time.monotonic()
        chunk = bytes(64 * 1024)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while time.monotonic() - start < LINGER + SLACK + 30:
                sent += sock.send(chunk)
        took = time.monotonic() - start
    print(f"a sender past the limit disconnected after {took:.1f} s and {sent / MIB:.0f} MiB")
    assert took <= LINGER + SLACK
    assert sent < 64 * MIB


def test_gzip_bomb_is_refused_while_decoding(defaults: Served) -> None:
    """About 1 MB of gzip that decodes to 1 GiB: 413, having written at most ratio x the bytes
    sent (plus a MiB) anywhere, memory flat, and nothing left in staging."""
    bomb = gzip_bomb(1 << 30)
    assert len(bomb) < 2 * MIB
    rss, written = defaults.rss_mb(), written_bytes(defaults)
    response = httpx.post(
        defaults.url + "/dicom-web/studies",
        content=bomb,
        headers={"Content-Type": "application/dicom", "Content-Encoding": "gzip"},
        timeout=120,
    )
    assert response.status_code == 413, response.text
    assert "decompression bomb" in response.json()["error"]
    growth_written = written_bytes(defaults) - written
    growth_rss = defaults.rss_mb() - rss
    print(
        f"gzip bomb of {len(bomb) / MIB:.2f} MiB: {growth_written / MIB:.1f} MiB written, "
        f"RSS {growth_rss:+.1f} MiB"
    )
    assert growth_written <= 100 * len(bomb) + 2 * MIB
    assert growth_rss < 50
    wait_until(lambda: staged_bytes(defaults) == 0, timeout=10, what="staging emptied")
    assert httpx.get(defaults.url + "/health", timeout=30).status_code == 200


# ------------------------------------------------------------ descriptors and the cap


def test_descriptor_flood_leaves_dimse_and_health_working(tmp_path: Path) -> None:
    """Started with an open-file limit of 256 (hard 512): the server raises it to 512 and keeps
    HTTP to 3/4 of it. 600 silent connections: those over the cap get 503 at once, C-ECHO still
    answers during the flood, and /health answers again once the rest are reaped."""
    settings = {"dicom.workers": 1, "http.header_timeout": 6.0}
    with serve(tmp_path, settings, rlimit_nofile=(256, 512)) as served:
        limits = Path(f"/proc/{served.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == ["512", "512"], line
        assert "raised from 256 to 512" in served.log_text()
        cap = 512 * 3 // 4

        start = time.monotonic()
        socks = [connect(served.http_port) for _ in range(600)]
        try:
            wait_until(
                lambda: sum(map(closed_by_server, socks)) >= len(socks) - cap,
                timeout=SLACK,
                what="connections over the cap refused",
            )
            refused = [s for s in socks if closed_by_server(s)]
            assert len(refused) <= len(socks) - cap + 2  # the cap, give or take a closing one
            assert all(s.recv(64).startswith(b"HTTP/1.1 503 ") for s in refused)
            echo(served)  # DIMSE has descriptors left
            flood_over = time.monotonic() - start
            if flood_over < 6.0 - 1:  # still within the header timeout: HTTP is at its cap
                crowded = httpx.get(served.url + "/health", timeout=30)
                assert crowded.status_code == 503, crowded.text

            took = wait_closed(socks, start, 6.0 + SLACK, "flood reaped")
            print(f"{len(refused)} of 600 refused at once, the rest reaped after {took:.1f} s")
            assert httpx.get(served.url + "/health", timeout=30).status_code == 200
            echo(served)
        finally:
            close_all(socks)
        assert "Too many open files" not in served.log_text()
        assert served.alive()
