"""The benchmark harness, run end to end on tiny corpora so that it cannot rot.

One ``python -m bench.run --quick`` run (module fixture) on Vesalius, DCMTK's storescp and, when
Debian's orthanc and orthanc-dicomweb are installed, Orthanc. Timings are never asserted: only
that the report, its plots and numbers are produced, and that ratios point the documented way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class BenchRun:
    proc: subprocess.CompletedProcess[str]
    report: Path
    results: dict[str, Any]

    def rows(self, section: str) -> list[dict[str, Any]]:
        return [r for r in self.results["rows"] if r["section"] == section]

    def table(self, heading: str) -> list[dict[str, str]]:
        """The rows of the report's table under the ``## heading...`` title, by column."""
        lines = self.report.read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(f"## {heading}"))
        block = []
        for line in lines[start + 1 :]:
            if line.startswith("## "):
                break
            if line.startswith("|") and not line.startswith("|---"):
                block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        header, *body = block
        return [dict(zip(header, cells, strict=True)) for cells in body]


def _figure(cell: str) -> float:
    return float(cell.split("<")[0].replace(",", "").rstrip("x"))


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    out = tmp_path_factory.mktemp("bench")
    report = out / "benchmarks.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--no-install",
            "--report",
            str(report),
            "--work",
            str(out / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "benchmarks" / "results.json").read_text())
    return BenchRun(proc, report, results)


def _numbers(row: dict[str, Any], kind: str) -> list[float]:
    return [float(v) for v in row["samples"].get(kind, [])]


def test_report_and_plots_are_written(bench_run: BenchRun) -> None:
    text = bench_run.report.read_text()
    assert text.startswith("# Benchmarks")
    assert "Vesalius vs DCMTK storescp (>1: Vesalius better)" in text
    plots = sorted((bench_run.report.parent / "benchmarks").glob("*.png"))
    assert plots, "no plot written"
    for plot in plots:
        assert plot.read_bytes()[:8] == PNG_SIGNATURE
        assert f"](benchmarks/{plot.name})" in text
    assert not bench_run.results["errors"]
    calibration = bench_run.results["meta"]["calibration"]
    assert calibration["python_loop_ms"] > 0 and calibration["file_create_us"] > 0
    assert "Machine speed when the run began" in text


def test_every_ingest_row_has_numbers_for_vesalius_and_storescp(bench_run: BenchRun) -> None:
    ingest = [r for r in bench_run.rows("ingest") if r["label"].startswith("C-STORE")]
    assert {r["scenario"] for r in ingest} == {"store-ct", "store-ct-4", "store-small"}
    for row in ingest:
        for kind in ("vesalius", "storescp"):
            values = _numbers(row, kind)
            assert values and all(v > 0 for v in values), (row["label"], kind, row["notes"])
    table = [row for row in bench_run.table("Ingest") if row["Measure"].startswith("C-STORE")]
    assert len(table) == len(ingest)
    for cells in table:
        assert _figure(cells["Vesalius"]) > 0
        assert _figure(cells["DCMTK storescp"]) > 0


def test_vesalius_large_object_and_memory_are_measured(bench_run: BenchRun) -> None:
    large = {r["label"]: r for r in bench_run.rows("large")}
    store_in = next(r for label, r in large.items() if "in (C-STORE)" in label)
    assert _numbers(store_in, "vesalius") and _numbers(store_in, "storescp")
    memory = bench_run.rows("memory")
    peaks = [v for r in memory for v in _numbers(r, "vesalius")]
    assert peaks and all(v > 1 for v in peaks)  # MiB of a running Python process


def test_ratios_say_greater_is_better_for_vesalius(bench_run: BenchRun) -> None:
    """For a time, the ratio is reference / Vesalius; for a throughput, Vesalius / reference."""
    checked = 0
    for cells in bench_run.table("Ingest"):
        for ref in ("Orthanc", "DCMTK storescp"):
            column = f"Vesalius vs {ref} (>1: Vesalius better)"
            figures = cells[ref] + cells["Vesalius"]
            if column not in cells or "n/a" in figures or "—" in figures:
                continue  # a server outside the scenario, or one that could not run it
            vesalius, reference = _figure(cells["Vesalius"]), _figure(cells[ref])
            time_row = "time (s)" in cells["Measure"]
            expected = reference / vesalius if time_row else vesalius / reference
            assert _figure(cells[column]) == pytest.approx(expected, rel=0.1, abs=0.02), cells
            checked += 1
    assert checked >= 6


def test_orthanc_is_measured_when_installed(bench_run: BenchRun) -> None:
    unavailable = bench_run.results["meta"]["unavailable"]
    if "orthanc" in unavailable:
        pytest.skip(f"Orthanc parts not run: {unavailable['orthanc']}")
    for row in bench_run.rows("ingest"):  # C-STORE and STOW-RS
        assert _numbers(row, "orthanc"), (row["label"], row["notes"])
    qido = [r for r in bench_run.rows("query") if r["label"].startswith("QIDO-RS")]
    assert qido and all(_numbers(r, "orthanc") for r in qido), [r["notes"] for r in qido]
    assert any(_numbers(r, "orthanc") for r in bench_run.rows("retrieve"))


def test_queries_and_retrieves_report_numbers_or_a_reason(bench_run: BenchRun) -> None:
    """Vesalius's cells are numbers, or n/a with the server's failure as the reason."""
    stow = [r for r in bench_run.rows("ingest") if r["scenario"] == "stow"]
    rows = bench_run.rows("query") + bench_run.rows("retrieve") + stow
    assert rows
    for row in rows:
        assert _numbers(row, "vesalius") or row["notes"].get("vesalius"), row["label"]
    text = bench_run.report.read_text()
    for scenario in bench_run.results["scenarios"]:
        if scenario["status"] == "pending":
            assert f"- {scenario['number']}. {scenario['title']}: " in text
