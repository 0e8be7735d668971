"""What monitor reads, read-only, besides the state files (``ondisk.state`` reads those): supervisord's log, the
files seen in ``sdr/`` (:class:`NewInSdr`), a state file read again only when it changed (:class:`ChangedJson`),
log lines fit to show. Nothing here writes, moves or locks a file of another program."""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from avoviirscollector.ondisk.state import read_json

#: supervisord's own log line when it starts a program: ``2026-01-01 00:00:00,123 INFO spawned: 'name' with pid 1``
SPAWNED_RE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) INFO spawned: '([^']+)' with pid")
CREDENTIALS_IN_URL = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def spawned(lines: list[bytes]) -> Iterator[tuple[float, str]]:
    """(time, program) of each start in supervisord's log (its times are UTC here: the suite runs in UTC)."""
    for line in lines:
        match = SPAWNED_RE.match(line.decode("utf-8", errors="replace"))
        if match:
            when = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
            yield when.timestamp() + int(match.group(2)) / 1000, match.group(3)


class NewInSdr:
    """monitor's ``ondisk.sdr.Sink``: what changed in sdr/ among the files placed at or after ``floor`` (a day ago,
    and not before monitor first watched sdr/), kept for :meth:`take` (thread-safe: the watch's thread adds, the poll
    takes). Events, in order: ``("seen", (name, placed))`` a file is in sdr/ (placed by anyone, or put back);
    ``("gone", name)`` a file left sdr/ (removed by anyone); ``("pass", None)`` a complete full pass ended (files
    removed while monitor was not watching are found by the poll: it looks up the files of its window, a day's, not
    the archive's)."""

    def __init__(self, floor: float = float("inf")) -> None:
        self.floor = floor
        self._lock = threading.Lock()
        self._events: list[tuple[str, object]] = []

    def begin_pass(self) -> None:
        return

    def seen(self, name: str, placed: float) -> None:
        if placed >= self.floor and not name.startswith("."):
            with self._lock:
                self._events.append(("seen", (name, placed)))

    def gone(self, name: str) -> None:
        with self._lock:
            self._events.append(("gone", name))

    def end_pass(self, complete: bool) -> None:
        if complete:
            with self._lock:
                self._events.append(("pass", None))

    def take(self) -> list[tuple[str, object]]:
        """What happened since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
        return events


class ChangedJson:
    """One JSON object file (e.g. ``state/mirror_gina.copies.json``, rewritten by one rename whenever it changes),
    parsed again only when its identity, size or modification time changed: polling it every few seconds costs a
    ``stat``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int, int] | None = None

    def read(self) -> dict | None:
        """The object when the file changed since the last call (the first call: when it exists); else None."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return read_json(self.path)


def redact(line: str) -> str:
    """A log line fit to show: credentials in URLs (``scheme://user:password@``) replaced."""
    return CREDENTIALS_IN_URL.sub(r"\1***@", line)
