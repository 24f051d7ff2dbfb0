"""``python -m bench.run [--quick] [--only NAME...] [--repeat N]``: run the benchmarks.

Installs the reference servers from Debian's packages when they are missing (as root, unless
``--no-install``), generates or reuses the corpora under bench/out/, runs the scenarios of the
registry on every server that supports them, keeps the raw results as JSON and writes the
report (docs/benchmarks.md and docs/benchmarks/*.png for a full run; a ``--quick`` run writes
under bench/out/quick/ unless ``--report`` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import extras

extras.require()  # before the imports below: one clear line, not an ImportError

from bench.corpus import Corpora, Sizes  # noqa: E402
from bench.report import write_report  # noqa: E402
from bench.scenarios import REGISTRY, Context, Row, Scenario, by_name  # noqa: E402
from bench.servers import SERVER_TYPES, Pool  # noqa: E402
from bench.tools import dcmtk_tool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PACKAGES = ("orthanc", "orthanc-dicomweb", "dcmtk")
SETUP = {
    "vesalius": "`python -m vesalius.cli serve` on its defaults (SQLite index in its data "
    "folder, max PDU 256 KiB, no fsync, DIMSE and HTTP in one process per core: two here), "
    "log level warning.",
    "orthanc": "Debian's package with its DICOMweb plugin, on Orthanc's defaults (SQLite index, "
    "max PDU 16 KiB, StorageAccessOnFind Always) except SyncStorageArea false (no fsync, as "
    "Vesalius), no authentication, Find/Move/Get allowed for any AE; TCP_NODELAY=1.",
    "storescp": "`storescp --bit-preserving -od DIR` (files only, no index, max PDU 16 KiB), "
    "`--fork` for concurrent associations; TCP_NODELAY=1.",
}
CLIENTS = (
    "Clients: DCMTK storescu/movescu/getscu (TCP_NODELAY=1; times are their wall time, "
    "including their start and file checks), C-FIND through one persistent association per "
    "server on Vesalius's own association layer (no polling; responses counted, not decoded), "
    "QIDO-RS and WADO-RS through one keep-alive httpx client per server."
)


def missing_packages() -> list[str]:
    missing = []
    for package in DEBIAN_PACKAGES:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in proc.stdout:
            missing.append(package)
    return missing


def install_packages(log: Any) -> None:
    """apt-get install the reference servers that are missing (root only)."""
    if shutil.which("dpkg-query") is None:
        return
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        log(f"missing Debian packages {' '.join(missing)} (not root: not installing)")
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        check=False,
    )


def package_version(package: str) -> str:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else "?"


def versions(kinds: Sequence[str]) -> dict[str, str]:
    from vesalius import __version__

    found = {"vesalius": __version__}
    if "orthanc" in kinds:
        found["orthanc"] = (
            f"{package_version('orthanc')} (DICOMweb plugin {package_version('orthanc-dicomweb')})"
        )
    if "storescp" in kinds:
        found["storescp"] = f"DCMTK {package_version('dcmtk')}"
    return found


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "?"
    return f"{head}+changes" if head and dirty else head or "?"


def host_info() -> dict[str, Any]:
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory),
        "system": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
    }


def calibrate(folder: Path) -> dict[str, float]:
    """How fast this machine is right now, for reading absolute figures across runs: a fixed
    pure-Python loop (ms), and creating and writing a small file (µs, median of 500; a busy
    or recently purged disk makes this slow, see bench/analysis.md). The files stay until the
    run's folder is removed at the end: deleting them would slow the first scenario."""
    start = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i * i % 7
    python_ms = (time.perf_counter() - start) * 1000
    folder.mkdir(parents=True, exist_ok=True)
    timings = []
    block = bytes(4096)
    for i in range(500):
        path = folder / f"calibrate-{i}"
        begun = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, block)
        os.close(fd)
        timings.append(time.perf_counter() - begun)
    timings.sort()
    return {"python_loop_ms": round(python_ms, 1), "file_create_us": round(timings[250] * 1e6, 1)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny corpora, one run (a smoke run)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="scenario names or numbers")
    parser.add_argument("--repeat", type=int, help="runs per server (default 3, quick 1)")
    parser.add_argument("--samples", type=int, help="timed samples per query per run")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=sorted(SERVER_TYPES),
        default=list(SERVER_TYPES),
        help="servers to run (default: all)",
    )
    parser.add_argument("--report", type=Path, help="markdown report to write")
    parser.add_argument("--work", type=Path, help="folder for corpora and servers (bench/out)")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data folders")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser.parse_args(argv)


