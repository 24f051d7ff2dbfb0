"""Reading the server's log lines back (docs/operations.md, "Logs"): logfmt or JSON lines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: ``key=value`` with a bare value, or one double-quoted with JSON escapes.
_PAIR = re.compile(r'([!#-<>-~]+)=("(?:[^"\\]|\\.)*"|[!#-~]*)(?: |$)')


def parse_logfmt(line: str) -> dict[str, Any]:
    """One logfmt line as a dict; AssertionError if any of it is not ``key=value``."""
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(line):
        match = _PAIR.match(line, pos)
        assert match, f"not logfmt at {pos}: {line!r}"
        key, raw = match.groups()
        out[key] = json.loads(raw) if raw.startswith('"') else raw
        pos = match.end()
    return out


def parse(line: str, form: str = "logfmt") -> dict[str, Any]:
    if form == "json":
        record = json.loads(line)
        assert isinstance(record, dict), line
        return record
    return parse_logfmt(line)


def records(text: str, form: str = "logfmt") -> list[dict[str, Any]]:
    """Every line of ``text`` parsed (strict: a line that does not parse fails)."""
    return [parse(line, form) for line in text.splitlines()]


def audit_records(text: str, form: str = "logfmt") -> list[dict[str, Any]]:
    """The audit events in a log that carries them (``log.audit_file`` unset, stderr); lines
    that are not log records (a CLI's own output) are skipped."""
    found = []
    for line in text.splitlines():
        try:
            record = parse(line, form)
        except (AssertionError, ValueError):
            continue
        if record.get("logger") == "vesalius.audit":
            audit = record["audit"]
            found.append(json.loads(audit) if isinstance(audit, str) else audit)
    return found


def audit_trail(data_dir: Path) -> str:
    """The text of a server's audit trail (``audit.file`` unset: ``audit.log`` in data_dir),
    one JSON object per line; empty if nothing was audited yet."""
    path = data_dir / "audit.log"
    return path.read_text() if path.exists() else ""
