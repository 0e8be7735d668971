"""The pass-direction helper process: its line protocol, and the broker's client that restarts it."""

from __future__ import annotations

import io
import json

from avoviirscollector.broker.direction import serve
from avoviirscollector.broker.direction_client import DirectionClient
from tests.broker_support import ASCENDING_TIME, DESCENDING_TIME


def test_protocol_one_answer_per_request_line_even_for_bad_ones(elements):
    requests = io.StringIO("\n".join([
        json.dumps({"platform_name": "NOAA-20", "start_time": ASCENDING_TIME.isoformat(), "dataset": []}),
        "not json",
        json.dumps({"platform_name": "NOAA-20"}),
        json.dumps({"platform_name": "Suomi-NPP", "start_time": DESCENDING_TIME.isoformat()}),
    ]) + "\n")
    replies = io.StringIO()
    serve(elements, requests, replies)
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert [(a["value"], a["method"]) for a in answers] == [
        ("ascending", "tle"), ("unknown", "none"), ("unknown", "none"), ("descending", "tle")]
    assert answers[1]["detail"].startswith("error: ") and "start_time" in answers[2]["detail"]


def test_helper_process_answers_and_comes_back_after_being_killed_or_too_slow(elements):
    helper = DirectionClient(elements)
    try:
        up = helper.find("NOAA-21", ASCENDING_TIME, [])
        assert (up.value, up.method) == ("ascending", "tle")
        assert helper.proc.args[1:3] == ["-m", "avoviirscollector.broker.direction"]
        first = helper.proc.pid
        helper.proc.kill()
        helper.proc.wait()
        down = helper.find("NOAA-21", DESCENDING_TIME, [])
        assert (down.value, down.method) == ("descending", "tle")
        assert helper.proc.pid != first
        helper.timeout = 0.001  # a fresh helper cannot answer that fast (it has to start python first)
        helper.close()
        slow = helper.find("NOAA-21", DESCENDING_TIME, [])
        assert (slow.value, slow.method) == ("unknown", "none") and "no answer in" in slow.detail
        assert helper.proc is None
        helper.timeout = 30
        assert helper.find("NOAA-21", DESCENDING_TIME, []).method == "tle"
    finally:
        helper.close()
    assert helper.proc is None
