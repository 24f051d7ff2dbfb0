"""A series' instances: list, get, and all tags of one as DICOM JSON (PS3.18 F.2)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
