"""ISO 8601 times as the suite reads and writes them: the one parser and the one writer of ``...Z`` stamps.

Every time the suite keeps is UTC. It reads any form ``datetime.fromisoformat`` takes (``Z``, an offset, or no offset,
which means UTC) and writes ``2026-12-02T16:05:00Z`` (or with microseconds) in its state files, messages and logs.
The task queue's journal and its messages keep ``isoformat()``'s own ``+00:00`` form, which this module reads too.
"""

from __future__ import annotations

import datetime as dt


def parse(value: object) -> dt.datetime:
    """``value`` (an ISO 8601 string or a datetime; no offset means UTC) as an aware UTC datetime.

    ValueError when it is neither: callers turn that into their own error (a bad command, not a granule...).
    """
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        when = dt.datetime.fromisoformat(value)
    else:
        raise ValueError(f"not an ISO 8601 time: {value!r}")
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


def naive(value: object) -> dt.datetime:
    """:func:`parse`, as a naive UTC datetime (the form of the times in SDR file names)."""
    return parse(value).replace(tzinfo=None)


def utc(value: object) -> dt.datetime | None:
    """:func:`parse`, or None when ``value`` is not an ISO 8601 time (state files read leniently)."""
    try:
        return parse(value)
    except ValueError:
        return None


def epoch(value: object) -> float | None:
    """Epoch seconds of an ISO 8601 time or of a number; None when it is neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    when = utc(value)
    return None if when is None else when.timestamp()


def stamp(when: dt.datetime | float, *, micro: bool = False) -> str:
    """``2026-12-02T16:05:00Z`` (``...00.123456Z`` with ``micro``) of a datetime (no offset means UTC) or epoch."""
    if isinstance(when, dt.datetime):
        when = parse(when)
    else:
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")
