"""`make run`: the whole suite in the foreground from the repo's files; Ctrl-C (SIGINT) stops every program, each by
its own stop signal (ours with exit status 0). The Ctrl-C comes once the suite is ready (`status --wait-ready`), not
merely RUNNING: RUNNING 0.4 s before it, task_broker and monitor once died of SIGTERM and the gatherers of SIGINT,
before their handlers were installed (tests/test_start_signals.py holds a stop at any moment of a start)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Suite
from tests.support import wait_until

pytestmark = pytest.mark.e2e
OURS = ("task_broker", "msg_publisher", "monitor", "cron", "log_forwarder")


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment contains ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_make_run_starts_everything_and_ctrl_c_stops_it(tmp_path):
    suite = Suite(tmp_path)  # for its free ports and supervisorctl; started here through make instead
    marker = f"VIIRS_BASE={suite.base}"
    proc = subprocess.Popen(["make", "-s", "run", f"VIIRS_BASE={suite.base}"], cwd=REPO, env=suite.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        suite.wait_ready(timeout=90)
        states = suite.programs()
        assert "msg_publisher" in states and "trollstalker" in states
        assert (suite.base / "sdr").is_dir() and (suite.base / "state").is_dir()
        assert len(processes_with(marker)) >= 10
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert took < 15
    wait_until(lambda: processes_with(marker) == [], 5, lambda: f"no process left (left: {processes_with(marker)})",
               0.1)
    log = (suite.base / "log" / "supervisord.log").read_text()
    assert "received SIGINT indicating exit request" in log
    for program in states:
        assert f"stopped: {program} (" in log  # stopped by its stop signal, not killed after a timeout
    assert "SIGKILL" not in log
    # our own programs exit 0 on the signal (trollstalker and the nameserver die of SIGTERM, their normal way), and
    # the gatherers on SIGINT
    for program in (*OURS, "segment_gatherer-tir", "segment_gatherer-btd"):
        assert f"stopped: {program} (exit status 0)" in log, log[-3000:]
    assert not list((suite.base / "run" / "ready").glob("*")), "a ready marker left behind"
