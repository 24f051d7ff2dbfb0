"""Scenario 11: C-STORE ingest of corpus (a) over DIMSE-TLS against plain DIMSE, same run, same
server configuration (issue 14; the target is TLS at least 0.7x plain).

One Vesalius configuration serves both ports: plain DIMSE on ``dicom.port`` and DIMSE over TLS
(PS3.15 B.9, BCP 195 non-downgrading, certificates from ``vesalius.commands.certs``) on
``dicom.tls_port``. Each repetition starts a fresh server of that configuration for each
transport, in alternating order, and sends the whole corpus over one association: DCMTK's
``storescu`` on the plain port, ``storescu +tls`` on the TLS port. The rows hold the times and
throughputs of both, and the TLS/plain throughput ratio of each repetition (its median is the
figure to compare with 0.7).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.corpus import Corpus
from bench.scenarios import TOOL_TIMEOUT, Context, NotSupported, Row, note, rotate, storescu_argv
from bench.servers import Server, dcmtk_env
from vesalius.commands.certs import Issued, issue, make_authority, server_names

PLAIN, TLS = "vesalius-plain", "vesalius-tls"


def _certificates(folder: Path) -> tuple[Issued, Issued, Issued]:
    """(authority, server, client) for the run, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = make_authority(folder, "Vesalius bench CA")
    server = issue(ca, folder, "server", "localhost", names=server_names())
    client = issue(ca, folder, "client", "STORESCU", client=True)
    return ca, server, client


def _argv(server: Server, corpus: Corpus, tls: tuple[Issued, Issued] | None) -> list[str]:
    argv = storescu_argv(server, corpus, None if corpus.count > 1000 else corpus.files)
    if tls is None:
        return argv
    ca, client = tls
    port = str(server.options["tls_port"])
    argv[argv.index(str(server.dicom_port))] = port
    extra = ["+tls", str(client.private_key), str(client.certificate), "+cf", str(ca.certificate)]
    return [argv[0], *extra, *argv[1:]]


def _store(server: Server, corpus: Corpus, argv: list[str]) -> float:
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=dcmtk_env(), cwd=corpus.root, stdout=log, stderr=subprocess.STDOUT
        )
        code = proc.wait(timeout=TOOL_TIMEOUT)
        elapsed = time.perf_counter() - start
        if code != 0:
            log.seek(0)
            lines = log.read().strip().splitlines()
            raise NotSupported(f"storescu exited {code}: {lines[-1][:160] if lines else ''}")
    held = server.instance_count()
    if held != corpus.count:
        raise NotSupported(f"holds {held} instances after storing {corpus.count}")
    return elapsed


def store_tls(ctx: Context, kinds: list[str]) -> list[Row]:
    """Scenario 11 (``kinds``: Vesalius only)."""
    corpus = ctx.corpora.get("ct")
    label = f"C-STORE {corpus.count} CT images ({corpus.megabytes:.0f} MB), 1 association"
    time_row = Row("tls", "store-tls", label, "time", "s")
    rate_row = Row("tls", "store-tls", label, "throughput", "MB/s", better="higher")
    ratio_row = Row(
        "tls", "store-tls", "TLS throughput / plain, per repetition", "ratio", "x", "higher"
    )
    if "vesalius" not in kinds:
        return []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tls-")))
        ca, server_pair, client = _certificates(folder)
        options = {
            "tls_certificate": server_pair.certificate,
            "tls_private_key": server_pair.private_key,
        }
        for rep in range(ctx.repeat):
            rates: dict[str, float] = {}
            for kind in rotate((PLAIN, TLS), rep):
                server = ctx.pool.fresh("vesalius", **options)
                try:
                    argv = _argv(server, corpus, (ca, client) if kind == TLS else None)
                    try:
                        elapsed = _store(server, corpus, argv)
                    except NotSupported as exc:
                        note(str(exc), kind, time_row, rate_row, ratio_row)
                        continue
                finally:
                    ctx.pool.release(server)
                time_row.add(kind, elapsed)
                rates[kind] = corpus.megabytes / elapsed
                rate_row.add(kind, rates[kind])
                ctx.log(f"  {kind}: {elapsed:.2f} s, {rates[kind]:.1f} MB/s")
            if PLAIN in rates and TLS in rates:
                ratio = rates[TLS] / rates[PLAIN]
                ratio_row.add(TLS, ratio)
                ctx.log(f"  TLS/plain: {ratio:.2f}x")
    return [time_row, rate_row, ratio_row]
