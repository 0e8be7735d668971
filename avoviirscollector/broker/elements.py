"""The orbital elements task_broker's pass-direction helper works from: the TLE files in ``$VIIRS_BASE/elements``.

Every regular file there is read (names starting with a dot, such as tle_refresh's temporary files, are not), with
the suite's one TLE parser (:func:`avoviirscollector.tle.parse_tles`); entries are recognised by their NORAD
catalogue number, whatever the name line says. A bad element set in a file is skipped (one WARNING per file names
the first problem) and the file's good sets are still used; a file over 16 MB is ignored. The directory is
re-read when its files change (checked every 10 s at most), so a TLE refresh is picked up without a restart.

For a granule, the element set whose epoch is closest to its start time is used if it is at most
:data:`MAX_TLE_AGE` away; pyorbital propagates it to the start time and the sign of the satellite's velocity along
the Earth's axis (ECI z) gives the direction (:func:`direction_from_elements`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path

from avoviirscollector.tle import ElementSet, TLEError, parse_tles

log = logging.getLogger("task_broker.direction")

MAX_TLE_AGE = dt.timedelta(days=14)
RESCAN_SECONDS = 10.0
MAX_FILE_BYTES = 16 * 1024 * 1024

__all__ = ["MAX_TLE_AGE", "ElementSet", "ElementStore", "direction_from_elements"]


class ElementStore:
    """The TLE sets in one directory, re-read when the directory's files change (checked every 10 s at most)."""

    def __init__(self, elements_dir: Path, clock=None) -> None:
        self.elements_dir = Path(elements_dir)
        self._clock = clock or time.monotonic
        self._signature: tuple | None = None
        self._checked = float("-inf")
        self._sets: dict[int, list[ElementSet]] = {}

    def _files(self) -> list[os.DirEntry]:
        try:
            with os.scandir(self.elements_dir) as entries:
                return sorted(
                    (e for e in entries if e.is_file(follow_symlinks=True) and not e.name.startswith(".")),
                    key=lambda e: e.name,
                )
        except FileNotFoundError:
            return []

    def refresh(self) -> None:
        now = self._clock()
        if now - self._checked < RESCAN_SECONDS and self._signature is not None:
            return
        self._checked = now
        files = self._files()
        signature = tuple((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in files)
        if signature == self._signature:
            return
        self._signature = signature
        sets: dict[int, list[ElementSet]] = {}
        for entry in files:
            for element in self._read(entry):
                sets.setdefault(element.norad, []).append(element)
        self._sets = sets
        log.info("elements: %d element sets for %d satellites in %s", sum(map(len, sets.values())), len(sets),
                 self.elements_dir)

    @staticmethod
    def _read(entry: os.DirEntry) -> list[ElementSet]:
        """The good element sets of one file; its problems are logged (one line), never raised."""
        if entry.stat().st_size > MAX_FILE_BYTES:
            log.warning("elements file %s is over 16 MB: ignored", entry.name)
            return []
        try:
            text = Path(entry.path).read_text(encoding="ascii", errors="replace")
        except OSError as err:
            log.warning("cannot read elements file %s: %s", entry.name, err)
            return []
        problems: list[TLEError] = []
        found = parse_tles(text.splitlines(), entry.name, on_error=problems.append)
        if problems:
            log.warning("elements file %s: %d problems skipped (first: %s); %d element sets used", entry.name,
                        len(problems), problems[0], len(found))
        return found

    def best(self, norad: int, when: dt.datetime) -> ElementSet | None:
        """The element set for ``norad`` with the epoch closest to ``when``, if within :data:`MAX_TLE_AGE`."""
        self.refresh()
        candidates = self._sets.get(norad, [])
        if not candidates:
            return None
        element = min(candidates, key=lambda e: abs(e.epoch - when))
        return element if abs(element.epoch - when) <= MAX_TLE_AGE else None


def direction_from_elements(element: ElementSet, platform_name: str, when: dt.datetime) -> str:
    """ascending or descending at ``when`` (aware or naive UTC), from the sign of the ECI z velocity."""
    from pyorbital.orbital import Orbital

    orbital = Orbital(platform_name, line1=element.line1, line2=element.line2)
    naive = when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when
    _, velocity = orbital.get_position(naive, normalize=False)
    return "ascending" if float(velocity[2]) > 0 else "descending"
