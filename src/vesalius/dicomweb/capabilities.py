"""Retrieve Capabilities (PS3.18 8.9): what this DICOMweb service supports, machine-readable.

``OPTIONS /dicom-web/`` (or ``GET``) answers a WADL document (``application/vnd.sun.wadl+xml``,
the standard's default) listing every resource, method, query parameter and media type; with
``Accept: application/json`` the same description comes as JSON.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vesalius.dicomweb.media import parse_accept
from vesalius.dicomweb.requests import root_url
from vesalius.services.archive import Archive

WADL = "application/vnd.sun.wadl+xml"
_DICOM_MULTI = 'multipart/related; type="application/dicom"'
_QIDO_PARAMS = ["{attributeID}", "includefield", "fuzzymatching", "limit", "offset"]
_RENDER_PARAMS = ["window", "viewport", "quality", "annotation"]
_RENDERED = ["image/jpeg", "image/png"]
_FRAMES = [
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    'multipart/related; type="application/octet-stream"',
    'multipart/related; type="image/jls"',
    'multipart/related; type="image/jp2"',
    'multipart/related; type="image/jpeg"',
    "application/octet-stream",
]
_SEARCH = ["application/dicom+json", 'multipart/related; type="application/dicom+xml"']

#: (path, method, media types produced, query parameters), PS3.18 Table 8.9.1-x in spirit.
RESOURCES: list[tuple[str, str, list[str], list[str]]] = [
    ("studies", "GET", _SEARCH, _QIDO_PARAMS),
    ("studies", "POST", ["application/dicom+json"], []),
    ("series", "GET", _SEARCH, _QIDO_PARAMS),
    ("instances", "GET", _SEARCH, _QIDO_PARAMS),
    ("studies/{study}", "GET", [_DICOM_MULTI], []),
    ("studies/{study}", "POST", ["application/dicom+json"], []),
    ("studies/{study}/metadata", "GET", ["application/dicom+json"], []),
    ("studies/{study}/rendered", "GET", _RENDERED, _RENDER_PARAMS),
    ("studies/{study}/thumbnail", "GET", _RENDERED, ["viewport"]),
    ("studies/{study}/series", "GET", _SEARCH, _QIDO_PARAMS),
    ("studies/{study}/instances", "GET", _SEARCH, _QIDO_PARAMS),
    ("studies/{study}/series/{series}", "GET", [_DICOM_MULTI], []),
    ("studies/{study}/series/{series}/metadata", "GET", ["application/dicom+json"], []),
    ("studies/{study}/series/{series}/rendered", "GET", _RENDERED, _RENDER_PARAMS),
    ("studies/{study}/series/{series}/thumbnail", "GET", _RENDERED, ["viewport"]),
    ("studies/{study}/series/{series}/instances", "GET", _SEARCH, _QIDO_PARAMS),
    (
        "studies/{study}/series/{series}/instances/{instance}",
        "GET",
        [_DICOM_MULTI, "application/dicom"],
        [],
    ),
    (
        "studies/{study}/series/{series}/instances/{instance}/metadata",
        "GET",
        ["application/dicom+json"],
        [],
    ),
    (
        "studies/{study}/series/{series}/instances/{instance}/rendered",
        "GET",
        _RENDERED,
        _RENDER_PARAMS,
    ),
    (
        "studies/{study}/series/{series}/instances/{instance}/thumbnail",
        "GET",
        _RENDERED,
        ["viewport"],
    ),
    ("studies/{study}/series/{series}/instances/{instance}/frames/{frames}", "GET", _FRAMES, []),
    (
        "studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        "GET",
        _RENDERED,
        _RENDER_PARAMS,
    ),
    (
        "studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
        "GET",
        _RENDERED,
        ["viewport"],
    ),
    (
        "studies/{study}/series/{series}/instances/{instance}/bulkdata/{path}",
        "GET",
        ['multipart/related; type="application/octet-stream"', "application/octet-stream"],
        [],
    ),
]


def _wadl(root: str) -> bytes:
    app = ET.Element("application", xmlns="http://wadl.dev.java.net/2009/02")
    resources = ET.SubElement(app, "resources", base=root + "/")
    for path, method, produced, params in RESOURCES:
        resource = ET.SubElement(resources, "resource", path=path)
        node = ET.SubElement(resource, "method", name=method)
        if params:
            request = ET.SubElement(node, "request")
            for name in params:
                ET.SubElement(request, "param", name=name, style="query")
        response = ET.SubElement(node, "response")
        for media in produced:
            ET.SubElement(response, "representation", mediaType=media)
    return bytes(ET.tostring(app, encoding="utf-8", xml_declaration=True))


def describe(archive: Archive, request: Request) -> Response:
    """``OPTIONS|GET /dicom-web/``: the service's capabilities."""
    root = root_url(request)
    for accepted in parse_accept(request.headers.getlist("accept")):
        if accepted.media_type in ("application/json", "application/vnd.sun.wadl+json"):
            content: dict[str, Any] = {
                "base": root + "/",
                "resources": [
                    {"path": p, "method": m, "produces": media, "parameters": params}
                    for p, m, media, params in RESOURCES
                ],
            }
            return JSONResponse(content)
        if accepted.media_type in (WADL, "application/xml", "text/xml", "*/*"):
            break
    allow = "GET, POST, OPTIONS"
    return Response(_wadl(root), media_type=WADL, headers={"Allow": allow})
