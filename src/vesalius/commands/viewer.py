"""``vesalius viewer``: install the OHIF viewer from the npm registry, and say where it is.

``@ohif/app`` on npm ships OHIF's production build in ``package/dist/``. ``install`` reads the
version's registry metadata (tarball URL and ``sha512`` integrity), downloads the tarball,
checks its digest, and unpacks only ``package/dist/`` (regular files and folders; an absolute
path, a ``..`` or a link is refused) into ``<viewer.dir>/<version>``: unpacked beside it under a
temporary name, then renamed, so a folder of that name is always a whole build. Installing an
installed version again does nothing (``--force`` replaces it). ``vesalius serve`` serves it
(see ``vesalius.viewer.app``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import click

from vesalius.commands import config_option, settings_from
from vesalius.errors import InvalidDataError, NotFoundError, PeerError, VesaliusError

PACKAGE = "@ohif/app"
DIST = "package/dist/"
CHUNK = 1 << 20
TIMEOUT = 60.0
#: npm versions and dist-tags: also the name of a folder, so nothing else gets through.
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


@dataclass(frozen=True)
class Release:
    """One published version: where its tarball is and the SHA-512 digest it must have."""

    version: str
    tarball: str
    sha512: bytes


def _get(url: str, accept: str) -> Any:
    """Open ``url`` (http or https only) or raise :class:`PeerError`."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PeerError(f"refusing to download from {url!r}: not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "vesalius"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFoundError(f"{url}: not found (HTTP 404)") from None
        raise PeerError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PeerError(f"cannot reach {url}: {reason}") from None


def _sha512(integrity: str) -> bytes:
    """The SHA-512 digest from an npm Subresource Integrity string (``sha512-<base64>``)."""
    for entry in integrity.split():
        algorithm, _, encoded = entry.partition("-")
        if algorithm == "sha512":
            try:
                digest = base64.b64decode(encoded.split("?")[0], validate=True)
            except ValueError:
                break
            if len(digest) == 64:
                return digest
    raise InvalidDataError(f"registry metadata has no usable sha512 integrity: {integrity!r}")


def resolve(registry: str, version: str, package: str = PACKAGE) -> Release:
    """Look ``version`` (or a dist-tag such as ``latest``) up in the registry's metadata."""
    url = f"{registry.rstrip('/')}/{package.replace('/', '%2f')}"  # as npm escapes scopes
    with _get(url, "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8") as r:
        try:
            document = json.load(r)
        except ValueError:
            raise PeerError(f"{url}: not JSON") from None
    versions = document.get("versions") or {}
    tags = document.get("dist-tags") or {}
    chosen = version if version in versions else tags.get(version)
    if chosen not in versions:
        latest = tags.get("latest", "?")
        raise NotFoundError(
            f"{package} has no version {version!r} at {registry} (latest: {latest})"
        )
    if not _VERSION.match(str(chosen)):
        raise InvalidDataError(f"registry gave an unusable version name {chosen!r}")
    dist = versions[chosen].get("dist") or {}
    tarball = dist.get("tarball")
    if not isinstance(tarball, str):
        raise InvalidDataError(f"registry metadata of {package}@{chosen} names no tarball")
    return Release(str(chosen), tarball, _sha512(str(dist.get("integrity", ""))))


def download(
    release: Release, into: IO[bytes], progress: bool = True, package: str = PACKAGE
) -> None:
    """Stream the tarball into ``into``; raise :class:`InvalidDataError` unless its SHA-512 is
    the one the registry published."""
    from tqdm import tqdm

    digest = hashlib.sha512()
    with _get(release.tarball, "application/octet-stream") as response:
        length = response.headers.get("Content-Length")
        with tqdm(
            total=int(length) if length and length.isdigit() else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"{package} {release.version}",
            file=sys.stderr,
            mininterval=0.5,
            disable=not progress,
        ) as bar:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                into.write(chunk)
                bar.update(len(chunk))
    if not hmac.compare_digest(digest.digest(), release.sha512):
        raise InvalidDataError(
            f"{release.tarball}: SHA-512 integrity check failed (expected sha512-"
            f"{base64.b64encode(release.sha512).decode()}, got sha512-"
            f"{base64.b64encode(digest.digest()).decode()}); nothing was installed"
        )


