"""DICOM attribute matching (PS3.4 C.2.2.2) as SQL conditions: the one place it is translated.

Each key has a kind, which says which matching it supports:

* ``uid`` (UI): single value, list of UIDs (C.2.2.2.2).
* ``text`` (AE, CS, LO, SH...): single value and wild card (C.2.2.2.4), case-sensitive.
  ``*`` and ``?`` become LIKE's ``%`` and ``_``; literal ``%``, ``_`` and ``\\`` are escaped.
* ``pn`` (PN): as ``text``, but matched on the upper-cased twin column when person names are
  case-insensitive (C.2.2.2.1 allows it); a value without ``=`` also matches the alphabetic group
  of a stored multi-group name, and trailing empty components (``Doe^John^^``) are
  insignificant (PS3.5 6.2.1). With fuzzy semantic matching (C.5.1.1.2 byte 3), a value matches
  any name with a word starting with it, case-insensitively.
* ``date`` (DA), ``time`` (TM): single value and range (C.2.2.2.5) on the normalised strings
  the index stores (``YYYYMMDD``, ``HHMMSS[.F]``). A time given with less precision covers its
  whole span at the upper end (``-1030`` includes 10:30:59.999999). Entities with no value never
  match a range. :func:`combined_datetime` pairs a date and a time range (C.2.2.2.5.1).
* ``int`` (IS, US): single value.

Universal matching (C.2.2.2.3): a zero-length value, or ``*`` alone, adds no condition.
A value with backslashes holds several values and an entity matches when any of them matches:
PS3.4 C.2.2.2.8 leaves that meaning to the SCP unless Multiple Value Matching was negotiated.
Malformed values raise :class:`QueryError` (0xC000, unable to process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, or_

from vesalius.dicom import values
from vesalius.errors import QueryError

Kind = Literal["uid", "text", "pn", "date", "time", "int"]

ESCAPE = "\\"
#: Person names have at most five components (PS3.5 6.2.1).
PN_COMPONENTS = 5


@dataclass(frozen=True)
class MatchOptions:
    """How person names match: case-insensitively (the default), and fuzzily."""

    case_insensitive_pn: bool = True
    fuzzy: bool = False


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    """The LIKE pattern (escape character ``\\``) for a DICOM wild card value."""
    out = []
    for char in value:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in ("%", "_", ESCAPE):
            out.append(ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)


def split_values(raw: str) -> list[str]:
    """The values of a key, split at backslashes, blanks trimmed, empty ones dropped."""
    return [v for v in (part.strip() for part in raw.split("\\")) if v]


def _any(conditions: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def _like(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    # ESCAPE only when needed: SQLite's LIKE-prefix index optimisation shuns it
    return column.like(pattern, escape=ESCAPE) if ESCAPE in pattern else column.like(pattern)


def _equal_any(column: ColumnElement[Any], items: Sequence[Any]) -> ColumnElement[bool]:
    unique = list(dict.fromkeys(items))
    return column == unique[0] if len(unique) == 1 else column.in_(unique)


def _uid(column: ColumnElement[Any], items: list[str], keyword: str) -> ColumnElement[bool]:
    if any(has_wildcard(v) for v in items):
        raise QueryError(f"{keyword}: wild cards are not allowed in UIDs")
    return _equal_any(column, items)


def _text(column: ColumnElement[Any], items: list[str]) -> ColumnElement[bool]:
    exact = [v for v in items if not has_wildcard(v)]
    conditions = [_like(column, like_pattern(v)) for v in items if has_wildcard(v)]
    if exact:
        conditions.insert(0, _equal_any(column, exact))
    return _any(conditions)


def _int(column: ColumnElement[Any], items: list[str], keyword: str) -> ColumnElement[bool]:
    try:
        return _equal_any(column, [int(v) for v in items])
    except ValueError:
        raise QueryError(f"{keyword}: not an integer") from None


def _pn_value(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    groups = value.split("=")
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    groups = [g or "*" for g in groups]  # "=山田^太郎": any alphabetic group
    value = "=".join(groups)
    if has_wildcard(value):
        pattern = like_pattern(value)
        if pattern.endswith("%"):
            return _like(column, pattern)
        return or_(_like(column, pattern), _like(column, pattern + "=%"))
    last = groups[-1].rstrip("^")
    head = "=".join([*groups[:-1], last])
    spare = max(0, PN_COMPONENTS - 1 - last.count("^"))
    variants = [head + "^" * n for n in range(spare + 1)]
    exact = or_(
        _equal_any(column, variants), *(_like(column, like_pattern(v) + "=%") for v in variants)
    )
    # the prefix test is implied by the others; it gives the planner one index range to scan
    return and_(_like(column, like_pattern(head) + "%"), exact)


def _pn_fuzzy(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    pattern = like_pattern(value)
    if not pattern.endswith("%"):
        pattern += "%"
    starts = (pattern, "%^" + pattern, "%=" + pattern, "% " + pattern)
    return or_(*(_like(column, p) for p in starts))


def _pn(
    column: ColumnElement[Any],
    folded: ColumnElement[Any] | None,
    items: list[str],
    options: MatchOptions,
) -> ColumnElement[bool]:
    insensitive = (options.case_insensitive_pn or options.fuzzy) and folded is not None
    target = folded if insensitive and folded is not None else column
    items = [values.fold(v) for v in items] if insensitive else items
    if options.fuzzy:
        return _any([_pn_fuzzy(target, v) for v in items])
    return _any([_pn_value(target, v) for v in items])


def date_value(text: str, keyword: str) -> str:
    """A DA query value normalised as stored (``YYYYMMDD``); QueryError when malformed."""
    normalised = values.date(text.strip())
    if not normalised:
        raise QueryError(f"{keyword}: invalid date {text[:20]!r}")
    return normalised


def time_value(text: str, keyword: str, *, upper: bool = False) -> str:
    """A TM query value normalised as stored; ``upper`` extends it to the end of its precision
    (``10`` -> ``105959.999999``), so a range includes every time its bound names."""
    raw = text.strip().replace(":", "")
    main, dot, fraction = raw.partition(".")
    valid = main.isdigit() and len(main) in (2, 4, 6) and (not fraction or fraction.isdigit())
    if valid:
        parts = [int(main[i : i + 2]) for i in range(0, len(main), 2)]
        valid = all(part < limit for part, limit in zip(parts, (24, 60, 61), strict=False))
    if not valid or (dot and len(main) != 6):
        raise QueryError(f"{keyword}: invalid time {text[:20]!r}")
    if not upper:
        return values.time(raw)
    pad = {2: "5959", 4: "59", 6: ""}[len(main)]
    return f"{main}{pad}.{fraction[:6].ljust(6, '9')}"


def _split_range(value: str, keyword: str) -> tuple[str, str] | None:
    """``(low, high)`` of a range value (either may be empty), None for a single value."""
    if value.count("-") != 1:
        return None
    low, high = (part.strip() for part in value.split("-"))
    if not low and not high:
        raise QueryError(f"{keyword}: a range needs at least one bound")
    return low, high


def _range(column: ColumnElement[Any], low: str | None, high: str | None) -> ColumnElement[bool]:
    conditions = [column != ""]
    if low is not None:
        conditions.append(column >= low)
    if high is not None:
        conditions.append(column <= high)
    return and_(*conditions)


def _ranged(
    column: ColumnElement[Any],
    items: list[str],
    keyword: str,
    parse: Callable[[str, str, bool], str],
) -> ColumnElement[bool]:
    """Single values and ranges (PS3.4 C.2.2.2.5) over a normalised date or time column;
    ``parse(text, keyword, upper)`` normalises one bound."""
    conditions = []
    for value in items:
        bounds = _split_range(value, keyword)
        if bounds is None:
            conditions.append(column == parse(value, keyword, False))
            continue
        low, high = bounds
        conditions.append(
            _range(
                column,
                parse(low, keyword, False) if low else None,
                parse(high, keyword, True) if high else None,
            )
        )
    return _any(conditions)


def _date(column: ColumnElement[Any], items: list[str], keyword: str) -> ColumnElement[bool]:
    return _ranged(column, items, keyword, lambda text, kw, _upper: date_value(text, kw))


def _time(column: ColumnElement[Any], items: list[str], keyword: str) -> ColumnElement[bool]:
    return _ranged(
        column, items, keyword, lambda text, kw, upper: time_value(text, kw, upper=upper)
    )


def condition(
    kind: Kind,
    column: ColumnElement[Any],
    raw: str,
    *,
    keyword: str = "",
    folded: ColumnElement[Any] | None = None,
    options: MatchOptions | None = None,
) -> ColumnElement[bool] | None:
    """The SQL condition for matching ``column`` against the key value ``raw``, or None for
    universal matching. ``folded`` is the upper-cased twin of a person-name column."""
    items = split_values(raw)
    if not items or "*" in items:
        return None
    name = keyword or str(getattr(column, "name", "key"))
    if kind == "uid":
        return _uid(column, items, name)
    if kind == "text":
        return _text(column, items)
    if kind == "pn":
        return _pn(column, folded, items, options or MatchOptions())
    if kind == "date":
        return _date(column, items, name)
    if kind == "time":
        return _time(column, items, name)
    return _int(column, items, name)


def combined_datetime(
    date_column: ColumnElement[Any],
    time_column: ColumnElement[Any],
    date_raw: str,
    time_raw: str,
    keyword: str = "",
) -> ColumnElement[bool] | None:
    """Combined date-time range matching (PS3.4 C.2.2.2.5.1, negotiated with C.5.1.1.2 byte 2):
    a date range and a time range of the same form match as one datetime range, e.g.
    ``20240105-20240107`` with ``1000-1800`` runs from 5 January 10:00 to 7 January 18:00.
    None when the two keys are not ranges of the same form (then each matches on its own)."""
    date_bounds = time_bounds = None
    if "\\" not in date_raw and "\\" not in time_raw:
        date_bounds = _split_range(date_raw.strip(), keyword)
        time_bounds = _split_range(time_raw.strip(), keyword)
    if date_bounds is None or time_bounds is None:
        return None
    if (bool(date_bounds[0]), bool(date_bounds[1])) != (bool(time_bounds[0]), bool(time_bounds[1])):
        return None
    conditions = [date_column != ""]
    if date_bounds[0]:
        day = date_value(date_bounds[0], keyword)
        start = time_value(time_bounds[0], keyword)
        conditions.append(or_(date_column > day, and_(date_column == day, time_column >= start)))
    if date_bounds[1]:
        day = date_value(date_bounds[1], keyword)
        end = time_value(time_bounds[1], keyword, upper=True)
        conditions.append(or_(date_column < day, and_(date_column == day, time_column <= end)))
    return and_(*conditions)
