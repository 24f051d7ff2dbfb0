"""Patients, studies, series and instances: list, search, get, all tags as DICOM JSON,
statistics, delete."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
