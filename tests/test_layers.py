"""The import rules of DESIGN.md and docs/architecture.md: dependencies point down only, and
the front doors reach the archive through its services (an AST walk of ``src/vesalius``)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "vesalius"
#: Base modules any layer above the storage may import. logcontext: the front doors name the
#: request or association their log lines come from (the wiring's ``logs`` writes it).
BASE = {"errors", "identity", "logcontext", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "dicom": {"dicom", "errors"},
    "storage": {"storage", "errors"},
    "index": {"index", "dicom", "errors"},
    "services": {"services", "index", "storage", "dicom", "settings"} | BASE,
    # settings: the CLI's SCU (dimse/scu/) takes its peers (Modality) and options from them
    "dimse": {"dimse", "services", "dicom", "settings", "telemetry", "tls"} | BASE,
    # metrics: counted from the services' events and by hooks in the front doors above it
    "telemetry": {"telemetry", "services"} | BASE,
    # the HTTP host, and the apps it mounts; the apps never import each other
    "web": {"web", "services", "dicom", "telemetry", "tls"} | BASE,
    "dicomweb": {"dicomweb", "web", "services", "dicom"} | BASE,
    "viewer": {"viewer", "web"} | BASE,
    # the REST API (FastAPI, mounted at /api) and the web UI (static pages over the API)
    "api": {"api", "web", "services", "dicom"} | BASE,
    "ui": {"ui", "web"} | BASE,
    "errors": {"__init__"},
    "identity": set(),
    "logcontext": set(),
    "settings": {"errors"},
    # TLS contexts (PS3.15 B.9) for the front doors and the wiring
    "tls": {"errors", "settings"},
}
#: Wire everything; nothing imports them.
#: (shutdown, reload: the signal handling of ``serve``, over every part of a process;
#: systemd: the readiness protocol, sd_notify, that server.py speaks; startup: the commands'
#: checks of the data folder and the index; fatal: how the command ends on an error.)
WIRING = {
    "server",
    "cli",
    "commands",
    "wiring",
    "processes",
    "logs",
    "shutdown",
    "reload",
    "systemd",
    "startup",
    "fatal",
}
#: The front doors: they reach the archive through its services only.
ADAPTERS = {"dimse", "dicomweb", "web", "viewer", "api", "ui", "commands", "cli"}
#: Third-party modules a layer must not import (DESIGN.md: dicom/ is pure DICOM helpers over
#: pydicom; services speak no protocol).
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "dicom": {"sqlalchemy", "starlette", "uvicorn", "httpx", "alembic"},
    "services": {"starlette", "uvicorn", "httpx", "anyio", "h11"},
    "index": {"starlette", "uvicorn", "httpx"},
    "storage": {"sqlalchemy", "starlette", "uvicorn"},
    "telemetry": {"starlette", "uvicorn", "httpx", "sqlalchemy"},
}
#: Third-party modules no module of ``src/vesalius`` imports: pynetdicom is a test peer only
#: (the ``test`` extra; dimse/ has its own A-ASSOCIATE codec, docs/architecture.md).
FORBIDDEN_EVERYWHERE = {"pynetdicom"}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _imports(path: Path) -> set[str]:
    """The layers of Vesalius that ``path`` imports."""
    found: set[str] = set()
    for name in _modules(path):
        parts = name.split(".")
        if parts[0] == "vesalius":
            found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def test_dependencies_point_down() -> None:
    problems = []
    for path in SRC.rglob("*.py"):
        layer = _layer(path)
        imported = _imports(path)
        if layer in WIRING or layer == "__init__":
            continue
        allowed = ALLOWED[layer] | {layer}
        for target in imported - allowed:
            problems.append(f"{path.relative_to(SRC)} imports vesalius.{target}")
        if imported & WIRING:
            problems.append(f"{path.relative_to(SRC)} imports the wiring layer")
    assert problems == []


def test_layers_stay_off_foreign_libraries() -> None:
    """dicom/ uses pydicom and codecs only; the services speak no protocol; nothing imports
    pynetdicom."""
    problems = []
    for path in SRC.rglob("*.py"):
        forbidden = FORBIDDEN_THIRD_PARTY.get(_layer(path), set()) | FORBIDDEN_EVERYWHERE
        for name in _modules(path):
            if name.split(".")[0] in forbidden:
                problems.append(f"{path.relative_to(SRC)} imports {name}")
    assert problems == []


def test_every_layer_is_known() -> None:
    layers = {_layer(p) for p in SRC.rglob("*.py")}
    assert layers <= set(ALLOWED) | WIRING | {"__init__"}


def test_front_doors_use_services_only() -> None:
    """No adapter or CLI module imports the index or the storage, or reads a ``catalog`` or
    ``storage`` attribute (attribute access included); none reads raw settings but the CLI's
    SCU (``dimse/scu/``) and the commands."""
    problems = []
    for path in SRC.rglob("*.py"):
        if _layer(path) not in ADAPTERS:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for target in _imports(path) & {"index", "storage"}:
            problems.append(f"{path.relative_to(SRC)} imports vesalius.{target}")
        in_scu = path.parent.name == "scu"
        if "settings" in _imports(path) and not in_scu and _layer(path) != "commands":
            problems.append(f"{path.relative_to(SRC)} imports vesalius.settings")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("catalog", "storage"):
                problems.append(f"{path.relative_to(SRC)}:{node.lineno} reads .{node.attr}")
    assert problems == []


def test_only_the_wiring_chooses_a_blob_store() -> None:
    """Stored blobs are read and written through the stores' interface (``storage/base.py``:
    put, open, open_range, delete), so an object store can stand behind it: no module outside
    ``storage/`` and the wiring names a backend, and none asks for a blob's local path."""
    backends = {"FolderStorage"}
    problems = []
    for path in SRC.rglob("*.py"):
        if _layer(path) == "storage" or _layer(path) in WIRING:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            named = (
                node.id
                if isinstance(node, ast.Name)
                else node.name
                if isinstance(node, ast.alias)
                else node.attr
                if isinstance(node, ast.Attribute)
                else None
            )
            if named in backends or named == "local_path":
                problems.append(f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)} {named}")
    assert problems == []
