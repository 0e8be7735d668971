"""The live path carries a catch-up, and the first minute of a new install holds the guarantee of every other.

- A burst of 100 granules (1,400 files, as after an outage or at a first listing) renamed into sdr/ of a running
  suite: every gatherer works through trollstalker's messages in order, the last datasets a minute or more after their
  files, and the broker's reconciliation leaves them to the live path while it is still delivering: 0 granules
  recovered, 0 duplicates refused, every product granule in exactly one task. The time from each granule's last
  file to its task (the journal's put) is printed (p50, max).
- A new install whose task_broker comes up after the files of two granules are in sdr/ (its program not started
  with the rest): the ledger began at the suite's first start (``supervise``), so the reconciliation tasks them; the
  files that were in sdr/ before the suite's first start stay the archive.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from avoviirscollector.granules import GranuleKey, GranuleMap
from avoviirscollector.viirs import PLATFORMS, PRODUCTS, format_name, parse_name
from tests.broker_support import DeployedWorker, Status
from tests.e2e.chaos import ALL_SEGMENTS, account, complete_on_disk, log_tails
from tests.e2e.harness import CONF, Suite
from tests.support import percentile, wait_until

pytestmark = pytest.mark.e2e

BURST = 100
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def granule_names(platform: str, start: dt.datetime, orbit: int) -> list[str]:
    """A satellite-granule's 14 files in the order mirror_gina places them (geolocation first)."""
    end = start + dt.timedelta(seconds=85.4)
    created = start + dt.timedelta(minutes=9, microseconds=345678)
    return [format_name(segment, platform, start, end, orbit, created) for segment in ALL_SEGMENTS]


def burst_starts(count: int, first: dt.datetime) -> list[dt.datetime]:
    return [first + dt.timedelta(seconds=85.35 * n) for n in range(count)]


def tasked_at(journal: str) -> GranuleMap:
    """Granule key -> when the journal first held it in a task (the put record's time, epoch seconds)."""
    out = GranuleMap()
    for line in journal.splitlines():
        op = json.loads(line)
        if op.get("op") != "put":
            continue
        product = op["task"]["subject"].rsplit("/", 1)[-1]
        when = dt.datetime.fromisoformat(op["t"]).timestamp()
        for item in op["task"]["data"]["dataset"]:
            name = parse_name(item["uid"])
            key = GranuleKey(product, PLATFORMS[name.platform][0], name.start_time)
            out.setdefault(key, when)
    return out


def test_a_burst_of_a_hundred_granules_goes_through_the_live_path_alone(tmp_path):
    suite = Suite(tmp_path)
    with suite:
        suite.wait_flowing()
        workers = [DeployedWorker(suite.settings.task_port, suite.settings.update_port, [product], hang_after=120)
                   for product in PRODUCTS]
        for worker in workers:
            worker.start()
        try:
            before = counts_now(suite)  # a probe granule of wait_flowing that a gatherer missed is a real recovery
            completed = place_burst(suite, burst_starts(BURST, NOW - dt.timedelta(hours=3)))
            due = complete_on_disk(suite.settings.sdr_dir, since=NOW - dt.timedelta(hours=4))
            assert len(due) == BURST * len(PRODUCTS)

            def all_handed_out():
                return not account(due, [raw for w in workers for raw in list(w.received)]).lost

            wait_until(all_handed_out, 300, lambda: f"every burst granule handed out\n{log_tails(suite)}", every=1)
            after = counts_now(suite)
            journal = (suite.base / "state" / "task_queue.journal").read_text()  # before the stop compacts it
        finally:
            for worker in workers:
                worker.stop()
    result = account(due, [raw for w in workers for raw in w.received])
    broker_log = (suite.base / "log" / "task_broker.log").read_text()
    recovered = [line for line in re.findall(r".*recovered granule.*", broker_log) if " 2001-01-01T" not in line]
    assert not recovered, recovered[:5]
    assert after == before, (before, after)  # 0 recovered, 0 duplicates during the burst
    assert result.ok and not result.twice and not result.problems, result.summary()
    report_latency(completed, tasked_at(journal))


