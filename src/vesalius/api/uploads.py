"""Uploads from the UI and scripts: DICOM files and zips (or a folder's files, one by one)
into the archive through the ingest and import services, with what was refused and why."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
