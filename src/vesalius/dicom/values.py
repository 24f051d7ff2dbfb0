"""Normalising DICOM values for the index: dates, times, person names, numbers (PS3.5 6.2)."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """A single text value as str, without padding; multi-valued becomes backslash-joined."""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(text(v) for v in value)
    return str(value).strip("\0 ")


def date(value: Any) -> str:
    """DA as ``YYYYMMDD``; the ACR-NEMA form ``YYYY.MM.DD`` is accepted. Anything else: ''."""
    raw = text(value).replace(".", "").replace("-", "")
    return raw if len(raw) == 8 and raw.isdigit() else ""


def time(value: Any) -> str:
    """TM padded to at least ``HHMMSS`` (fraction kept), so strings order like times.

    ``1030`` becomes ``103000``; the ACR-NEMA form ``10:30:00`` is accepted. Anything else: ''.
    """
    raw = text(value).replace(":", "")
    main, _, fraction = raw.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return ""
    main = main.ljust(6, "0")
    return f"{main}.{fraction}" if fraction else main


def integer(value: Any) -> int | None:
    """IS/US as int, or None when absent or malformed."""
    try:
        if value is None or value == "":
            return None
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def person_name(value: Any) -> str:
    """PN as its full Unicode string, component groups joined by ``=`` (PS3.5 6.2.1)."""
    if value is None:
        return ""
    return text(value).rstrip("=")


def fold(value: str) -> str:
    """The case-folded form used for case-insensitive person-name matching."""
    return value.upper()
