"""What ``python -m bench.run`` needs beyond Vesalius's run-time dependencies: the ``bench``
extra of pyproject.toml. ``./scripts/serve`` installs ``.[codecs]`` only, so in the venv the
README sets up the harness names the one command to run rather than failing on an import."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

#: Modules bench/ imports that are in the ``bench`` extra only. Playwright is in the extra too
#: but optional: without it the viewer scenario (9) is noted as not measured.
REQUIRED = ("httpx", "matplotlib")
ROOT = Path(__file__).resolve().parent.parent


def missing() -> list[str]:
    """The required modules this interpreter cannot import."""
    absent = []
    for name in REQUIRED:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(name)
    return absent


def install_command() -> str:
    """The pip command that installs the ``bench`` extra into this interpreter's environment."""
    spec = f"{ROOT}[bench]" if Path.cwd().resolve() != ROOT else ".[bench]"
    return f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(spec)}"


def require() -> None:
    """Exit with status 2 and one line naming the install command when something is missing."""
    absent = missing()
    if absent:
        print(
            f"bench.run: {', '.join(absent)} not installed (the benchmark's 'bench' extra); "
            f"run: {install_command()}",
            file=sys.stderr,
        )
        raise SystemExit(2)
