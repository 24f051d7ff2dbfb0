"""What every endpoint takes from its request: the archive (the services), who asks (the
identity middleware's, ``web/identity.py``), and the API's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import Request

from vesalius.identity import Identity
from vesalius.services.archive import Archive
from vesalius.web.requests import who


@dataclass(frozen=True)
class ApiConfig:
    """What the wiring hands the API besides the archive."""

    #: The effective settings, secrets replaced by ``"***"`` (``GET /api/v1/settings``).
    settings: dict[str, Any] = field(default_factory=dict)
    #: Front-end packages (``ui.assets_dir``): the reference page's files.
    assets_dir: Path | None = None
    #: This server's version.
    version: str = ""


def get_archive(request: Request) -> Archive:
    archive = request.app.state.archive
    assert isinstance(archive, Archive)
    return archive


def get_config(request: Request) -> ApiConfig:
    config = request.app.state.config
    assert isinstance(config, ApiConfig)
    return config


def get_identity(request: Request) -> Identity:
    return who(request)


ArchiveDep = Annotated[Archive, Depends(get_archive)]
ConfigDep = Annotated[ApiConfig, Depends(get_config)]
Who = Annotated[Identity, Depends(get_identity)]
