"""Scenario 12: what authentication and access labels add to a QIDO-RS request (issue 14; the
target: at most 0.3 ms on the p50).

Two ``vesalius serve`` processes run at once on identical copies of the small synthetic index
of scenario 6 (20,000 instances, one study in ten labeled ``A`` and one in ten ``B``):

- ``vesalius-laptop``: the laptop defaults (no authentication; an anonymous request is an
  admin, who sees every study: no label condition);
- ``vesalius-auth``: ``auth.required = true``, asked by a radiologist granted label ``A`` only,
  with ``Authorization: Bearer`` (``vesalius-bearer``) or the session cookie of a login
  (``vesalius-cookie``): the credential checked per request, the policy, and the label
  condition inside the query's SQL.

Each sample sends the same query once per variant, in a random order (the interleaved A/B
method of docs/benchmarks.md, "Check after issue 13"), on one keep-alive connection per
variant, so load from elsewhere on the machine falls on all of them alike. The rows hold each
variant's p50 and p95, and the median of the per-sample differences from the laptop
(``added``, ms).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path

import httpx

from bench.index_scale import (
    GRANTED,
    READER,
    SMALL_INDEX,
    Shape,
    open_archive,
    plan,
    shapes,
    sqlite_index,
)
from bench.scenarios import Context, NotSupported, Row
from bench.servers import LOOPBACK, Server

LAPTOP, BEARER, COOKIE = "vesalius-laptop", "vesalius-bearer", "vesalius-cookie"
#: ``VESALIUS_BENCH_AUTH_CONTROL=1``: an A/A run, both servers on the laptop defaults and no
#: credentials sent: how far two processes of one configuration differ.
CONTROL = os.environ.get("VESALIUS_BENCH_AUTH_CONTROL") == "1"
#: The query shapes sent over HTTP (scenario 6's, at the small size).
SHAPES = ("patient-id", "page", "series-of-study")
PASSWORD = "bench-reader-password"
WARMUP = 20


def _credentials(url: str, data_dir: Path) -> tuple[str, str]:
    """Make the radiologist granted label A in the index at ``url``: (bearer token, cookie)."""
    from vesalius.identity import Identity
    from vesalius.services.labels import Grant

    admin = Identity.system("bench")
    archive = open_archive(url, data_dir)
    try:
        archive.accounts.add_user(READER, PASSWORD, frozenset({"radiologist"}), admin)
        archive.labels.grant(Grant(GRANTED, "user", READER), admin)
        _, token = archive.accounts.create_token(READER, admin)
        cookie, _ = archive.accounts.login(READER, PASSWORD, LOOPBACK)
    finally:
        archive.close()
    return token, cookie


def _request(shape: Shape) -> tuple[str, httpx.QueryParams]:
    params = httpx.QueryParams(tuple(shape.params))
    if shape.level == "SERIES":
        return f"/dicom-web/studies/{shape.pinned['StudyInstanceUID']}/series", params
    return "/dicom-web/studies", params


def _matches(answer: httpx.Response) -> int:
    if answer.status_code == 204 or not answer.content:
        return 0
    if answer.status_code != 200:
        raise NotSupported(f"QIDO-RS answered {answer.status_code}: {answer.text[:160]}")
    return len(answer.json())


def qido_auth(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 12 (``kinds``: Vesalius only)."""
    if "vesalius" not in kinds:
        return []
    seed = ctx.corpora.sizes.seed
    archive = plan(SMALL_INDEX, seed)
    items = [s for s in shapes(archive) if s.name in SHAPES]
    workdir = ctx.pool.workdir / "qido-auth"
    plain_url, _ = sqlite_index(ctx, archive, seed, workdir / "laptop")
    auth_url, _ = sqlite_index(ctx, archive, seed, workdir / "auth")
    token, cookie = _credentials(auth_url, workdir / "auth-setup")
    # The same for the other copy (opened, and left, by Vesalius as the first was), so the two
    # differ by the users alone: an A/A run without this ran the untouched copy up to 30% slower.
    open_archive(plain_url, workdir / "laptop-setup").close()
    laptop = ctx.pool.fresh("vesalius", database_url=plain_url)
    secured: Server | None = None
    try:
        required = "false" if CONTROL else "true"
        secured = ctx.pool.fresh(
            "vesalius", database_url=auth_url, env={"VESALIUS_AUTH_REQUIRED": required}
        )
        return _measure(ctx, items, laptop, secured, token, cookie)
    finally:
        ctx.pool.release(laptop)
        if secured is not None:
            ctx.pool.release(secured)


