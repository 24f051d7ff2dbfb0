"""WADO-RS metadata of a study, series or instance (PS3.18 10.4.1.1.2 / 10.4.1.2).

Served from the DICOM JSON computed at ingest (``services/metadata.py``): one index query, no file
opened. BulkDataURIs point at this server's ``…/bulkdata/{tag path}`` resources.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from vesalius.dicom.metadata import with_root
from vesalius.dicomweb.media import parse_accept
from vesalius.dicomweb.requests import DICOM_JSON, root_url
from vesalius.dicomweb.retrieve import keys_from_path
from vesalius.errors import NotAcceptableError
from vesalius.services.archive import Archive
from vesalius.web.requests import who

_JSON_TYPES = (DICOM_JSON, "application/json", "application/*", "*/*")


def metadata(archive: Archive, request: Request) -> Response:
    """``GET …/metadata``: a JSON array of the instances' data sets, without pixel data."""
    if not any(
        r.media_type in _JSON_TYPES for r in parse_accept(request.headers.getlist("accept"))
    ):
        raise NotAcceptableError("metadata can be returned as application/dicom+json only")
    documents = archive.metadata.documents(keys_from_path(request), who(request))
    body = with_root("[" + ",".join(documents) + "]", root_url(request))
    return Response(body, media_type=DICOM_JSON)
