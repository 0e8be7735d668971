"""Listing cost (issue 9, item 11; issue 14): the whole backfill window is listed at start and at most once an hour;
the listings between ask only for what can have changed: the last hour's granules by minute bounds (or, with
polling off, today, and yesterday too near midnight UTC); a file listed late for yesterday's date is still fetched
within the hour."""

from __future__ import annotations

import datetime as dt

import pytest

from avoviirscollector.mirror.window import LOOKBACK, listing_window
from tests.mirror_support import add_pass, run_mirror, settings_for

TODAY = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def test_listing_window():
    day = TODAY.date()
    full = listing_window(TODAY, None, 2, poll=True)  # never listed in full: the whole window, by days
    assert full.full and (full.start, full.end) == (day - dt.timedelta(days=1), day + dt.timedelta(days=1))
    short = listing_window(TODAY + dt.timedelta(seconds=42), TODAY - dt.timedelta(minutes=59), 2, poll=True)
    assert not short.full and short.bounds() == [("start_date", f"{TODAY - LOOKBACK:%Y-%m-%d %H%M}"),
                                                 ("end_date", f"{TODAY + dt.timedelta(minutes=1):%Y-%m-%d %H%M}")]
    assert listing_window(TODAY, TODAY - dt.timedelta(minutes=60), 2, poll=True).full
    assert listing_window(TODAY, TODAY + dt.timedelta(minutes=5), 2, poll=True).full  # the clock went back
    days = listing_window(TODAY, TODAY - dt.timedelta(minutes=59), 2, poll=False)  # the original's way
    assert not days.full and (days.start, days.end) == (day, day + dt.timedelta(days=1))
    near_midnight = TODAY.replace(hour=1)
    assert listing_window(near_midnight, near_midnight - dt.timedelta(minutes=5), 2, poll=False).start == \
        day - dt.timedelta(days=1)


@pytest.mark.parametrize("poll", [0, 15])
def test_late_file_for_yesterday_is_fetched_within_the_hour(tmp_path, double, poll):
    naive = TODAY.replace(tzinfo=None)
    add_pass(double, granules=1, segments=("GITCO",), start=naive - dt.timedelta(hours=2))
    settings = settings_for(tmp_path / "viirs", double, GINA_BACKFILL_DAYS=2, MIRROR_POLL_SECONDS=poll)
    at = [TODAY]

    def clock():
        return at[0]

    assert run_mirror(settings, ["snpp-imagery"], clock=clock)[0] == 0
    full = double.listing_requests[-1]
    assert full["start_date"] == [(TODAY.date() - dt.timedelta(days=1)).isoformat()]
    assert full["end_date"] == [(TODAY.date() + dt.timedelta(days=1)).isoformat()]

    (late,) = add_pass(double, granules=1, segments=("SVI05",), start=naive - dt.timedelta(hours=20))  # yesterday
    for minutes in (1, 30, 59):
        at[0] = TODAY + dt.timedelta(minutes=minutes)
        status, log = run_mirror(settings, ["snpp-imagery"], clock=clock)
        assert status == 0
        between = f"{at[0] - LOOKBACK:%Y-%m-%d %H%M}" if poll else TODAY.date().isoformat()  # what can have changed
        assert double.listing_requests[-1]["start_date"] == [between]
        assert not log.having(late.name)
    at[0] = TODAY + dt.timedelta(minutes=60)
    status, log = run_mirror(settings, ["snpp-imagery"], clock=clock)
    assert double.listing_requests[-1]["start_date"] == full["start_date"]  # the hourly full listing
    assert log.having(f"placed {late.name}")
