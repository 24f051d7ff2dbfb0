"""What DICOMweb handlers add to the host's request helpers (``web/requests.py``): the root
of the DICOMweb URL space and DICOM JSON responses (PS3.18 F.2)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from vesalius.web.requests import base_url, json_response

DICOM_JSON = "application/dicom+json"
ROOT = "/dicom-web"


def root_url(request: Request) -> str:
    """This server's DICOMweb root without a trailing slash (``http.public_url`` when set)."""
    return base_url(request) + ROOT


def dicom_json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A DICOM JSON response (PS3.18 F.2)."""
    return json_response(content, status, headers, media_type=DICOM_JSON)
