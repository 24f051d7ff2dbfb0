"""The report: a markdown page of tables (figures and ratios) and one PNG plot per section.

Ratios are Vesalius against each reference, oriented so that **>1 means Vesalius is better**:
the reference's time (or memory) divided by Vesalius's, or Vesalius's throughput divided by
the reference's. ``python -m bench.report results.json [report.md]`` rewrites the page from a
results file without running anything.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.scenarios import REGISTRY, Row

SECTIONS = (
    ("ingest", "Ingest (scenarios 1-4)"),
    ("query", "Query latency (scenario 5)"),
    ("index", "Query latency on a large index (scenario 6)"),
    ("wado", "WADO-RS (scenario 7)"),
    ("retrieve", "Retrieve (scenario 8)"),
    ("viewer", "Viewer (scenario 9)"),
    ("large", "Large object (scenario 10)"),
    ("memory", "Server memory (scenario 10)"),
    ("tls", "TLS ingest (scenario 11)"),
    ("auth", "Authentication and access labels on QIDO-RS (scenario 12)"),
    ("api", "REST API: study list and study page (scenario 13)"),
)
SERVER_ORDER = (
    "vesalius",
    "orthanc",
    "storescp",
    "vesalius-sqlite",
    "vesalius-postgresql",
    "vesalius-plain",
    "vesalius-tls",
    "vesalius-laptop",
    "vesalius-bearer",
    "vesalius-cookie",
)
LABELS = {
    "vesalius": "Vesalius",
    "orthanc": "Orthanc",
    "storescp": "DCMTK storescp",
    "vesalius-sqlite": "Vesalius, SQLite",  # scenario 6: the index backends side by side
    "vesalius-postgresql": "Vesalius, PostgreSQL",
    "vesalius-plain": "Vesalius, plain DIMSE",  # scenario 11: the two transports side by side
    "vesalius-tls": "Vesalius, DIMSE over TLS",
    "vesalius-laptop": "Vesalius, laptop defaults",  # scenario 12: with and without auth
    "vesalius-bearer": "Vesalius, auth + labels, bearer token",
    "vesalius-cookie": "Vesalius, auth + labels, session cookie",
}
COLORS = {
    "vesalius": "#c0392b",
    "orthanc": "#2e86c1",
    "storescp": "#7f8c8d",
    "vesalius-sqlite": "#c0392b",
    "vesalius-postgresql": "#8e44ad",
    "vesalius-plain": "#c0392b",
    "vesalius-tls": "#27ae60",
    "vesalius-laptop": "#c0392b",
    "vesalius-bearer": "#27ae60",
    "vesalius-cookie": "#8e44ad",
}
NUMBERS = {s.name: s.number for s in REGISTRY}


def rows_from(results: dict[str, Any]) -> list[Row]:
    return [Row(**row) for row in results.get("rows", [])]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


class Notes:
    """Footnotes collected while a table is written: each distinct text gets one number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"<sup>{self.texts.index(text) + 1}</sup>"

    def lines(self) -> list[str]:
        return [f"{i}. {text}" for i, text in enumerate(self.texts, 1)]


def servers_in(rows: Sequence[Row]) -> list[str]:
    present = {k for r in rows for k in (*r.samples, *r.notes)}
    return [k for k in SERVER_ORDER if k in present]


