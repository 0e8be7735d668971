"""A month on disk costs what an empty disk costs (issue 16), on the real suite: the same suite once with an empty
sdr/ and once with an archive behind it (tests/archive.py: 50,000 files of real names, older than the suite's first
start), measured in one test: the idle CPU of task_broker and monitor, their memory, monitor's / and /metrics,
``status`` and ``status --quick``, the first granule after the start and a later one through the live path (a
``dataset`` from the gatherer, no "recovered granule"), and task_broker answering soon after the start.

The full table, with 600,000 files, is ``bench/bench_scale.py``; this test holds what is not noise: the archive may
cost a little more, not the many times more a rescan of it would.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from avoviirscollector.viirs import PRODUCTS, format_name
from tests import archive
from tests.broker_support import DeployedWorker
from tests.e2e.chaos import read_task, rss_kib
from tests.e2e.harness import BIN, Suite
from tests.support import ask, percentile, seconds_until

pytestmark = pytest.mark.e2e

ARCHIVE = int(os.environ.get("AVO_TEST_SCALE_ARCHIVE", "50000"))
IDLE = 30.0  # seconds of idle CPU measured
WATCHED = ("task_broker", "monitor")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answers_within(port: int, timeout: float) -> float | None:
    """Seconds until task_broker answers a request on ``port`` (None: not within ``timeout``)."""
    body = json.dumps({"desired products": ["tir"], "just testing": True}).encode()
    return seconds_until(lambda: ask(port, body, 0.25) is not None, timeout)


def full_pass_done(suite: Suite, program: str) -> bool:
    path = suite.base / "log" / f"{program}.log"
    return path.exists() and "sdr/: full pass (start)" in path.read_text(errors="replace")


def place_granule(suite: Suite, start: dt.datetime, orbit: int) -> None:
    end, created = start + dt.timedelta(seconds=85.4), start + dt.timedelta(minutes=9)
    for segment in sorted({s for segs in PRODUCTS.values() for s in segs}):
        suite.place(format_name(segment, "j01", start, end, orbit, created))


def measure(tmp_path: Path, files: int) -> dict:
    tmp_path.mkdir()
    suite = Suite(tmp_path)
    made = archive.fill(suite.settings.sdr_dir, files) if files else 0
    figures: dict = {"files": made}
    answered: list[float | None] = []
    asking = threading.Thread(target=lambda: answered.append(answers_within(suite.settings.task_port, 60)))
    asking.start()  # from the start of supervisord on: the broker must answer soon, whatever sdr/ holds
    try:
        suite.start(timeout=60)
        asking.join(60)
        figures["answers"] = answered[0] if answered else None
        # measured either way: a full pass still running after a minute shows in the figures below
        seconds_until(lambda: all(full_pass_done(suite, p) for p in WATCHED), 60, every=0.2)
        suite.wait_flowing()
        worker = DeployedWorker(suite.settings.task_port, suite.settings.update_port, list(PRODUCTS), hang_after=60)
        worker.start()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(minutes=30)
        figures["live"] = [handed_within(suite, worker, now + dt.timedelta(seconds=85.4 * i), 44000 + i)
                           for i in range(2)]
        time.sleep(5)  # what the granules set going ends before the idle measurement starts
        pids = {program: suite.pid(program) for program in WATCHED}
        before = {program: cpu_seconds(pid) for program, pid in pids.items()}
        time.sleep(IDLE)  # the measurement: CPU time spent idle over IDLE seconds
        figures["cpu"] = {program: cpu_seconds(pid) - before[program] for program, pid in pids.items()}
        figures["rss"] = {program: rss_kib(pid) / 1024 for program, pid in pids.items()}
        url = f"http://127.0.0.1:{suite.settings.monitor_port}"
        figures["page"] = {path: percentile(timed(url + path, 15), 99) for path in ("/", "/metrics")}
        # the fastest of three: the archive's cost, not the busy host's (a median of three saw 1.6 s against 0.5 s)
        figures["status"] = {" ".join(args) or "status": min(status_seconds(suite, *args) for _ in range(3))
                             for args in ((), ("--quick",))}
        worker.stopping.set()
        worker.join(5)
        figures["recovered"] = (suite.base / "log" / "task_broker.log").read_text().count("recovered granule j01")
    finally:
        suite.stop()
    return figures


def handed_within(suite: Suite, worker: DeployedWorker, start: dt.datetime, orbit: int) -> float | None:
    """Seconds from placing a granule's files to its last product's task reaching the worker (None: 60 s passed)."""
    placed = time.monotonic()
    place_granule(suite, start, orbit)
    handed = seconds_until(lambda: {task.product for task in map(read_task, list(worker.received))
                                    if task.orbit == orbit} == set(PRODUCTS), 60 - (time.monotonic() - placed), 0.1)
    return None if handed is None else time.monotonic() - placed


def timed(url: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        began = time.perf_counter()
        urllib.request.urlopen(url, timeout=30).read()
        out.append(time.perf_counter() - began)
    return out


def status_seconds(suite: Suite, *args: str) -> float:
    began = time.monotonic()
    subprocess.run([str(BIN / "avoviirscollector"), "status", *args], env=suite.env, capture_output=True, timeout=30)
    return time.monotonic() - began


def test_an_archive_behind_the_suite_costs_next_to_nothing(tmp_path):
    # short folder names: supervisord's socket path (run/supervisor.sock below them) must fit AF_UNIX's 108 bytes
    empty = measure(tmp_path / "e", 0)
    full = measure(tmp_path / "a", ARCHIVE)
    print(f"\nempty sdr/: {empty}\n{full['files']} files: {full}")
    for figures in (empty, full):
        assert all(seconds is not None and seconds < 10 for seconds in figures["live"]), figures["live"]
        assert figures["recovered"] == 0, "a new granule went through the reconciliation, not the live path"
        assert figures["answers"] is not None and figures["answers"] < 10, figures["answers"]
        assert max(figures["page"].values()) < 2.0, figures["page"]  # the quiet figures (~0.03 s): bench_scale
        assert max(figures["status"].values()) < 10.0, figures["status"]  # (~0.15 s)
    for kind in ("page", "status"):  # on a busy host absolute times say little: the archive against the empty sdr/
        for what, seconds in full[kind].items():
            assert seconds <= 2 * empty[kind][what] + 0.5, (kind, what, empty[kind], full[kind])
    for program in WATCHED:
        # a rescan of the archive every 5 s costs several times the empty case; its window does not
        assert full["cpu"][program] <= 1.5 * empty["cpu"][program] + 0.5, (program, empty["cpu"], full["cpu"])
        assert full["rss"][program] <= empty["rss"][program] + 50, (program, empty["rss"], full["rss"])
    assert full["live"][0] <= 2 * empty["live"][0] + 3 and full["live"][1] <= 2 * empty["live"][1] + 3
