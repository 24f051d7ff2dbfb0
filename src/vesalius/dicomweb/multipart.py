"""Writing ``multipart/related`` responses (RFC 2387; PS3.18 8.7.1.2), streamed part by part."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One body part: its Content-Type, optional Content-Location, and its bytes (chunks)."""

    content_type: str
    chunks: Iterable[bytes]
    location: str = ""


def new_boundary() -> str:
    return "vesalius-" + secrets.token_hex(16)


def content_type(part_type: str, boundary: str) -> str:
    """The response Content-Type: ``multipart/related; type="…"; boundary=…``."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def stream(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body: each part framed by the boundary, then the closing delimiter."""
    delimiter = f"--{boundary}\r\n".encode()
    for part in parts:
        head = f"Content-Type: {part.content_type}\r\n"
        if part.location:
            head += f"Content-Location: {part.location}\r\n"
        yield delimiter + head.encode("latin-1") + b"\r\n"
        yield from part.chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
