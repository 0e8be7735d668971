"""The newest ERROR / CRITICAL lines of ``$VIIRS_BASE/log/*.log`` (the suite's format and supervisord's).

Reads the tail of each log (``state.tail_lines``: never the whole of a big file) and sorts the lines by the time
they start with. Read-only. avo_status and the monitor show them.
"""

from __future__ import annotations

import re
from pathlib import Path

from avoviirscollector.ondisk.state import tail_lines

ERROR_RE = re.compile(r"\b(ERROR|CRITICAL|CRIT|FATAL)\b")
TIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})")


def parse_error_lines(source: str, lines: list[str]) -> list[dict]:
    """ERROR / CRITICAL lines of one log, each with a sortable time key (``""`` when the line has none)."""
    found = []
    for line in lines:
        if ERROR_RE.search(line):
            match = TIME_RE.search(line[:64])
            key = f"{match.group(1)}T{match.group(2)}" if match else ""
            found.append({"log": source, "time": key, "line": line.rstrip()[:500]})
    return found


def last_errors(log_dir: Path, count: int) -> list[dict]:
    """The newest ``count`` error lines of the logs in ``log_dir``, newest first: ``{"log", "time", "line"}``."""
    found = []
    try:
        logs = sorted(p for p in log_dir.glob("*.log") if p.is_file())
    except OSError:
        return []
    for path in logs:
        try:
            found += parse_error_lines(path.stem, tail_lines(path))
        except OSError:
            continue
    found.sort(key=lambda e: e["time"])
    return found[-count:][::-1]