def _measure(
    ctx: Context, items: list[Shape], laptop: Server, secured: Server, token: str, cookie: str
) -> list[Row]:
    rows: list[Row] = []
    clients = {
        LAPTOP: httpx.Client(base_url=f"http://{LOOPBACK}:{laptop.http_port}"),
        BEARER: httpx.Client(
            base_url=f"http://{LOOPBACK}:{secured.http_port}",
            headers={} if CONTROL else {"Authorization": f"Bearer {token}"},
        ),
        COOKIE: httpx.Client(
            base_url=f"http://{LOOPBACK}:{secured.http_port}",
            cookies={} if CONTROL else {"vesalius-session": cookie},
        ),
    }
    try:
        anonymous = httpx.get(f"http://{LOOPBACK}:{secured.http_port}/dicom-web/studies")
        if anonymous.status_code != 401 and not CONTROL:
            raise NotSupported(f"auth.required is not on: {anonymous.status_code}")
        samples = max(ctx.samples, 20) * ctx.repeat
        for shape in items:
            rows += _measure_shape(ctx, shape, clients, samples)
    finally:
        for client in clients.values():
            client.close()
    return rows


def _measure_shape(
    ctx: Context, shape: Shape, clients: dict[str, httpx.Client], samples: int
) -> list[Row]:
    path, params = _request(shape)
    restricted = shape.expected if CONTROL else shape.restricted
    expected = {LAPTOP: shape.expected, BEARER: restricted, COOKIE: restricted}
    for kind, client in clients.items():
        got = _matches(client.get(path, params=params))
        if got != expected[kind]:
            raise NotSupported(f"{kind}: {shape.name} matched {got}, not {expected[kind]}")
    label = (
        f"QIDO-RS {shape.title} ({shape.expected:,} / {shape.restricted:,} matches), "
        f"{SMALL_INDEX:,} instances"
    )
    timed: dict[str, list[float]] = {kind: [] for kind in clients}
    order = list(clients)
    for n in range(WARMUP + samples):
        random.shuffle(order)
        for kind in order:
            start = time.perf_counter()
            answer = clients[kind].get(path, params=params)
            elapsed = (time.perf_counter() - start) * 1000
            if answer.status_code not in (200, 204):
                raise NotSupported(f"{kind}: QIDO-RS answered {answer.status_code}")
            if n >= WARMUP:
                timed[kind].append(elapsed)
    p50 = Row("auth", "qido-auth", label, "p50", "ms", stat="p50")
    p95 = Row("auth", "qido-auth", label, "p95", "ms", stat="p95")
    added = Row("auth", "qido-auth", f"{label}, minus the laptop's", "added", "ms", stat="p50")
    for kind, values in timed.items():
        for value in values:
            p50.add(kind, value)
            p95.add(kind, value)
        if kind != LAPTOP:
            for mine, plain in zip(values, timed[LAPTOP], strict=True):
                added.add(kind, mine - plain)
    summary = ", ".join(
        f"{kind} p50 {statistics.median(values):.3f} ms" for kind, values in timed.items()
    )
    extra = ", ".join(f"{kind} +{added.value(kind) or 0:.3f} ms" for kind in (BEARER, COOKIE))
    ctx.log(f"  {shape.name}: {summary}; added (median of pairs): {extra}")
    return [p50, p95, added]
