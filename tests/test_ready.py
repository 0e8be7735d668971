"""Ready markers (ready.py), the two stages of the stop signals (signals.py) and status's readiness lines, in this
process; tests/test_start_signals.py sends the signals to the real programs."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest

from avoviirscollector import signals
from avoviirscollector.readiness import Outcome
from avoviirscollector.ready import ReadyMarker, marker_path, marker_pid, read_markers
from avoviirscollector.status import render_ready


def test_a_marker_is_written_whole_and_removed_by_its_own_pid_only(tmp_path):
    with ReadyMarker(tmp_path, "task_broker") as marker:
        assert not marker_path(tmp_path, "task_broker").exists()
        marker.set()
        data = json.loads(marker_path(tmp_path, "task_broker").read_text())
        assert data["pid"] == os.getpid() and data["since"].endswith("Z")
        assert read_markers(tmp_path) == {"task_broker": os.getpid()}
        assert [p.name for p in marker.path.parent.iterdir()] == ["task_broker.json"]  # no temp file left
    assert read_markers(tmp_path) == {}
    # a newer run's marker (another pid) is not removed by the older run's stop
    newer = ReadyMarker(tmp_path, "monitor", pid=os.getpid() + 1)
    newer.set()
    ReadyMarker(tmp_path, "monitor").clear()
    assert marker_pid(marker_path(tmp_path, "monitor")) == os.getpid() + 1


def test_foreign_files_are_not_markers(tmp_path):
    folder = marker_path(tmp_path, "x").parent
    folder.mkdir(parents=True)
    (folder / "a.json").write_text("not json")
    (folder / "b.json").write_text('{"pid": "12"}')
    (folder / "c.json").write_text('{"pid": true}')
    (folder / "d.json").write_text('{"pid": 12}')
    assert read_markers(tmp_path) == {"d": 12}
    assert read_markers(tmp_path / "nowhere") == {}


def test_a_marker_that_cannot_be_written_is_a_warning_not_a_stop(tmp_path, caplog):
    (tmp_path / "run").write_text("a file where the folder should be")
    marker = ReadyMarker(tmp_path, "msg_publisher")
    with caplog.at_level(logging.WARNING, logger="ready"):
        marker.set()
    assert not marker.is_set and "cannot write the ready marker" in caplog.text
    marker.clear()


@pytest.fixture
def own_handlers():
    """This process's SIGTERM and SIGINT handlers and the held stops, put back after the test."""
    saved = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        signals._requested.clear()


def test_a_stop_held_before_the_program_has_handlers_is_handed_to_them(own_handlers):
    signals.hold_stop_signals()
    assert not signals.stop_requested()
    os.kill(os.getpid(), signal.SIGTERM)  # during the imports: remembered, not death
    assert signals.stop_requested()
    stops = []
    signals.stop_on_signals(lambda: stops.append("stop"))
    assert stops == ["stop"]  # carried over at once
    os.kill(os.getpid(), signal.SIGINT)
    assert stops == ["stop", "stop"]


def test_without_a_held_stop_the_handlers_wait_for_one(own_handlers):
    signals.hold_stop_signals()
    stops = []
    signals.stop_on_signals(lambda: stops.append("stop"))
    assert stops == []
    signals.restore_default_signals()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_status_says_ready_in_one_line_or_why_not_one_reason_a_line():
    assert render_ready(Outcome(True, 0.4321, [])) == "ready in 0.43 s\n"
    text = render_ready(Outcome(False, 90.02, ["segment_gatherer-btd is STOPPED", "monitor has not said it is ready"]))
    assert text.splitlines() == ["not ready after 90.0 s", "  segment_gatherer-btd is STOPPED",
                                 "  monitor has not said it is ready"]
