"""Shared test helpers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def elements(tmp_path):
    """An elements/ folder holding the test TLE set."""
    from tests.broker_support import TLE_FILE

    path = tmp_path / "elements"
    path.mkdir()
    shutil.copy(TLE_FILE, path / "weather.txt")
    return path


@pytest.fixture(scope="module")
def nameserver(tmp_path_factory):
    """posttroll's nameserver (no multicast) as a process, for a module's tests."""
    from tests.broker_support import Nameserver

    ns = Nameserver(tmp_path_factory.mktemp("nameserver") / "nameserver.log")
    try:
        yield ns
    finally:
        ns.stop()
