"""With the venv active, DCMTK's tools are the ones found on PATH (issue 13, "No shadowed
tools"): pynetdicom is a test peer only, and scripts/test and scripts/serve remove its console
scripts (storescu, findscu, ...) from .venv/bin with scripts/unshadow-dcmtk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNSHADOW = ROOT / "scripts" / "unshadow-dcmtk"
#: pynetdicom 3's console scripts; all but qrscp and echoscp share a name with a DCMTK tool.
PYNETDICOM_SCRIPTS = (
    "echoscu",
    "echoscp",
    "findscu",
    "getscu",
    "movescu",
    "qrscp",
    "storescp",
    "storescu",
)
DCMTK_TOOLS = ("echoscu", "findscu", "getscu", "movescu", "storescp", "storescu")
PYNETDICOM_SCRIPT = """#!{python}
import sys
from pynetdicom.apps.{name}.{name} import main
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit(main())
"""


def test_pynetdicom_is_not_a_run_time_dependency() -> None:
    """The installed distribution's requirements name pynetdicom only under the test extra."""
    from importlib.metadata import requires

    needs = [line for line in requires("vesalius") or [] if line.startswith("pynetdicom")]
    assert needs and all("extra ==" in line and "test" in line for line in needs), needs


def test_venv_bin_does_not_shadow_dcmtk() -> None:
    """Every DCMTK tool name resolves outside the venv's bin with that bin first on PATH,
    as an activated venv puts it; when DCMTK is installed, to DCMTK's program."""
    venv_bin = Path(sys.executable).parent
    path = os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")])
    shadowing = [
        name
        for name in PYNETDICOM_SCRIPTS
        if (found := shutil.which(name, path=path)) and Path(found).parent == venv_bin
    ]
    assert not shadowing, (
        f"{venv_bin} holds {', '.join(shadowing)}, which shadow DCMTK's tools: run "
        "./scripts/unshadow-dcmtk (./scripts/test does)"
    )
    for name in DCMTK_TOOLS:
        found = shutil.which(name, path=path)
        if found is not None:
            with open(found, "rb") as handle:
                assert handle.read(2) != b"#!", f"{found} is a script, not DCMTK's {name}"


def test_unshadow_removes_only_pynetdicom_scripts(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in PYNETDICOM_SCRIPTS:
        (bin_dir / name).write_text(PYNETDICOM_SCRIPT.format(python=sys.executable, name=name))
    keep = {
        "vesalius": f"#!{sys.executable}\nimport sys\nfrom vesalius.cli import main\n",
        "mentions": "#!/bin/sh\n# calls pynetdicom's storescu\nexec python -m pynetdicom\n",
        "binary": "\x7fELF from pynetdicom.apps.storescu.storescu import main\n",
    }
    for name, text in keep.items():
        (bin_dir / name).write_text(text)
    (bin_dir / "python").symlink_to(sys.executable)
    done = subprocess.run([str(UNSHADOW), str(bin_dir)], capture_output=True, text=True, check=True)
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted([*keep, "python"])
    assert done.stdout.count("removed") == len(PYNETDICOM_SCRIPTS)
    again = subprocess.run([str(UNSHADOW), str(bin_dir)], capture_output=True, text=True)
    assert again.returncode == 0 and not again.stdout


@pytest.mark.parametrize("script", ["test", "serve"])
def test_install_scripts_unshadow(script: str) -> None:
    """Both install paths run it after pip, on every start (a venv from before keeps
    pynetdicom installed)."""
    text = (ROOT / "scripts" / script).read_text()
    assert "./scripts/unshadow-dcmtk .venv/bin" in text
    assert text.index("pip install") < text.index("./scripts/unshadow-dcmtk")
