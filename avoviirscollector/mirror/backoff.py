"""mirror_gina's failure memory (``state/mirror_gina.failures.json``): backoff and giving up, across runs.

Per file whose own fault made it fail (HTTP 4xx, md5 mismatch, not HDF5): tries, first and last failure, last
reason, the time before which it is not tried again (backoff doubling from one minute, at most four hours), and
whether it was given up on (after ``MIRROR_GIVE_UP_TRIES`` tries). A run that looks like an outage of GINA
(:func:`is_outage`: a listing failed, or most of its files failed at once) puts no file into backoff. The file is
changed with :func:`~avoviirscollector.mirror.state_files.update_json` (locked, atomic).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from avoviirscollector.isotime import stamp, utc
from avoviirscollector.mirror.state_files import update_json
from avoviirscollector.ondisk.state import MIRROR_FAILURES, read_json

BACKOFF_FIRST = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=4)
#: a run with at least this many failures of the files' own kind, and more than half of its files, is an outage
OUTAGE_MIN_FILES = 3


class FailureMemory:
    """Per-file backoff and giving up, across runs."""

    def __init__(self, state_dir: Path, give_up_tries: int) -> None:
        self.path = Path(state_dir) / MIRROR_FAILURES
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
                entry = files.get(name) or {"tries": 0, "first": stamp(now)}
                if entry.get("given_up"):
                    continue
                entry["tries"] = int(entry.get("tries", 0)) + 1
                entry["last"] = stamp(now)
                entry["reason"] = reason[:300]
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (entry["tries"] - 1))
                entry["not_before"] = stamp(now + delay)
                if entry["tries"] >= self.give_up_tries:
                    entry["given_up"] = True
                    newly.append((name, entry))
                files[name] = entry

        if failed or placed or self.files:
            self.files = update_json(self.path, change)
        return newly


def is_outage(own_faults: int, attempted: int, listing_failed: bool) -> bool:
    """An outage of GINA rather than the files' own fault: a listing failed, or most files failed at once."""
    return listing_failed or (own_faults >= OUTAGE_MIN_FILES and own_faults * 2 > attempted)
