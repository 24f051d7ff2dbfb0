"""C-RETRIEVE SCP: filled in by the query/retrieve work."""

from __future__ import annotations

from typing import Any

HANDLERS: list[tuple[Any, Any]] = []
