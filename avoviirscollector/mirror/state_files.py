"""mirror_gina's small state files in ``state/``, and the one way they are changed (:func:`update_json`).

Each file is read, changed and rewritten under an exclusive ``flock`` of ``<file>.lock`` (runs of different queues
overlap), atomically. On a full disk they are left as they were: the runs go on without them. Besides the failure
memory (mirror/backoff.py) and the health record (mirror/health.py), which use :func:`update_json` too:

``state/mirror_gina.listings.json`` (:class:`ListingTimes`): when each listing was last had in full.

``state/mirror_gina.skipped.json`` (:class:`SkippedRecords`): the listing records that could not be used (a digest
of each one's problem line and when it was named): each is named in one WARNING, then counted in one INFO line per
run while it stays in the listing, and named again after a day if GINA still lists it.

``state/mirror_gina.copies.json`` (:class:`StationCopies`): other stations' copies of granule files left alone.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from avoviirscollector.isotime import stamp, utc
from avoviirscollector.ondisk.state import MIRROR_COPIES, MIRROR_LISTINGS, MIRROR_SKIPPED, read_json

SKIPPED_NAMED_AGAIN = dt.timedelta(hours=24)  # an unusable record still listed is named again after a day
SKIPPED_MAX = 50_000  # unusable records remembered (the most recently named)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_json(path: Path, change: Callable[[dict], None]) -> dict:
    """Read ``path``, apply ``change`` in place and write it back atomically, under the file's lock. Raises
    OSError when it cannot be written (the file is then as it was)."""
    with _locked(path):
        data = read_json(path)
        change(data)
        new = path.with_name(path.name + ".new")
        try:
            new.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(new, path)
        except OSError:
            new.unlink(missing_ok=True)
            raise
    return data


class ListingTimes:
    """When each listing (satellite, sensor, level, facility, backfill) was last had in full: the runs between
    full listings ask GINA only for what can have changed (``state/mirror_gina.listings.json``)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / MIRROR_LISTINGS
        self.times = read_json(self.path)

    @staticmethod
    def _key(key: tuple) -> str:
        """``snpp/viirs/level1/all/2`` (or ``.../gilmore+uafgina/2`` when stations are named)."""
        return "/".join("+".join(part) or "all" if isinstance(part, tuple) else str(part) for part in key)

    def last_full(self, key: tuple) -> dt.datetime | None:
        return utc(self.times.get(self._key(key)))

    def listed_in_full(self, key: tuple, now: dt.datetime) -> None:
        """Remember a full listing (a full disk only means the next run lists in full again)."""
        try:
            self.times = update_json(self.path, lambda data: data.update({self._key(key): stamp(now)}))
        except OSError:
            pass


class SkippedRecords:
    """Which unusable listing records were named in a WARNING, and when (``state/mirror_gina.skipped.json``): the
    same listing comes back every minute, and each of its bad records is named once, not every minute."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / MIRROR_SKIPPED

    @staticmethod
    def _digest(problem: str) -> str:
        return hashlib.blake2b(problem.encode("utf-8", "replace"), digest_size=8).hexdigest()

    def to_name(self, problems: list[str], now: dt.datetime) -> list[str]:
        """The problems (one line per unusable record) not named within the last day, in their order: the caller
        names each in a WARNING now, and they are remembered as named. On a full disk nothing can be remembered and
        every problem is returned."""
        if not problems:
            return []
        fresh: dict[str, str] = {}

        def change(data: dict) -> None:
            cutoff = now - SKIPPED_NAMED_AGAIN
            for digest, when in list(data.items()):
                named = utc(when)
                if named is None or named <= cutoff:
                    del data[digest]
            for problem in problems:
                digest = self._digest(problem)
                if digest not in data and digest not in fresh:
                    fresh[digest] = problem
            data.update(dict.fromkeys(fresh, stamp(now)))
            if len(data) > SKIPPED_MAX:
                for digest in sorted(data, key=lambda d: str(data[d]))[:len(data) - SKIPPED_MAX]:
                    del data[digest]

        try:
            update_json(self.path, change)
        except OSError:
            return list(dict.fromkeys(problems))
        return list(fresh.values())


class StationCopies:
    """Other stations' copies that mirror_gina left alone (``state/mirror_gina.copies.json``), each noted once:
    name -> ``{"station", "listed", "of", "of_station", "of_listed", "noted"}`` (the copy, the station that listed it,
    when it was first listed; the file of the granule placed or chosen instead, its station and when it was listed),
    kept for the listing window. status and the monitor count them per station (who listed first, by how much)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / MIRROR_COPIES
        self._noted: set[str] | None = None

    def noted(self) -> set[str]:
        if self._noted is None:
            self._noted = set(read_json(self.path))
        return self._noted

    def note(self, copies: list, listed: dict[str, str | None], now: dt.datetime, forget_before: dt.datetime
             ) -> list:
        """Note the copies (``plan.Copy``) not noted before; returns those. Raises OSError when the file cannot be
        written (nothing is then noted)."""
        new = [copy for copy in copies if copy.name not in self.noted()]
        if not new:
            return []

        def change(data: dict) -> None:
            for name in [n for n, e in data.items()
                         if not isinstance(e, dict) or (utc(e.get("noted")) or now) < forget_before]:
                del data[name]
            for copy in new:
                data.setdefault(copy.name, {"station": copy.station, "listed": listed.get(copy.name),
                                            "of": copy.of, "of_station": copy.of_station,
                                            "of_listed": listed.get(copy.of), "noted": stamp(now)})

        self._noted = set(update_json(self.path, change))
        return new