def list_scenarios() -> None:
    for s in REGISTRY:
        state = f"pending: {s.pending}" if s.pending else ", ".join(s.servers)
        print(f"{s.number:>2} {s.name:<12} {s.title} [{state}]")


def run_scenario(
    scenario: Scenario,
    ctx: Context,
    kinds: list[str],
    unavailable: dict[str, str],
) -> list[Row]:
    assert scenario.run is not None
    rows = scenario.run(ctx, kinds)
    for row in rows:
        for kind in scenario.servers:
            if kind in unavailable:
                row.notes.setdefault(kind, unavailable[kind])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_scenarios()
        return 0

    def log(text: str) -> None:
        print(text, flush=True)

    started = time.monotonic()
    work = (args.work or ROOT / "bench" / "out").resolve()
    default_report = (
        work / "quick" / "benchmarks.md" if args.quick else ROOT / "docs" / "benchmarks.md"
    )
    report = (args.report or default_report).resolve()
    try:
        scenarios = by_name(args.only) if args.only else list(REGISTRY)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not args.no_install:
        install_packages(log)
    if dcmtk_tool("storescu") is None:
        print("DCMTK's storescu is needed as the client: install Debian's dcmtk", file=sys.stderr)
        return 2

    sizes = Sizes.quick() if args.quick else Sizes()
    repeat = args.repeat or (1 if args.quick else 3)
    samples = args.samples or (3 if args.quick else 30)
    unavailable = {}
    for kind in args.servers:
        reason = SERVER_TYPES[kind].unavailable()
        if reason:
            unavailable[kind] = reason
            log(f"{kind}: {reason}")
    kinds = [k for k in args.servers if k not in unavailable]
    corpora = Corpora(work / ("corpus-quick" if args.quick else "corpus-full"), sizes)
    run_dir = work / f"run-{os.getpid()}"
    pool = Pool(run_dir, keep=args.keep, background_stop=args.quick)
    ctx = Context(corpora, pool, repeat, samples, log)

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(),
            "quick": args.quick,
            "repeat": repeat,
            "samples": samples,
            "host": host_info(),
            "calibration": calibrate(run_dir / "calibrate"),
            "versions": versions(kinds),
            "setup": SETUP,
            "clients": CLIENTS,
            "unavailable": unavailable,
            "sizes": asdict(sizes),
            "corpora": {},
            "report": str(report),
        },
        "rows": [],
        "errors": [],
        "scenarios": [],
    }
    results_path = report.parent / report.stem / "results.json"
    try:
        for scenario in scenarios:
            entry: dict[str, Any] = {
                "number": scenario.number,
                "name": scenario.name,
                "title": scenario.title,
                "servers": list(scenario.servers),
            }
            results["scenarios"].append(entry)
            if scenario.run is None:
                entry.update(status="pending", note=scenario.pending)
                continue
            active = [k for k in scenario.servers if k in kinds]
            if not active:
                entry.update(status="skipped", note="none of its servers is available")
                continue
            log(f"[{scenario.number}] {scenario.title} on {', '.join(active)}")
            begun = time.monotonic()
            try:
                rows = run_scenario(scenario, ctx, active, unavailable)
            except Exception as exc:
                log(traceback.format_exc())
                entry.update(status="error", note=f"{type(exc).__name__}: {exc}")
                results["errors"].append({"scenario": scenario.name, "error": entry["note"]})
                continue
            entry.update(status="run", seconds=round(time.monotonic() - begun, 1))
            results["rows"] += [asdict(r) for r in rows]
            results["meta"]["duration_s"] = time.monotonic() - started
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1))
    finally:
        pool.close()
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    results["meta"]["corpora"] = corpora.describe()
    results["meta"]["duration_s"] = time.monotonic() - started
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1))
    plots = write_report(results, report)
    log(f"wrote {report} and {len(plots)} plots; raw results in {results_path}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
