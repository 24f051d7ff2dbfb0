"""The DICOMweb URL space (PS3.18 10): resources under ``/dicom-web``, WADO-URI at ``/wado``.

Handlers are plain functions of (archive, request); they run in the server's thread pool,
since the services block on the database and the disk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from vesalius.dicomweb import (
    bulkdata,
    capabilities,
    frames,
    metadata,
    qido,
    rendered,
    retrieve,
    stow,
    wado_uri,
)
from vesalius.services.archive import Archive

Handler = Callable[[Archive, Request], Response]

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
FRAMES = INSTANCE + "/frames/{frames}"


def dicomweb_routes(archive: Archive, upload: stow.UploadLimits) -> list[BaseRoute]:
    """Every DICOMweb route, bound to ``archive``; STOW-RS within ``upload``."""

    def bind(handler: Handler) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            return handler(archive, request)

        endpoint.__name__ = handler.__name__
        return endpoint

    def bind_async(
        handler: Callable[[Archive, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(archive, request)

        endpoint.__name__ = handler.__name__
        return endpoint

    async def store(archive: Archive, request: Request) -> Response:
        return await stow.store(archive, request, upload)

    def get(path: str, handler: Handler) -> Route:
        return Route(path, bind(handler), methods=["GET"])

    routes: list[BaseRoute] = [
        Route("/", bind(capabilities.describe), methods=["GET", "OPTIONS"]),
        get("/studies", qido.search_studies),
        Route("/studies", bind_async(store), methods=["POST"]),
        get("/series", qido.search_series),
        get("/instances", qido.search_instances),
        get(STUDY, retrieve.retrieve),
        Route(STUDY, bind_async(store), methods=["POST"]),
        get(STUDY + "/metadata", metadata.metadata),
        get(STUDY + "/rendered", rendered.rendered),
        get(STUDY + "/thumbnail", rendered.thumbnail),
        get(STUDY + "/series", qido.search_series),
        get(STUDY + "/instances", qido.search_instances),
        get(SERIES, retrieve.retrieve),
        get(SERIES + "/metadata", metadata.metadata),
        get(SERIES + "/rendered", rendered.rendered),
        get(SERIES + "/thumbnail", rendered.thumbnail),
        get(SERIES + "/instances", qido.search_instances),
        get(INSTANCE, retrieve.retrieve),
        get(INSTANCE + "/metadata", metadata.metadata),
        get(INSTANCE + "/rendered", rendered.rendered),
        get(INSTANCE + "/thumbnail", rendered.thumbnail),
        get(INSTANCE + "/bulkdata/{path:path}", bulkdata.bulkdata),
        get(FRAMES, frames.frames),
        get(FRAMES + "/rendered", rendered.rendered),
        get(FRAMES + "/thumbnail", rendered.thumbnail),
    ]
    return [
        Mount("/dicom-web", routes=routes),
        Route("/wado", bind(wado_uri.wado), methods=["GET"]),
    ]
