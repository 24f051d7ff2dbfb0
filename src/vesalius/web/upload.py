"""Reading a request body as a stream (STOW-RS, the REST API's uploads): Content-Encoding, then
``multipart/related`` or ``multipart/form-data``.

The body is never held whole: :func:`decoded_body` undoes any ``Content-Encoding`` (RFC 9110
8.4: gzip, deflate) in pieces of at most :data:`PIECE` bytes and stops with
:class:`~vesalius.errors.TooLargeError` once the decoded total passes the limit, or passes
``max_ratio`` times the bytes received (after :data:`FREE_INFLATION`), before handing that piece
on: a decompression bomb is refused having written no more than that ratio allows.
:class:`MultipartReader` splits the decoded stream into parts (RFC 2046 5.1.1, RFC 2387; PS3.18
8.6.1.2) and hands each part's body on as it arrives, holding back only the few bytes that could
start a delimiter. It is a hand-written scanner rather than python-multipart: it is small, has
no callbacks to bridge into async code, and reports a missing close delimiter (a truncated body)
as an error instead of ignoring it.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, field

import anyio
from starlette.requests import ClientDisconnect

from vesalius.errors import InvalidDataError, TooLargeError, UnsupportedError

#: Largest piece handed on at once (decoded bytes); buffers stay within about this much.
PIECE = 1 << 20
#: Decoded bytes a coded body may always reach; past them ``max_ratio`` applies.
FREE_INFLATION = 1 << 20
#: Longest block of part header fields accepted.
MAX_HEADER_BYTES = 16 * 1024
#: Longest boundary accepted (RFC 2046 allows 70; some clients send longer ones).
MAX_BOUNDARY = 200
_PADDING = b" \t"
#: Request bytes still read (and dropped) after an error part way through a body, so the
#: client sees the answer rather than a reset connection, for at most DRAIN_SECONDS; past
#: either the connection is simply closed.
DRAIN = 16 << 20
DRAIN_SECONDS = 2.0


class TrackedBody:
    """The raw request body, noting whether reading it began and whether it ended (a response
    sent before its end closes the connection)."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self.started = False
        self.ended = False

    def __aiter__(self) -> TrackedBody:
        return self

    async def __anext__(self) -> bytes:
        self.started = True
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self.ended = True
            raise


async def drain(raw: AsyncIterable[bytes]) -> None:
    """Read and drop what the client still sends: :data:`DRAIN` bytes, for
    :data:`DRAIN_SECONDS` at most."""
    left = DRAIN
    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            async for chunk in raw:
                left -= len(chunk)
                if left < 0:
                    return
        except (ClientDisconnect, OSError, RuntimeError):
            return


class _Decoder:
    """Undo one content coding incrementally, each output piece at most :data:`PIECE` bytes."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._z: zlib._Decompress | None = None
        self._head = b""  # deflate: the first bytes, until zlib or raw DEFLATE can be told apart
        self._done = False

    def _start(self, data: bytes) -> tuple[bytes, bool]:
        """Create the decompressor once enough of the stream is seen; False if not yet."""
        if self.coding == "gzip":
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            return data, True
        data = self._head + data
        if len(data) < 2:
            self._head = data
            return b"", False
        self._head = b""
        # RFC 9110 8.4.1.2: "deflate" is the zlib format; some clients send raw DEFLATE.
        is_zlib = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
        self._z = zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)
        return data, True

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._z is None:
            data, started = self._start(data)
            if not started:
                return
        try:
            while True:
                assert self._z is not None
                if self._done:
                    if not data:
                        return
                    if self.coding != "gzip":
                        raise InvalidDataError(f"data after the end of the {self.coding} stream")
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a further gzip member
                    self._done = False
                out = self._z.decompress(data, PIECE)
                if out:
                    yield out
                if self._z.eof:
                    self._done = True
                    data = self._z.unused_data
                    continue
                data = self._z.unconsumed_tail
                if not data and len(out) < PIECE:
                    return
        except zlib.error as exc:
            raise InvalidDataError(f"cannot decode the {self.coding} request body: {exc}") from exc

    def finish(self) -> None:
        if not self._done:
            raise InvalidDataError(f"the {self.coding} request body ends before its end")


def decoders_for(content_encoding: str) -> list[_Decoder]:
    """Decoders for a Content-Encoding header, in the order to apply them (RFC 9110 8.4).

    ``identity`` or no header needs none; gzip (``x-gzip``) and deflate are understood; any
    other coding is :class:`UnsupportedError` (415).
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    decoders: list[_Decoder] = []
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            decoders.append(_Decoder("gzip"))
        elif coding == "deflate":
            decoders.append(_Decoder("deflate"))
        else:
            raise UnsupportedError(f"Content-Encoding {coding!r} is not supported (gzip, deflate)")
    return decoders


def _decode(decoders: list[_Decoder], data: bytes) -> Iterator[bytes]:
    if not decoders:
        for start in range(0, len(data), PIECE):
            yield data[start : start + PIECE]
        return
    first, rest = decoders[0], decoders[1:]
    for piece in first.feed(data):
        yield from _decode(rest, piece)


