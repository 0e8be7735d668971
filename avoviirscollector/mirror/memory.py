"""What mirror_gina remembers across runs besides the journal: failing files, and how the mirror is doing.

``state/mirror_gina.failures.json``: per file whose own fault made it fail (HTTP 4xx, md5 mismatch, not HDF5):
tries, first and last failure, last reason, the time before which it is not tried again (backoff doubling from one
minute, at most four hours), and whether it was given up on (after ``MIRROR_GIVE_UP_TRIES`` tries). A run that looks
like an outage of GINA (a listing failed, or most of its files failed at once) puts no file into backoff.

``state/mirror_gina.health.json``: the last run and the last successful one (the listing was had and every wanted
file not given up on was placed or is resuming), per satellite of the queues when something new was last listed,
and the wanted files listed but not yet placed, with the time each was first listed. ``avo_status`` judges the
mirror's health from it (:func:`mirror_problems`).

``state/mirror_gina.skipped.json``: the listing records that could not be used (a digest of each one's problem line
and when it was named): each is named in one WARNING, then counted in one INFO line per run while it stays in the
listing, and named again after a day if GINA still lists it.

These files are read, changed and rewritten under an exclusive ``flock`` of ``<file>.lock`` (runs of different
queues overlap), atomically. On a full disk they are left as they were: the runs go on without them.
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

from avoviirscollector.ondisk.state import (  # noqa: F401 - read_json: the readers of these files use it
    MIRROR_COPIES,
    MIRROR_FAILURES,
    MIRROR_HEALTH,
    MIRROR_LISTINGS,
    MIRROR_SKIPPED,
    read_json,
    utc,
)

FAILURES_NAME = MIRROR_FAILURES
LISTINGS_NAME = MIRROR_LISTINGS
SKIPPED_NAME = MIRROR_SKIPPED
SKIPPED_NAMED_AGAIN = dt.timedelta(hours=24)  # an unusable record still listed is named again after a day
SKIPPED_MAX = 50_000  # unusable records remembered (the most recently named)
HEALTH_NAME = MIRROR_HEALTH
BACKOFF_FIRST = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=4)
#: a run with at least this many failures of the files' own kind, and more than half of its files, is an outage
OUTAGE_MIN_FILES = 3
PENDING_HOURS = 1.0


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class FailureMemory:
    """Per-file backoff and giving up, across runs."""

    def __init__(self, state_dir: Path, give_up_tries: int) -> None:
        self.path = Path(state_dir) / FAILURES_NAME
        self.give_up_tries = give_up_tries
        self.files = read_json(self.path)

    def waiting(self, name: str, now: dt.datetime) -> str | None:
        """Why ``name`` is not to be fetched now ("given up" or "backoff"), or None."""
        entry = self.files.get(name)
        if not isinstance(entry, dict):
            return None
        if entry.get("given_up"):
            return "given up"
        not_before = utc(entry.get("not_before"))
        if not_before is not None and now < not_before:
            return "backoff"
        return None

    def given_up(self) -> dict[str, dict]:
        return {n: e for n, e in self.files.items() if isinstance(e, dict) and e.get("given_up")}

    def record(self, failed: dict[str, str], placed: list[str], now: dt.datetime, forget_before: dt.datetime
               ) -> list[tuple[str, dict]]:
        """Count a failure of the file's own fault for each of ``failed`` (name -> reason), forget ``placed`` and
        entries whose last failure is older than ``forget_before``. Returns the files given up on now."""
        newly: list[tuple[str, dict]] = []

        def change(files: dict) -> None:
            for name in placed:
                files.pop(name, None)
            for name in [n for n, e in files.items()
                         if not isinstance(e, dict) or (utc(e.get("last")) or now) < forget_before]:
                del files[name]
            for name, reason in failed.items():
                entry = files.get(name) or {"tries": 0, "first": _iso(now)}
                if entry.get("given_up"):
                    continue
                entry["tries"] = int(entry.get("tries", 0)) + 1
                entry["last"] = _iso(now)
                entry["reason"] = reason[:300]
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (entry["tries"] - 1))
                entry["not_before"] = _iso(now + delay)
                if entry["tries"] >= self.give_up_tries:
                    entry["given_up"] = True
                    newly.append((name, entry))
                files[name] = entry

        if failed or placed or self.files:
            self.files = update_json(self.path, change)
        return newly


class ListingTimes:
    """When each listing (satellite, sensor, level, facility, backfill) was last had in full: the runs between
    full listings ask GINA only for what can have changed (``state/mirror_gina.listings.json``)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LISTINGS_NAME
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
            self.times = update_json(self.path, lambda data: data.update({self._key(key): _iso(now)}))
        except OSError:
            pass


