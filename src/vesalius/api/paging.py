"""Cursor pagination for every list of the API: a page of ``items``, the ``total`` that match,
and ``next``: an opaque cursor (base64url JSON of the sort key of the last item and its id),
given back as ``?cursor=`` for the page after. Keyset paging stays fast at any depth, unlike
an offset, and does not skip or repeat items that arrive while a client pages."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from vesalius.errors import InvalidDataError

T = TypeVar("T")

#: Items per page unless ``limit`` says otherwise, and the most a client may ask for.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int | None = Field(
        default=None, description="How many items match in all (null: not counted)."
    )
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as ?cursor=); null: last page."
    )


def encode_cursor(position: dict[str, Any]) -> str:
    """The opaque cursor for ``position`` (JSON-serialisable values)."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """The position a cursor names; :class:`InvalidDataError` (400) for one we did not make."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidDataError("cursor: not a cursor this server gave") from None
    if not isinstance(position, dict):
        raise InvalidDataError("cursor: not a cursor this server gave")
    return position