def section_table(rows: Sequence[Row], plot: str | None) -> list[str]:
    kinds = servers_in(rows)
    refs = [k for k in kinds if k != "vesalius"]
    head = ["#", "Measure", *(LABELS[k] for k in kinds)]
    head += [f"Vesalius vs {LABELS[r]} (>1: Vesalius better)" for r in refs if "vesalius" in kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = Notes()
    for row in rows:
        cells = [str(NUMBERS.get(row.scenario, "")), f"{row.label} — {row.metric} ({row.unit})"]
        for kind in kinds:
            if kind not in row.samples and kind not in row.notes:
                cells.append("—")  # this server does not take part in the scenario
                continue
            cell = fmt(row.value(kind))
            if kind in row.notes:
                cell += notes.mark(f"{LABELS[kind]}: {row.notes[kind]}")
            cells.append(cell)
        if "vesalius" in kinds:
            cells += [fmt_ratio(row.ratio("vesalius", ref)) for ref in refs]
        lines.append("| " + " | ".join(cells) + " |")
    if notes.texts:
        lines += ["", *notes.lines()]
    if plot:
        lines += ["", f"![{plot}]({plot})"]
    return lines


def plot_section(rows: Sequence[Row], title: str, path: Path) -> None:
    """Horizontal grouped bars, one panel per (metric, unit), one bar per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.metric, row.unit), []).append(row)
    kinds = servers_in(rows)
    heights = [max(1.6, 0.42 * len(g) * max(1, len(kinds)) ** 0.5 + 0.8) for g in groups.values()]
    total = sum(heights) + 0.9
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(10, total),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    width = 0.8 / max(1, len(kinds))
    for ax, ((metric, unit), group) in zip(axes[:, 0], groups.items(), strict=True):
        labels = [textwrap.fill(r.label, 48) for r in group]
        values_all: list[float] = []
        for i, kind in enumerate(kinds):
            ys = [n + (i - (len(kinds) - 1) / 2) * width for n in range(len(group))]
            values = [r.value(kind) for r in group]
            bars = [v if v is not None else 0.0 for v in values]
            values_all += [v for v in values if v is not None]
            ax.barh(ys, bars, height=width, color=COLORS[kind], label=LABELS[kind])
            for y, v, row in zip(ys, values, group, strict=True):
                if v is None and kind in row.notes:
                    ax.text(
                        0.002,
                        y,
                        "n/a",
                        va="center",
                        fontsize=7,
                        color=COLORS[kind],
                        transform=ax.get_yaxis_transform(),
                    )
        ax.set_yticks(range(len(group)), labels, fontsize=7)
        ax.invert_yaxis()
        better = "lower" if group[0].better == "lower" else "higher"
        ax.set_xlabel(f"{metric} ({unit}), {better} is better", fontsize=8)
        positive = [v for v in values_all if v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=11, y=1 - 0.15 / total)
    fig.legend(
        handles,
        names,
        loc="upper center",
        ncol=len(kinds),
        fontsize=8,
        bbox_to_anchor=(0.5, 1 - 0.4 / total),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / total))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _meta_lines(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    host = meta.get("host", {})
    lines = [
        f"- Run: {meta.get('date', '?')}, commit `{meta.get('commit', '?')}`, "
        f"{meta.get('repeat', '?')} run(s) per server (median), "
        f"{meta.get('samples', '?')} timed samples per query per run, "
        f"{'quick (tiny corpora)' if meta.get('quick') else 'full corpora'}, "
        f"took {meta.get('duration_s', 0) / 60:.1f} min.",
        *(
            [
                f"- Scenarios {', '.join(meta['rerun']['scenarios'])} re-run on "
                f"{meta['rerun']['date']}, commit `{meta['rerun']['commit']}` (merged with "
                "`python -m bench.report`)."
            ]
            if meta.get("rerun")
            else []
        ),
        f"- Machine: {host.get('cpus', '?')} cores, {host.get('memory_gib', '?')} GiB, "
        f"{host.get('system', '?')}. It is shared with other engineers running test suites, "
        "so absolute figures are noisy; runs alternate between servers so that the noise "
        "falls on all of them alike, and **the ratios are what matter**.",
        *(
            [
                f"- Machine speed when the run began: a fixed pure-Python loop took "
                f"{meta['calibration']['python_loop_ms']:.0f} ms, creating a small file "
                f"{meta['calibration']['file_create_us']:.0f} µs (median); compare these "
                "between runs before comparing absolute figures."
            ]
            if meta.get("calibration")
            else []
        ),
    ]
    for kind in SERVER_ORDER:
        if kind in meta.get("versions", {}):
            setup = meta.get("setup", {}).get(kind, "")
            lines.append(f"- {LABELS[kind]} {meta['versions'][kind]}: {setup}")
    if meta.get("clients"):
        lines.append(f"- {meta['clients']}")
    for kind, reason in meta.get("unavailable", {}).items():
        lines.append(f"- {LABELS.get(kind, kind)} not measured: {reason}")
    for kind, corpus in meta.get("corpora", {}).items():
        lines.append(f"- Corpus {kind}: {corpus}")
    return lines


#: Hand-written notes on what limits each gap (from profiles), appended to every report.
ANALYSIS = Path(__file__).with_name("analysis.md")
HOW_TO_RUN = (
    "How to run: in the venv `./scripts/serve` sets up, add the `bench` extra "
    "(`.venv/bin/pip install -e '.[bench]'`: httpx, matplotlib, Playwright; `python -m "
    "bench.run` names this command when they are missing), then `.venv/bin/python -m "
    "bench.run` (`--quick` for a smoke run, `--only N...` for some scenarios, `--servers`, "
    "`--repeat N`). As root it installs Debian's orthanc, orthanc-dicomweb and dcmtk when "
    "missing; the viewer scenario also needs Debian's chromium and `vesalius viewer "
    "install`."
)


def write_report(results: dict[str, Any], report: Path) -> list[Path]:
    """Write the markdown page and its plots (in a folder named after the page); the plots."""
    rows = rows_from(results)
    plot_dir = report.parent / report.stem
    plots: list[Path] = []
    out = [
        "# Benchmarks: Vesalius side by side with Orthanc and DCMTK",
        "",
        "Generated by `python -m bench.run` (see bench/); do not edit by hand. Every figure "
        "is the median of the runs (latencies: the percentile over all timed samples). "
        "Ratio columns compare Vesalius with each reference, oriented so that **>1 means "
        "Vesalius is better**: the reference's time or memory divided by Vesalius's, or "
        "Vesalius's throughput divided by the reference's. DCMTK storescp writes files and "
        "keeps no index: it is the near-physical limit for ingest, not a PACS.",
        "",
        HOW_TO_RUN,
        "",
        *_meta_lines(results),
    ]
    for key, title in SECTIONS:
        section = [r for r in rows if r.section == key]
        if not section:
            continue
        plot_path = plot_dir / f"{key}.png"
        plot_section(section, title, plot_path)
        plots.append(plot_path)
        rel = f"{plot_dir.name}/{plot_path.name}"
        out += ["", f"## {title}", "", *section_table(section, rel)]
    statuses = results.get("scenarios", [])
    pending = [s for s in statuses if s.get("status") != "run"]
    if pending:
        out += ["", "## Scenarios not measured in this run", ""]
        out += [f"- {s['number']}. {s['title']}: {s.get('note', s['status'])}" for s in pending]
    if ANALYSIS.is_file():
        out += ["", ANALYSIS.read_text().rstrip()]
    errors = results.get("errors", [])
    if errors:
        out += ["", "## Errors", ""]
        out += [f"- {e['scenario']}: {e['error']}" for e in errors]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(out) + "\n")
    return plots


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m bench.report RESULTS.json [REPORT.md]", file=sys.stderr)
        return 2
    results = json.loads(Path(args[0]).read_text())
    report = Path(args[1]) if len(args) > 1 else Path(results["meta"]["report"])
    write_report(results, report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
