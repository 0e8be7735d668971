"""Fixtures for end-to-end tests: the supervised suite, always stopped; the suite against the GINA double. Every
test here fails at once outside a loopback-only network namespace (run them with scripts/loopback-netns, as make
test does): posttroll would advertise, and multicast on, a real interface."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Suite


@pytest.fixture(autouse=True)
def _every_test_loopback_only(loopback_only):
    pass


@pytest.fixture
def suite(tmp_path):
    with Suite(tmp_path) as running:
        yield running


@pytest.fixture
def mirrored_suite(tmp_path, double):
    """The suite with ``GINA_URL`` on the ``double`` fixture, its cron stopped: the tests start each mirror_gina run
    themselves, as cron would (the suite's own cron, which runs one at every minute against the same double, would
    race them: fetch a granule between its listing and a fault the test sets, say)."""
    with Suite(tmp_path, extra_env={"GINA_URL": double.url}) as running:
        running.supervisorctl("stop", "cron")
        yield running
