"""Jobs: list, progress, cancel, retry."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
