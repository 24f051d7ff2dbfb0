"""``python -m bench.run`` in an environment without the ``bench`` extra (the venv that
``./scripts/serve`` sets up installs ``.[codecs]`` only) says in one line what to install,
instead of an ImportError. ``python -S`` gives a real interpreter without site-packages."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_missing_bench_extra_is_one_clear_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "bench.run", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "httpx" in lines[0] and "matplotlib" in lines[0]
    assert "-m pip install -e '.[bench]'" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!;\[ ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_bench_extra_covers_what_bench_imports() -> None:
    """Every third-party module bench/ imports is a run-time dependency or in the extra, and
    pynetdicom is neither."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    available = _requirement_names(project["dependencies"]) | _requirement_names(
        project["optional-dependencies"]["bench"]
    )
    assert "pynetdicom" not in available
    imported: set[str] = set()
    for path in (ROOT / "bench").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"bench", "vesalius"}
    assert third_party, "bench/ imports nothing outside the standard library?"
    assert {name.lower() for name in third_party} <= available, third_party - available
