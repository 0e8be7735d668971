"""No granule lost (SPEC section 10, issue 8) on the supervised suite: a btd granule of Suomi-NPP whose files
complete in sdr/ while the bus cannot carry it to the broker is still handed out, in exactly one task, to a worker
written like the deployed one; and never a second time, even after a further reconciliation period.

The cases: (A) trollstalker stopped while the files arrive; (B) segment_gatherer-btd SIGKILLed between the second
and the third file; (C) task_broker stopped while the granule completes; (D) the whole suite stopped (SIGTERM to
supervisord) and started again between the second and the third file; (late) the third file arriving after the
gatherer's slot timed out. The gatherers' slot timeout is 20 s here (``short_slot_etc``), 600 s in production.

Every case runs with months of files behind it (``tests/archive.py``: ``AVO_TEST_ARCHIVE`` files in sdr/ before the
suite's first start, 100,000 by default; 0 for none): the guarantees must not depend on how many files sdr/ holds.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest

from avoviirscollector.viirs import PLATFORMS, PRODUCTS, format_name
from tests import archive
from tests.broker_support import DeployedWorker, Status
from tests.e2e.chaos import account, complete_on_disk, describe, log_tails, read_task
from tests.e2e.harness import Suite, short_slot_etc
from tests.support import wait_until

pytestmark = pytest.mark.e2e

SLOT_TIMEOUT = 20  # seconds: the gatherers' timeliness in these tests
RECOVERY_BOUND = 120  # seconds from completion to hand-out before the test fails (the goal is ~40 s)
FURTHER_PERIOD = 15  # seconds: past further reconciliation periods (every 5 s), nothing more may come
#: start times of their own per test, recent (inside RECOVERY_HOURS), on the 0.1 s grid of the file names
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
CASES = {"A": 0, "B": 1, "C": 2, "D": 3, "late": 4}
ARCHIVE_FILES = int(os.environ.get("AVO_TEST_ARCHIVE", "100000"))


class Granule:
    """One btd granule of Suomi-NPP: its three file names in arrival order (geolocation first) and its key. Its
    files come from two receiving stations: the last one is the second station's (its start 0.1 s later, made 3.5
    minutes later), as when mirror_gina fetched each file from the station that listed it first."""

    def __init__(self, case: str):
        index = CASES[case]
        self.start = NOW - dt.timedelta(minutes=50) + dt.timedelta(minutes=2 * index, seconds=12.3)
        self.orbit = 61001 + index
        end = self.start + dt.timedelta(seconds=85.4)
        created = self.start + dt.timedelta(minutes=9, microseconds=123456)
        last = PRODUCTS["btd"][-1]
        self.names = [format_name(seg, "npp", self.start, end, self.orbit, created) for seg in PRODUCTS["btd"][:-1]]
        self.names.append(format_name(last, "npp", self.start + dt.timedelta(seconds=0.1), end, self.orbit,
                                      created + dt.timedelta(minutes=3.5)))
        self.key = ("btd", PLATFORMS["npp"][0], self.start)


@pytest.fixture
def suite(tmp_path):
    s = Suite(tmp_path, extra_env={"AVO_ETC": str(short_slot_etc(tmp_path / "etc", SLOT_TIMEOUT))})
    if ARCHIVE_FILES:
        began = time.monotonic()
        made = archive.fill(s.settings.sdr_dir, ARCHIVE_FILES)
        print(f"\narchive: {made} files in sdr/ ({time.monotonic() - began:.1f} s to make)")
    with s:
        yield s


class Workers:
    """Deployed-style workers (blocking REQ, ask while ``queue length > 0``) for every product, running through the
    whole test as in the field; the probe granules' tasks of ``wait_flowing`` are drained by them too."""

    def __init__(self, suite: Suite, count: int = 2):
        self.suite = suite
        s = suite.settings
        self.workers = [DeployedWorker(s.task_port, s.update_port, list(PRODUCTS), hang_after=60) for _ in range(count)]
        for worker in self.workers:
            worker.start()

    @property
    def raws(self) -> list[bytes]:
        return [raw for worker in self.workers for raw in list(worker.received)]

    def tasks_with(self, key) -> list:
        return [task for task in map(read_task, self.raws) if key in task.granules]

    def drained(self, timeout: float = 30) -> None:
        """The queue is empty (the probe granules' tasks taken) and stays so for a second."""
        with Status(self.suite.settings.update_port) as status:
            status.wait_for(lambda st: st["queue length"] == 0, timeout)
        time.sleep(1.0)  # a task handed out late (on a stale status) would come now

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def workers(suite):
    """Workers draining every product's tasks, started once the bus flows and the probe granules' tasks are taken;
    always stopped."""
    suite.wait_flowing()
    drainers = Workers(suite)
    try:
        drainers.drained()
        yield drainers
    finally:
        drainers.stop()


def arrive(suite: Suite, names: list[str]) -> None:
    """Place the files one after another, 0.3 s apart: each its own message to the gatherers, as in the field."""
    for name in names:
        suite.place(name)
        time.sleep(0.3)


