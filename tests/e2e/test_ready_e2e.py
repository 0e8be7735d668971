"""`avoviirscollector status --wait-ready` against the real suite: it answers at once on a ready suite, says
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
    done, took = wait_ready(suite, 10)
    assert done.returncode == 0 and re.fullmatch(r"ready in \d+\.\d\d s\n", done.stdout), done.stdout + done.stderr
    print(f"\nstatus --wait-ready on a ready suite: {done.stdout.strip()} ({took:.2f} s the whole command)")
    # at once: the two reads of the bus connections a quarter second apart, not a wait for something to happen
    # (how fast on a quiet host is a figure, not a test: about 0.35 s of wait, 0.5-0.6 s the whole command)
    assert float(done.stdout.split()[2]) < 3.0, done.stdout
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
    print(f"cron waited {waited.group(1)} s")
