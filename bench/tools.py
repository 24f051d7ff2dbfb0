"""Finding DCMTK's command-line tools.

pynetdicom 3 installs Python scripts named like DCMTK's tools (``echoscu``, ``storescu``,
``storescp``, ``findscu``, ``movescu``, ``getscu``) into the environment's ``bin``; with a
virtualenv active they come first on ``PATH``. The benchmark and the tests want DCMTK itself,
so a tool is the first executable of that name on ``PATH`` that is a compiled program, not a
script.
"""

from __future__ import annotations

import os
from pathlib import Path


def dcmtk_tool(name: str) -> str | None:
    """Absolute path of DCMTK's ``name``, or None when DCMTK does not provide it here."""
    for folder in os.get_exec_path():
        candidate = Path(folder) / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        try:
            with candidate.open("rb") as handle:
                if handle.read(2) == b"#!":
                    continue  # a script (pynetdicom's app of the same name), not DCMTK
        except OSError:
            continue
        return str(candidate)
    return None


def require_dcmtk(name: str) -> str:
    """Like :func:`dcmtk_tool`, raising :class:`FileNotFoundError` with the package to install."""
    path = dcmtk_tool(name)
    if path is None:
        raise FileNotFoundError(f"DCMTK's {name} not found: install Debian's dcmtk package")
    return path
