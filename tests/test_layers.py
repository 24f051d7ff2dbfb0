"""The import rules of DESIGN.md: dependencies point down only."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "vesalius"
BASE = {"errors", "identity", "settings", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "dicom": {"dicom", "errors"},
    "storage": {"storage", "errors"},
    "index": {"index", "dicom", "errors"},
    "services": {"services", "index", "storage", "dicom"} | BASE,
    "dimse": {"dimse", "services", "dicom"} | BASE,
    "dicomweb": {"dicomweb", "services", "dicom"} | BASE,
    "web": {"web", "dicomweb", "services", "dicom"} | BASE,
    "errors": {"__init__"},
    "identity": set(),
    "settings": {"errors"},
}
WIRING = {"server", "cli", "commands", "wiring"}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
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


def test_every_layer_is_known() -> None:
    layers = {_layer(p) for p in SRC.rglob("*.py")}
    assert layers <= set(ALLOWED) | WIRING | {"__init__"}


#: The front doors: they reach the archive through its services only (issue 12).
ADAPTERS = {"dimse", "dicomweb", "web", "commands", "cli"}


def test_front_doors_use_services_only() -> None:
    """No adapter or CLI module imports the index or the storage, or reads a ``catalog`` or
    ``storage`` attribute (an AST walk, attribute access included)."""
    problems = []
    for path in SRC.rglob("*.py"):
        if _layer(path) not in ADAPTERS:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for target in _imports(path) & {"index", "storage"}:
            problems.append(f"{path.relative_to(SRC)} imports vesalius.{target}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("catalog", "storage"):
                problems.append(f"{path.relative_to(SRC)}:{node.lineno} reads .{node.attr}")
    assert problems == []
