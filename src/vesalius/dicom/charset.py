"""Specific Character Set (0008,0005) of query responses (PS3.5 6.1, PS3.4 C.2.2.2, C.4.1.1.3.2).

A C-FIND identifier is decoded with the character set it names and matched in Unicode. Each
response is encoded in the request's character set when every value it returns can be written
in it; otherwise the response switches to UTF-8 (``ISO_IR 192``), which holds any value. The
default repertoire (no Specific Character Set) is ASCII only: pydicom would write Latin-1 there,
which a strict peer would misread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from pydicom import charset as _charset

UTF8 = "ISO_IR 192"
#: pydicom's Python codec for the default repertoire (``ISO_IR 6``, ``ISO 2022 IR 6``).
_DEFAULT_CODEC = _charset.default_encoding


def terms(value: Any) -> list[str]:
    """The defined terms of a Specific Character Set value (str, list or MultiValue)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    found = [str(v).strip() for v in items]
    return [] if not any(found) else found


def is_known(charset: Sequence[str]) -> bool:
    """Whether pydicom can encode and decode every term of ``charset``."""
    return all(term in _charset.python_encoding for term in charset)


@lru_cache(maxsize=4096)
def _char_fits(char: str, codec: str) -> bool:
    if codec == _DEFAULT_CODEC:
        return char.isascii()
    encoder = _charset.custom_encoders.get(codec)
    try:
        if encoder is not None:
            encoder(char, errors="strict")
        else:
            char.encode(codec)
    except (UnicodeError, LookupError, ValueError):
        return False
    return True


def can_encode(text: str, charset: Sequence[str]) -> bool:
    """Whether ``text`` can be written in ``charset`` (``[]``: the default repertoire).

    With code extensions (several terms, PS3.5 6.1.2.5) each character may come from any of
    the repertoires; pydicom switches between them with escape sequences when writing.
    """
    if text.isascii():
        return True
    if not is_known(charset):
        return False
    codecs = _charset.convert_encodings(list(charset) or [""])
    return all(any(_char_fits(char, codec) for codec in codecs) for char in text)


def response_charset(requested: Sequence[str], texts: Iterable[str]) -> list[str]:
    """The Specific Character Set of a response holding ``texts``: the request's when it can
    encode them all, else ``ISO_IR 192``. ``[]`` means the default repertoire (omit it); a
    request in a character set pydicom does not know is answered as if it named none."""
    values = [t for t in texts if not t.isascii()]
    if not is_known(requested):
        requested = []  # PS3.4 C.2.2.2: answer an unknown set in the default repertoire
    if all(can_encode(t, requested) for t in values):
        return list(requested)
    return [UTF8]
