"""Statistics: counts, disk used and free, ingest per hour and day, modality mix, top senders."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
