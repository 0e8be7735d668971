"""Fixtures for end-to-end tests: the supervised suite, always stopped; the suite against the GINA double; the pair's
lab of network namespaces (pair.py), always taken down. Every
test here fails at once outside a loopback-only network namespace (run them with scripts/loopback-netns, as make
test does): posttroll would advertise, and multicast on, a real interface."""

from __future__ import annotations

import os

import pytest

from tests.e2e.harness import Suite
from tests.e2e.pair import PairLab, missing_tools


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


@pytest.fixture
def lab(tmp_path):
    """Two hosts, a switch with the witness and two workers, made of network namespaces (pair.py); skipped, saying
    why, without root or the tools."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces, veth pairs and a bridge")
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/test-tools installs keepalived and iputils-ping with "
                    f"apt-get for make test)")
    with PairLab(tmp_path) as made:
        yield made
