"""Legacy encoding: what leaves the suite decodes with posttroll 1.5 and today's posttroll."""

from __future__ import annotations

import datetime as dt

import pytest
from posttroll.message import Message

from avoviirscollector.bus import encode_legacy, legacy_message, naive_utc
from tests.legacy import legacy_available, legacy_decode, legacy_rule_violations

AK = dt.timezone(dt.timedelta(hours=-9))


def test_naive_utc_converts_instead_of_dropping_the_zone():
    assert naive_utc(dt.datetime(2026, 1, 1, 3, 0, tzinfo=AK)) == dt.datetime(2026, 1, 1, 12, 0)
    assert naive_utc(dt.datetime(2026, 1, 1, 3, 0)) == dt.datetime(2026, 1, 1, 3, 0)


def test_legacy_message_keeps_everything_but_the_zones():
    data = {"start_time": dt.datetime(2026, 1, 1, 3, 0, 0, 800000, tzinfo=AK), "orbit_number": 7,
            "dataset": [{"uid": "a", "when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}], "sensor": ["viirs"]}
    original = Message("/AVO/viirs/granule/tir", "dataset", data)
    raw = encode_legacy(original)
    assert legacy_rule_violations(raw) == []
    back = Message.decode(raw)
    assert back.version == "v1.01" and back.subject == original.subject and back.sender == original.sender
    assert back.data["start_time"] == dt.datetime(2026, 1, 1, 12, 0, 0, 800000)
    assert back.data["dataset"][0]["when"] == dt.datetime(2026, 1, 1)
    assert back.time == naive_utc(original.time)
    assert legacy_message(original).data["orbit_number"] == 7


def test_rule_checker_catches_what_posttroll_1_5_refuses():
    aware = Message("/x", "file", {"t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}).encode()
    problems = legacy_rule_violations(aware)
    assert any("version v1.2" in p for p in problems) and any("datetime data.t" in p for p in problems)


def test_decodes_with_posttroll_1_5():
    if not legacy_available():
        pytest.skip("no .venv-legacy (needs a Python < 3.12; make test builds it)")
    raws = [encode_legacy(Message("/AVO/viirs/sdr", "file", {"start_time": dt.datetime(2026, 1, 1, 3, tzinfo=AK)})),
            encode_legacy(Message("/AVO/viirs/granule/dnb", "dataset", {"dataset": []}))]
    decoded = legacy_decode(raws)
    assert decoded["posttroll"].startswith("1.5")
    assert decoded["messages"][0]["data"]["start_time"] == {"__datetime__": "2026-01-01T12:00:00", "aware": False}
    assert decoded["messages"][1]["subject"] == "/AVO/viirs/granule/dnb"
