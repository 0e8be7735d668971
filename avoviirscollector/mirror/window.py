"""What one listing of GINA NRT's ``products.json`` asks for: the window of granules and the query. Pure.

The whole backfill window, by days, when it was not had for an hour (and at the suite's start: ``supervise``
forgets when it was); between those, with ``MIRROR_POLL_SECONDS`` set, the granules that started in the last
:data:`LOOKBACK` (minute bounds, ``start_date=YYYY-MM-DD HHMM``, as GINA's own ``getGINAsat.py`` asks), which is what
can have changed; with polling off, today (and yesterday in the first hours of the UTC day), by days, as the
original did.

Which stations: ``all`` (the default) asks with no ``facilities[]`` at all, as GINA recommends (passes may be
received at any station); names ask for those stations only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

#: the whole backfill window is listed at most this often (and when never listed yet, or at the suite's start)
FULL_LISTING_EVERY = dt.timedelta(hours=1)
#: with polling, the listings between ask for the granules that started this recently (GINA's own getGINAsat.py
#: looks back 61 minutes); a file GINA lists later than that is found by the next full listing
LOOKBACK = dt.timedelta(minutes=61)
#: with polling off, the listings between ask for today, and yesterday too during the first hours of the UTC day
YESTERDAY_UNTIL_HOUR = 3


@dataclass(frozen=True)
class Window:
    """What one listing asks for: whole days (``start``, ``end`` dates, as SPEC section 4 says) or minutes (granule
    starts from ``start`` to ``end``, both minutes included)."""

    start: dt.date | dt.datetime
    end: dt.date | dt.datetime
    full: bool = False

    @property
    def by_minutes(self) -> bool:
        return isinstance(self.start, dt.datetime)

    def bounds(self) -> list[tuple[str, str]]:
        if self.by_minutes:
            return [("start_date", f"{self.start:%Y-%m-%d %H%M}"), ("end_date", f"{self.end:%Y-%m-%d %H%M}")]
        return [("start_date", self.start.isoformat()), ("end_date", self.end.isoformat())]


def listing_window(now: dt.datetime, last_full: dt.datetime | None, backfill_days: int, poll: bool) -> Window:
    """The window a listing asks for now (see the module docstring). Pure."""
    today = now.astimezone(dt.UTC).date()
    if last_full is None or now - last_full >= FULL_LISTING_EVERY or now < last_full:
        end = today + dt.timedelta(days=1)
        return Window(end - dt.timedelta(days=backfill_days), end, full=True)
    if poll:
        minute = now.astimezone(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
        return Window(minute - LOOKBACK, minute + dt.timedelta(minutes=1))
    days = 2 if now.astimezone(dt.UTC).hour < YESTERDAY_UNTIL_HOUR else 1
    end = today + dt.timedelta(days=1)
    return Window(end - dt.timedelta(days=min(days, backfill_days)), end)


def listing_params(key: tuple[str, str, str, tuple[str, ...], int], window: Window) -> list[tuple[str, str]]:
    """The query of SPEC section 4 for one listing key and window (no ``facilities[]`` for every station)."""
    satellite, sensor, level, facilities, _backfill = key
    return [*window.bounds(), ("sensors[]", sensor), ("processing_levels[]", level),
            *(("facilities[]", facility) for facility in facilities), ("satellites[]", satellite)]
