"""End to end (issue 9, item 9): the supervised suite fetches the TLE set at start, without waiting for the
hourly job, and without its start waiting for the download (a slow TLE server here)."""

from __future__ import annotations

import time

import pytest

from tests.broker_support import TLE_FILE
from tests.e2e.harness import Suite
from tests.support import wait_until
from tests.test_tle import Celestrak

pytestmark = pytest.mark.e2e


def test_tles_are_fetched_at_start_without_blocking_it(tmp_path):
    server = Celestrak()
    server.body = TLE_FILE.read_bytes()
    server.delay = 6.0
    try:
        suite = Suite(tmp_path, extra_env={"TLE_URL": server.url})
        target = suite.base / "elements" / "tle.txt"
        t0 = time.monotonic()
        with suite:
            running = time.monotonic() - t0
            assert not target.exists()  # every program is up while the download is still waiting
            wait_until(target.exists, 30, lambda: "the TLEs fetched; cron.log:\n"
                       + (suite.base / "log" / "cron.log").read_text(), 0.2)
            fetched = time.monotonic() - t0
            assert target.read_bytes() == TLE_FILE.read_bytes()
        # one fetch at start; the crontab's hourly tle_refresh adds one when the test runs across its minute
        hourly = (suite.base / "log" / "cron.log").read_text().count("starting job: tle_refresh")
        assert server.requests == 1 + hourly
        assert running < fetched
    finally:
        server.close()
