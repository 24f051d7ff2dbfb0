"""Names of folders and files inside a download, made from index values (patient names, study
and series descriptions: peer input). A name is one path component that is safe on every
common file system: no separators (``/`` ``\\``), no control characters, none of ``<>:"|?*``,
no run of dots, no leading or trailing dots or spaces (so never ``.`` or ``..``), not a
reserved Windows device name, at most :data:`MAX_LENGTH` characters; unique among its
siblings, ignoring case."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

MAX_LENGTH = 64
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_SPACES = re.compile(r"\s+")
_DOTS = re.compile(r"\.{2,}")
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{n}" for n in range(10)} | {f"LPT{n}" for n in range(10)}
)


def folder_name(label: str, fallback: str) -> str:
    """``label`` made a safe path component (``fallback`` where nothing is left of it)."""
    text = unicodedata.normalize("NFC", label or "")
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    text = _SPACES.sub(" ", _DOTS.sub("_", _UNSAFE.sub("_", text))).strip(" .")
    text = text[:MAX_LENGTH].rstrip(" .")
    if not text or text.split(".")[0].upper() in _RESERVED:
        text = f"{fallback} {text}".strip(" .") if text else fallback
    return text


def instance_name(number: int) -> str:
    """The file name of the ``number``-th instance of a series."""
    return f"IM{number:05d}.dcm"


@dataclass
class NameSpace:
    """The names taken in one folder, and a counter for its files."""

    taken: set[str] = field(default_factory=set)
    count: int = 0

    def claim(self, name: str) -> str:
        """``name``, or ``name (2)``, ``name (3)``... whichever is free (ignoring case)."""
        candidate, n = name, 1
        while candidate.casefold() in self.taken:
            n += 1
            candidate = f"{name} ({n})"
        self.taken.add(candidate.casefold())
        return candidate

    def next_number(self) -> int:
        self.count += 1
        return self.count