def _member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """Where a member of ``package/dist/`` goes, relative to the install folder; ``None`` for
    members outside it. Absolute paths, ``..`` and anything but files and folders are refused."""
    name = member.name
    if name.startswith("./"):
        name = name[2:]
    if not name.startswith(DIST):
        return None
    relative = PurePosixPath(name[len(DIST) :])
    if name.startswith("/") or "\\" in name or "\x00" in name or ".." in relative.parts:
        raise InvalidDataError(f"unsafe path in the tarball: {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise InvalidDataError(f"the tarball holds a link or device: {member.name!r}")
    return relative


def extract_dist(tarball: Path, target: Path) -> int:
    """Unpack ``package/dist/`` of ``tarball`` into the empty folder ``target``; return the
    number of files. Files are written by us (mode 0644), never by ``tarfile.extract``."""
    count = 0
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                relative = _member_path(member)
                if relative is None or not relative.parts:
                    continue
                destination = target.joinpath(*relative.parts)
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                source = archive.extractfile(member)
                if source is None:
                    raise InvalidDataError(f"unreadable member {member.name!r}")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with source, open(destination, "xb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                os.chmod(destination, 0o644)
                count += 1
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidDataError(f"cannot unpack {tarball.name}: {exc}") from None
    if not (target / "index.html").is_file():
        raise InvalidDataError("the tarball has no package/dist/index.html: not an OHIF build")
    return count


#: Files worth compressing once at install (served with Content-Encoding: gzip when accepted).
COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".html", ".json", ".map", ".svg", ".wasm", ".txt"})


def precompress(folder: Path, minimum: int = 1024) -> int:
    """Write a ``.gz`` beside each compressible file over ``minimum`` bytes (RFC 1952), so the
    server never spends CPU compressing the viewer's 17 MB bundle per request; return how many."""
    written = 0
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in COMPRESSIBLE or not path.is_file() or path.is_symlink():
            continue
        if path.stat().st_size < minimum:
            continue
        target = path.with_name(path.name + ".gz")
        with (
            open(path, "rb") as source,
            open(target, "xb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as out,
        ):
            shutil.copyfileobj(source, out, CHUNK)
        os.chmod(target, 0o644)
        written += 1
    return written


def install(release: Release, base: Path, force: bool = False, progress: bool = True) -> Path:
    """Download, check and unpack ``release`` into ``base/<version>`` atomically."""
    final = base / release.version
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release.version}-", dir=base))
    try:
        tarball = staging / "package.tgz"
        with open(tarball, "wb") as out:
            download(release, out, progress)
        unpacked = staging / "dist"
        unpacked.mkdir()
        count = extract_dist(tarball, unpacked)
        compressed = precompress(unpacked)
        (unpacked / ".vesalius-install.json").write_text(
            json.dumps(
                {
                    "package": PACKAGE,
                    "version": release.version,
                    "tarball": release.tarball,
                    "files": count,
                    "precompressed": compressed,
                },
                indent=2,
            )
        )
        if final.exists():
            if not force:
                return final  # installed meanwhile by someone else
            retired = Path(tempfile.mkdtemp(prefix=f".{release.version}-old-", dir=base))
            os.rename(final, retired / "dist")
            os.rename(unpacked, final)
        else:
            os.rename(unpacked, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for leftover in base.glob(f".{release.version}-old-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    return final


@click.group()
def viewer() -> None:
    """The OHIF viewer that `vesalius serve` serves at / (e.g. /viewer?StudyInstanceUIDs=…)."""


@viewer.command("install")
@config_option
@click.option("--version", "version", help="@ohif/app version or dist-tag [viewer.version].")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of installed versions [viewer.dir].",
)
@click.option("--force", is_flag=True, help="Download and replace an installed version.")
def install_command(
    config: Path | None, version: str | None, folder: Path | None, force: bool
) -> None:
    """Download OHIF from the npm registry, check its integrity, and install it."""
    from vesalius.viewer.app import is_installed
    from vesalius.wiring import viewer_base_dir

    settings = settings_from(
        config, **{"viewer.version": version, "viewer.dir": str(folder) if folder else None}
    )
    wanted = str(settings["viewer.version"])
    base = viewer_base_dir(settings)
    if _VERSION.match(wanted) and is_installed(base / wanted) and not force:
        click.echo(f"OHIF {wanted} is already installed in {base / wanted}")
        return
    try:
        release = resolve(settings["viewer.npm_registry"], wanted)
        if is_installed(base / release.version) and not force:
            click.echo(f"OHIF {release.version} is already installed in {base / release.version}")
            return
        final = install(release, base, force=force)
    except VesaliusError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot install into {base}: {exc}") from exc
    click.echo(f"OHIF {release.version} installed in {final}")
    if release.version != str(settings["viewer.version"]):
        click.echo(f'Set viewer.version = "{release.version}" to serve this version.')


@viewer.command("path")
@config_option
def path_command(config: Path | None) -> None:
    """Print the folder of the OHIF build `vesalius serve` uses (exit 1 if not installed)."""
    from vesalius.viewer.app import is_installed
    from vesalius.wiring import viewer_dir

    folder = viewer_dir(settings_from(config))
    click.echo(str(folder))
    if not is_installed(folder):
        click.echo("not installed: run `vesalius viewer install`", err=True)
        raise SystemExit(1)
