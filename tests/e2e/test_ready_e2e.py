"""`avoviirscollector status --wait-ready` against the real suite: it answers within a second on a ready suite, says
a stopped gatherer keeps the suite from being ready (naming it), and says ready again once it is back; cron started
its jobs only once the rest was ready, and said after how long."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.e2e.harness import BIN

pytestmark = pytest.mark.e2e


def wait_ready(suite, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    done = subprocess.run([str(BIN / "avoviirscollector"), "status", "--wait-ready", "--timeout", str(timeout)],
                          env=suite.env, capture_output=True, text=True, timeout=timeout + 30)
    return done, time.monotonic() - began


def test_wait_ready_answers_at_once_names_a_stopped_gatherer_and_sees_it_back(suite):
    tries = []
    while len(tries) < 2 and min(tries, default=9.0) >= 1.0:  # a second try when the host was busy the first time
        done, took = wait_ready(suite, 10)
        assert done.returncode == 0 and re.fullmatch(r"ready in \d+\.\d\d s\n", done.stdout), done.stdout + done.stderr
        tries.append(took)
    assert min(tries) < 1.0, f"status --wait-ready took {tries} s (the whole command) on a ready suite"
    suite.supervisorctl("stop", "gatherers:segment_gatherer-btd")
    done, _ = wait_ready(suite, 2)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("not ready after") and "  segment_gatherer-btd is STOPPED" in lines[1:], done.stdout
    suite.supervisorctl("start", "gatherers:segment_gatherer-btd")
    done, _ = wait_ready(suite, 60)
    assert done.returncode == 0, done.stdout
    cron_log = (suite.base / "log" / "cron.log").read_text()
    waited = re.search(r"the rest of the suite is ready after (\d+\.\d) s: starting the jobs", cron_log)
    assert waited, cron_log
    assert cron_log.index(waited.group(0)) < cron_log.index("starting at start: tle_refresh")
    print(f"status --wait-ready on a ready suite: {[round(t, 2) for t in tries]} s; cron waited {waited.group(1)} s")
