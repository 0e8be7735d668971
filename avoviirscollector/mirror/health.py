"""mirror_gina's health record (``state/mirror_gina.health.json``) and how the mirror's health is judged from it.

The record holds the last run and the last successful one (the listing was had and every wanted file not given up
on was placed or is resuming: mirror/results.py decides), per satellite of the queues when something new was last
listed, and the wanted files listed but not yet placed, with the time each was first listed. ``avo_status`` and
the monitor judge the mirror's health from it (:func:`mirror_problems`). The file is changed with
:func:`~avoviirscollector.mirror.state_files.update_json` (locked, atomic).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from avoviirscollector.isotime import stamp, utc
from avoviirscollector.mirror.state_files import update_json
from avoviirscollector.ondisk.state import MIRROR_HEALTH

PENDING_HOURS = 1.0


class MirrorHealth:
    """The health record of the mirror (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / MIRROR_HEALTH

    def record_run(self, now: dt.datetime, succeeded: bool, satellites: dict[str, dt.datetime | None],
                   pending: set[str], settled: set[str], summary: str) -> dict:
        """One run's result. ``satellites``: each listed satellite of this run and the newest granule start it
        listed (None when its listing failed); ``pending``: wanted files listed and neither placed nor given up;
        ``settled``: files of this run's queues that are placed or given up (no longer pending)."""

        def change(data: dict) -> None:
            data["last_run"] = stamp(now)
            data["last_run_summary"] = summary[:300]
            if succeeded:
                data["last_success"] = stamp(now)
            sats = data.setdefault("satellites", {})
            for sat, newest in satellites.items():
                entry = sats.setdefault(sat, {"new_listed": stamp(now)})
                if newest is None:
                    continue
                newest_text = stamp(newest)
                if entry.get("newest") != newest_text and newest_text > entry.get("newest", ""):
                    entry["newest"] = newest_text
                    entry["new_listed"] = stamp(now)
            waiting = data.setdefault("pending", {})
            for name in settled:
                waiting.pop(name, None)
            for name in pending:
                waiting.setdefault(name, stamp(now))
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
