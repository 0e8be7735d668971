"""Fixtures for end-to-end tests: the supervised suite, always stopped; the suite against the GINA double."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Suite, only_loopback


@pytest.fixture
def suite(tmp_path):
    if not only_loopback():
        pytest.fail("end-to-end tests must run in a loopback-only network namespace: run them with "
                    "scripts/loopback-netns (make test does)")
    s = Suite(tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def mirrored_suite(tmp_path, double):
    """The suite with ``GINA_URL`` on the test module's ``double`` fixture, its cron stopped: the tests start each
    mirror_gina run themselves, as cron would (the suite's own cron, which runs one at every minute against the same
    double, would race them: fetch a granule between its listing and a fault the test sets, say)."""
    if not only_loopback():
        pytest.fail("end-to-end tests must run in a loopback-only network namespace (scripts/loopback-netns)")
    s = Suite(tmp_path, extra_env={"GINA_URL": double.url})
    try:
        s.start()
        s.supervisorctl("stop", "cron")
        yield s
    finally:
        s.stop()
