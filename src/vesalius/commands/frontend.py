"""``vesalius ui install``: the web UI's front-end packages, from the npm registry.

The UI (``vesalius.ui``) is our own HTML, CSS and ES modules, served as they are (no Node.js
build step). What it uses from others comes from npm at install time, like the OHIF viewer:
each package of :data:`PACKAGES` at a pinned version, its tarball checked against the
registry's SHA-512 (``commands/viewer.py``), and only the files it names unpacked into
``<ui.assets_dir>/<name>/`` (written by us, mode 0644; links, absolute paths and ``..`` are
refused). ``ui/app.py`` serves them at ``/ui/vendor/<name>/<file>``.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from vesalius.commands import config_option, settings_from
from vesalius.commands.viewer import download, resolve
from vesalius.errors import InvalidDataError, VesaliusError


@dataclass(frozen=True)
class FrontendPackage:
    """One npm package: the name the UI serves it under, the version, and its files."""

    name: str
    package: str
    version: str
    #: Paths inside the tarball's ``package/`` folder, served flat under their base names.
    files: tuple[str, ...]


PACKAGES = (
    # Classless, accessible CSS for semantic HTML; its light and dark themes follow the OS.
    FrontendPackage("pico", "@picocss/pico", "2.1.1", ("css/pico.min.css",)),
    # Time-series plots (statistics page): small and fast, canvas based.
    FrontendPackage("uplot", "uplot", "1.6.32", ("dist/uPlot.iife.min.js", "dist/uPlot.min.css")),
    # The interactive API reference at /api/docs, offline.
    FrontendPackage(
        "swagger-ui",
        "swagger-ui-dist",
        "5.35.0",
        ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"),
    ),
    # Accessibility checks; the browser tests inject it (never loaded by the UI's pages).
    FrontendPackage("axe-core", "axe-core", "4.14.1", ("axe.min.js",)),
)
MARKER = ".vesalius-install.json"


def package_dir(base: Path, package: FrontendPackage) -> Path:
    return base / package.name


def is_installed(base: Path, package: FrontendPackage) -> bool:
    """Whether ``package`` at its version is unpacked in ``base``."""
    try:
        marker = json.loads((package_dir(base, package) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("version") == package.version)


def _extract(tarball: Path, package: FrontendPackage, target: Path) -> None:
    wanted = {f"package/{name}": Path(name).name for name in package.files}
    found: set[str] = set()
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name not in wanted:
                continue
            if not member.isfile():
                raise InvalidDataError(f"{package.package}: {name} is not a regular file")
            source = archive.extractfile(member)
            if source is None:
                raise InvalidDataError(f"{package.package}: unreadable {name}")
            destination = target / wanted[name]
            with source, open(destination, "xb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.chmod(destination, 0o644)
            found.add(name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise InvalidDataError(f"{package.package}@{package.version} lacks {', '.join(missing)}")


def install(registry: str, package: FrontendPackage, base: Path, progress: bool = True) -> Path:
    """Download, check and unpack ``package`` into ``base/<name>`` (replaced atomically)."""
    release = resolve(registry, package.version, package.package)
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package.name}-", dir=base))
    final = package_dir(base, package)
    try:
        tarball = staging / "package.tgz"
        with open(tarball, "wb") as out:
            download(release, out, progress, package.package)
        unpacked = staging / "files"
        unpacked.mkdir()
        try:
            _extract(tarball, package, unpacked)
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidDataError(f"cannot unpack {package.package}: {exc}") from None
        (unpacked / MARKER).write_text(
            json.dumps({"package": package.package, "version": release.version}, indent=2)
        )
        if final.exists():
            os.rename(final, staging / "old")
        os.rename(unpacked, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


@click.group()
def ui() -> None:
    """The web UI that `vesalius serve` serves at /."""


@ui.command("install")
@config_option
@click.option("--force", is_flag=True, help="Download and replace installed packages.")
def install_command(config: Path | None, force: bool) -> None:
    """Download the UI's front-end packages from the npm registry and check their integrity."""
    from vesalius.wiring import frontend_dir

    settings = settings_from(config)
    base = frontend_dir(settings)
    for package in PACKAGES:
        if is_installed(base, package) and not force:
            continue
        try:
            install(settings["viewer.npm_registry"], package, base)
        except VesaliusError as exc:
            raise click.ClickException(exc.message) from exc
        except OSError as exc:
            raise click.ClickException(f"cannot install into {base}: {exc}") from exc
    click.echo(f"UI packages installed in {base}")