class SkippedRecords:
    """Which unusable listing records were named in a WARNING, and when (``state/mirror_gina.skipped.json``): the
    same listing comes back every minute, and each of its bad records is named once, not every minute."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / SKIPPED_NAME

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
            data.update(dict.fromkeys(fresh, _iso(now)))
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
                                            "of_listed": listed.get(copy.of), "noted": _iso(now)})

        self._noted = set(update_json(self.path, change))
        return new


def is_outage(own_faults: int, attempted: int, listing_failed: bool) -> bool:
    """An outage of GINA rather than the files' own fault: a listing failed, or most files failed at once."""
    return listing_failed or (own_faults >= OUTAGE_MIN_FILES and own_faults * 2 > attempted)


class MirrorHealth:
    """The health record of the mirror (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / HEALTH_NAME

    def record_run(self, now: dt.datetime, succeeded: bool, satellites: dict[str, dt.datetime | None],
                   pending: set[str], settled: set[str], summary: str) -> dict:
        """One run's result. ``satellites``: each listed satellite of this run and the newest granule start it
        listed (None when its listing failed); ``pending``: wanted files listed and neither placed nor given up;
        ``settled``: files of this run's queues that are placed or given up (no longer pending)."""

        def change(data: dict) -> None:
            data["last_run"] = _iso(now)
            data["last_run_summary"] = summary[:300]
            if succeeded:
                data["last_success"] = _iso(now)
            sats = data.setdefault("satellites", {})
            for sat, newest in satellites.items():
                entry = sats.setdefault(sat, {"new_listed": _iso(now)})
                if newest is None:
                    continue
                newest_text = _iso(newest)
                if entry.get("newest") != newest_text and newest_text > entry.get("newest", ""):
                    entry["newest"] = newest_text
                    entry["new_listed"] = _iso(now)
            waiting = data.setdefault("pending", {})
            for name in settled:
                waiting.pop(name, None)
            for name in pending:
                waiting.setdefault(name, _iso(now))
            horizon = now - dt.timedelta(days=3)  # not listed any more: forget
            for name in [n for n, t in waiting.items() if (utc(t) or now) < horizon]:
                del waiting[name]

        return update_json(self.path, change)


def mirror_problems(health: dict, now: dt.datetime, stale_minutes: int, silence_hours: int,
                    running_since: dt.datetime | None = None) -> list[str]:
    """Why the mirror is unhealthy, one line per reason (empty: healthy). ``running_since``: when the suite's
    cron started (with no successful run at all, the mirror is stale once that is ``stale_minutes`` ago). Pure."""
    problems = []
    stale = dt.timedelta(minutes=stale_minutes)
    last_success = utc(health.get("last_success"))
    if last_success is None:
        if running_since is not None and now - running_since > stale:
            problems.append(f"mirror_gina: no run has succeeded since the suite started "
                            f"{(now - running_since).total_seconds() / 60:.0f} min ago"
                            f"{_last_run(health)}")
    elif now - last_success > stale:
        problems.append(f"mirror_gina: no run has succeeded for {(now - last_success).total_seconds() / 60:.0f} min "
                        f"(limit MIRROR_STALE_MINUTES={stale_minutes}){_last_run(health)}")
    pending = health.get("pending") if isinstance(health.get("pending"), dict) else {}
    overdue = sorted((t, n) for n, t in pending.items()
                     if (first := utc(t)) is not None and now - first > dt.timedelta(hours=PENDING_HOURS))
    if overdue:
        problems.append(f"mirror_gina: {len(overdue)} file(s) listed by GINA for over an hour are neither placed nor "
                        f"given up on (oldest {overdue[0][1]}, listed {overdue[0][0]})")
    sats = health.get("satellites") if isinstance(health.get("satellites"), dict) else {}
    for sat, entry in sorted(sats.items()):
        since = utc(entry.get("new_listed")) if isinstance(entry, dict) else None
        if since is not None and now - since > dt.timedelta(hours=silence_hours):
            problems.append(f"mirror_gina: nothing new listed for {sat} for "
                            f"{(now - since).total_seconds() / 3600:.1f} h (limit SILENCE_HOURS={silence_hours}): "
                            f"the upstream went quiet")
    return problems


def _last_run(health: dict) -> str:
    summary = health.get("last_run_summary")
    return f"; last run {health.get('last_run')}: {summary}" if summary else ""
