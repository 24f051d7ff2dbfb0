"""A study or a selection as a streamed ZIP, or as DICOM media (a DICOMDIR file set,
PS3.10/PS3.11)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