async def decoded_body(
    raw: AsyncIterable[bytes], content_encoding: str, limit: int, max_ratio: int = 0
) -> AsyncIterator[bytes]:
    """The request body with its content codings undone, in pieces of at most :data:`PIECE`.

    Raises :class:`TooLargeError` as soon as more than ``limit`` bytes arrive or decode from
    them, or (``max_ratio`` > 0) once more than :data:`FREE_INFLATION` bytes decode to over
    ``max_ratio`` times the bytes received; :class:`InvalidDataError` for a coded body that is
    corrupt or cut short. Each check runs before the piece that fails it is yielded.
    """
    decoders = decoders_for(content_encoding)
    total = received = 0
    async for chunk in raw:
        received += len(chunk)
        if received > limit:
            raise TooLargeError(f"request body is over the {_mib(limit)} limit")
        for piece in _decode(decoders, chunk):
            total += len(piece)
            if total > limit:
                raise TooLargeError(f"request body is over the {_mib(limit)} limit")
            if max_ratio and total > FREE_INFLATION and total > max_ratio * received:
                raise TooLargeError(
                    f"the request body decodes to more than {max_ratio} times its coded size "
                    "(http.max_inflation_ratio): refused as a decompression bomb"
                )
            yield piece
    for decoder in decoders:  # each yields all it can as input arrives: nothing is left
        decoder.finish()


def _mib(limit: int) -> str:
    return f"{limit / (1 << 20):g} MiB"


# ----------------------------------------------------------------------------- multipart


@dataclass(frozen=True)
class PartStart:
    """A part begins; ``headers`` has lower-cased field names (RFC 2045/2046)."""

    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartData:
    """Some bytes of the current part's body (at most :data:`PIECE` plus a delimiter)."""

    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part's body is complete (its closing delimiter was seen)."""


Event = PartStart | PartData | PartEnd

_PREAMBLE, _DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)


def check_boundary(boundary: str | None) -> bytes:
    """The ``boundary`` parameter as bytes; :class:`InvalidDataError` when missing or unusable."""
    if not boundary:
        raise InvalidDataError("multipart/related request without a boundary parameter")
    if len(boundary) > MAX_BOUNDARY or not boundary.isascii() or not boundary.isprintable():
        raise InvalidDataError("multipart boundary is too long or not printable ASCII")
    return boundary.encode("ascii")


def parse_part_headers(block: bytes) -> dict[str, str]:
    """Header fields of one body part (RFC 5322 syntax, folded lines joined)."""
    headers: dict[str, str] = {}
    name = ""
    for line in block.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and name:
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise InvalidDataError("malformed header field in a multipart body part")
        headers[name] = value.strip()
    return headers


class MultipartReader:
    """Split a ``multipart`` body, fed in pieces, into :data:`Event` s (RFC 2046 5.1.1).

    The preamble before the first delimiter and the epilogue after the close delimiter are
    ignored. :meth:`close` raises :class:`InvalidDataError` unless the close delimiter was seen,
    so a truncated body is never mistaken for a complete one.
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        # A CRLF in front lets a delimiter at the very start match like every other one.
        self._buf = bytearray(b"\r\n")
        self._state = _PREAMBLE
        self.parts = 0

    @property
    def complete(self) -> bool:
        return self._state == _EPILOGUE

    def feed(self, data: bytes) -> Iterator[Event]:
        """Consume ``data``; yield the events it completes."""
        if self._state == _EPILOGUE:
            return
        self._buf += data
        while True:
            if self._state in (_PREAMBLE, _BODY):
                found = self._buf.find(self._delimiter)
                if found < 0:
                    keep = len(self._delimiter) - 1
                    if len(self._buf) > keep:
                        if self._state == _BODY:
                            yield PartData(bytes(self._buf[:-keep]))
                        del self._buf[:-keep]
                    return
                if self._state == _BODY:
                    if found:
                        yield PartData(bytes(self._buf[:found]))
                    yield PartEnd()
                del self._buf[: found + len(self._delimiter)]
                self._state = _DELIMITER
            elif self._state == _DELIMITER:
                if not self._delimiter_line():
                    return
            elif self._state == _HEADERS:
                headers = self._headers()
                if headers is None:
                    return
                self.parts += 1
                self._state = _BODY
                yield PartStart(headers)
            else:  # epilogue: ignored
                self._buf.clear()
                return

    def _delimiter_line(self) -> bool:
        """After a delimiter: ``--`` (close) or transport padding and CRLF; False: need more."""
        buf = self._buf
        if len(buf) < 2:
            return False
        if buf.startswith(b"--"):
            self._state = _EPILOGUE
            return True
        i = 0
        while i < len(buf) and buf[i] in _PADDING:
            i += 1
        if i > 1024:
            raise InvalidDataError("malformed multipart delimiter line")
        if len(buf) - i < 2:
            return False
        if buf[i : i + 2] != b"\r\n":
            raise InvalidDataError("malformed multipart delimiter line")
        del buf[: i + 2]
        self._state = _HEADERS
        return True

    def _headers(self) -> dict[str, str] | None:
        buf = self._buf
        if buf.startswith(b"\r\n"):
            del buf[:2]
            return {}
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise InvalidDataError("multipart body part headers are too long")
            return None
        if end > MAX_HEADER_BYTES:
            raise InvalidDataError("multipart body part headers are too long")
        headers = parse_part_headers(bytes(buf[:end]))
        del buf[: end + 4]
        return headers

    def close(self) -> None:
        """The body has ended: raise :class:`InvalidDataError` unless it was complete."""
        if self._state == _PREAMBLE:
            raise InvalidDataError("multipart body has no delimiter for its boundary")
        if self._state != _EPILOGUE:
            raise InvalidDataError("multipart body ends without its close delimiter (truncated)")
        if not self.parts:
            raise InvalidDataError("multipart body has no parts")
