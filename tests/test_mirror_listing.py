"""Listing cost (issue 9, item 11): the whole backfill window is listed at start and at most once an hour; the runs
between ask only for today (and yesterday too near midnight UTC); a file listed late for yesterday's date is
still fetched within the hour."""

from __future__ import annotations

import datetime as dt

import pytest

from avoviirscollector.mirror.gina import listing_days
from tests.gina_double import GinaDouble
from tests.mirror_support import add_pass, run_mirror, settings_for

TODAY = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def double(tmp_path):
    with GinaDouble(tmp_path / "gina") as d:
        yield d


def test_listing_days():
    assert listing_days(TODAY, None) is None  # never listed in full: the whole window
    assert listing_days(TODAY, TODAY - dt.timedelta(minutes=59)) == 1
    assert listing_days(TODAY, TODAY - dt.timedelta(minutes=60)) is None
    near_midnight = TODAY.replace(hour=1)
    assert listing_days(near_midnight, near_midnight - dt.timedelta(minutes=5)) == 2
    assert listing_days(TODAY, TODAY + dt.timedelta(minutes=5)) is None  # the clock went back: list in full


def test_late_file_for_yesterday_is_fetched_within_the_hour(tmp_path, double):
    naive = TODAY.replace(tzinfo=None)
    add_pass(double, granules=1, segments=("GITCO",), start=naive - dt.timedelta(hours=2))
    settings = settings_for(tmp_path / "viirs", double, GINA_BACKFILL_DAYS=2)
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
        assert double.listing_requests[-1]["start_date"] == [TODAY.date().isoformat()]  # today only
        assert not log.having(late.name)
    at[0] = TODAY + dt.timedelta(minutes=60)
    status, log = run_mirror(settings, ["snpp-imagery"], clock=clock)
    assert double.listing_requests[-1]["start_date"] == full["start_date"]  # the hourly full listing
    assert log.having(f"placed {late.name}")