def counts_now(suite: Suite) -> tuple[int, int]:
    """(recovered, duplicates refused) in the last 24 h, from task_broker's status."""
    with Status(suite.settings.update_port) as status:
        got = status.wait_for(lambda st: "recovered (24 h)" in st, 10)
    return got["recovered (24 h)"], got["duplicate (24 h)"]


def place_burst(suite: Suite, starts: list[dt.datetime]) -> dict[tuple[str, dt.datetime], float]:
    """Rename every file of the granules into sdr/ as fast as possible; (platform, start) -> when its last file
    was placed (epoch seconds)."""
    completed = {}
    for n, start in enumerate(starts):
        for name in granule_names("j01", start, 40000 + n // 60):
            suite.place(name)
        completed[("NOAA-20", start)] = time.time()
    return completed


def report_latency(completed: dict, tasked: GranuleMap) -> None:
    waits = [tasked[GranuleKey(product, platform, start)] - placed
             for (platform, start), placed in completed.items() for product in PRODUCTS]
    print(f"\nburst of {len(completed)} granules ({len(waits)} product granules): last file -> task "
          f"p50 {percentile(waits, 50):.1f} s, max {max(waits):.1f} s")


def late_broker_conf(folder: Path) -> Path:
    """The repo's supervisord.conf with task_broker not started with the rest (started by the test later)."""
    text = CONF.read_text()
    text, count = re.subn(r"(\[program:task_broker\]\n)", r"\1autostart=false\n", text)
    assert count == 1
    conf = folder / "supervisord.conf"
    conf.write_text(text)
    shutil.copy(CONF.parent / "crontab", folder / "crontab")  # the cron program runs %(here)s/crontab
    return conf


def test_granules_placed_before_task_brokers_first_start_are_tasked(tmp_path):
    suite = Suite(tmp_path, conf=late_broker_conf(tmp_path))
    archive_start = NOW - dt.timedelta(hours=2)
    suite.settings.sdr_dir.mkdir(parents=True)
    for name in granule_names("npp", archive_start, 70000):  # before the suite's first start: the archive
        (suite.settings.sdr_dir / name).write_bytes(b"x")
    try:
        suite.start(wait=False)
        def all_but_the_broker() -> bool:
            states = suite.programs()
            return "task_broker" in states and all(state == "RUNNING" for name, (state, _) in states.items()
                                                   if name != "task_broker")

        wait_until(all_but_the_broker, 90, "every program but task_broker running")
        assert suite.programs()["task_broker"][0] == "STOPPED"
        suite.wait_flowing()  # the bus carries granules through to msg_publisher: the gatherers listen
        starts = burst_starts(2, NOW - dt.timedelta(hours=1))
        place_burst(suite, starts)
        suite.supervisorctl("start", "task_broker")
        wanted = {GranuleKey(product, "NOAA-20", start) for product in PRODUCTS for start in starts}
        worker = DeployedWorker(suite.settings.task_port, suite.settings.update_port, list(PRODUCTS), hang_after=60)
        worker.start()
        try:
            wait_until(lambda: not account(wanted, list(worker.received)).lost, 90,
                       lambda: f"the granules placed before task_broker came up handed out\n{log_tails(suite)}")
            time.sleep(12)  # a further reconciliation period and its grace: the archive must not come
        finally:
            worker.stop()
    finally:
        suite.stop()
    result = account(complete_on_disk(suite.settings.sdr_dir), list(worker.received))
    assert result.lost == {GranuleKey(product, "Suomi-NPP", archive_start) for product in PRODUCTS}  # the archive
    assert not result.twice, result.summary()
    log = (suite.base / "log" / "task_broker.log").read_text()
    assert "completed while task_broker was not following the bus" in log
    assert "no hand-out ledger" not in log
