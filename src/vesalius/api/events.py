"""Live updates: the archive's events as server-sent events (text/event-stream)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
