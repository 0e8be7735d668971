"""Fixtures for end-to-end tests: the supervised suite, always stopped."""

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