def two_files_held(suite: Suite, granule: Granule) -> None:
    """The granule's first two files placed, and a second for the gatherer to hold its slot with them."""
    arrive(suite, granule.names[:2])
    time.sleep(1.0)  # the gatherer takes both into the slot


def status_now(suite: Suite) -> dict:
    with Status(suite.settings.update_port) as status:
        return status.next(5) or {}


def exactly_once(suite: Suite, workers: Workers, granule: Granule, completed: float) -> None:
    """The granule is handed out within RECOVERY_BOUND s of ``completed`` (monotonic), in exactly one task, whole,
    and nothing more comes after a further reconciliation period."""

    def handed_out() -> bool:
        assert not any(w.hung for w in workers.workers), f"a worker got no reply\n{log_tails(suite)}"
        return bool(workers.tasks_with(granule.key))

    wait_until(handed_out, completed + RECOVERY_BOUND - time.monotonic(), lambda: (
        f"granule {describe(granule.key)} complete in sdr/ for {time.monotonic() - completed:.0f} s handed out in a "
        f"task (lost)\n{log_tails(suite)}"), 0.2)
    took = time.monotonic() - completed
    print(f"\n{describe(granule.key)}: handed out {took:.1f} s after it was complete")
    time.sleep(FURTHER_PERIOD)  # further reconciliation periods: nothing more may come
    workers.drained()
    status = status_now(suite)
    workers.stop()
    assert not any(w.hung for w in workers.workers), f"a worker got no reply\n{log_tails(suite)}"
    complete = complete_on_disk(suite.settings.sdr_dir, since=NOW - dt.timedelta(days=1))
    assert granule.key in complete
    result = account(complete, workers.raws)
    print(f"{result.summary()}; status {status}")
    assert isinstance(status.get("recovered (24 h)"), int), f"no recovered (24 h) count in the status: {status}"
    assert not result.problems, result.summary()
    assert not result.partial, result.summary()
    assert result.tasks and len(workers.tasks_with(granule.key)) == 1, (
        f"granule {describe(granule.key)} in {len(workers.tasks_with(granule.key))} tasks\n{result.summary()}\n"
        f"{log_tails(suite, ['task_broker'])}")
    assert result.ok, result.summary()


def test_a_files_arrive_while_trollstalker_is_stopped(suite, workers):
    granule = Granule("A")
    suite.supervisorctl("stop", "trollstalker")
    arrive(suite, granule.names)
    completed = time.monotonic()
    suite.supervisorctl("start", "trollstalker")
    exactly_once(suite, workers, granule, completed)


def test_b_gatherer_sigkilled_between_the_files(suite, workers):
    granule = Granule("B")
    two_files_held(suite, granule)
    old = suite.pid("segment_gatherer-btd")
    os.kill(old, signal.SIGKILL)
    suite.wait_ready(timeout=90, since={"segment_gatherer-btd": old})
    # the restarted gatherer hears other granules first (here wait_flowing's probes), as it would in the field
    suite.wait_flowing()
    suite.place(granule.names[2])
    completed = time.monotonic()
    exactly_once(suite, workers, granule, completed)


def test_c_granule_completes_while_the_broker_is_stopped(suite, workers):
    granule = Granule("C")
    suite.supervisorctl("stop", "task_broker")
    sub = suite.subscriber("pytroll://AVO/viirs/granule/btd")
    try:
        time.sleep(1.0)  # PUB/SUB: the subscription reaches the gatherer before the granule does
        arrive(suite, granule.names)
        completed = time.monotonic()
        # the gatherer publishes the granule's dataset into the void (nobody queues it)
        wait_until(lambda: granule.names[0] in (sub.recv_raw(0.5) or ""), 15,
                   lambda: f"the gatherer publishing the granule\n{log_tails(suite)}", every=0)
    finally:
        sub.close()
    suite.supervisorctl("start", "task_broker")
    exactly_once(suite, workers, granule, completed)


def test_d_whole_suite_restarted_between_the_files(suite, workers):
    granule = Granule("D")
    two_files_held(suite, granule)
    workers.stop()  # the workers keep their sockets; new ones after the restart, as in the field
    suite.restart()
    suite.wait_flowing()
    after = Workers(suite)
    try:
        after.workers[0].received.extend(workers.raws)
        suite.place(granule.names[2])
        completed = time.monotonic()
        exactly_once(suite, after, granule, completed)
    finally:
        after.stop()


def test_late_file_after_the_gatherer_gave_up_on_the_slot(suite, workers):
    granule = Granule("late")
    arrive(suite, granule.names[:2])
    time.sleep(SLOT_TIMEOUT + 8)  # the slot times out without its third file
    log = (suite.base / "log" / "segment_gatherer-btd.log").read_text(errors="replace")
    print(f"gatherer log mentions the timeout: {'timed out' in log.lower() or 'timeout' in log.lower()}")
    suite.place(granule.names[2])
    completed = time.monotonic()
    exactly_once(suite, workers, granule, completed)
