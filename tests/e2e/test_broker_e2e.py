"""End to end on the supervised suite: granule files placed in sdr/ go through trollstalker and the
segment_gatherers to task_broker, and a worker loop written like the deployed one receives every product task
exactly once, for several products and both pass directions; a SIGKILLed broker is restarted by supervisord with
its queue intact."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
from collections import Counter

import pytest
from posttroll.message import Message

from avoviirscollector.viirs import PLATFORMS, PRODUCTS, format_name
from tests.broker_support import (
    ASCENDING_TIME,
    DESCENDING_TIME,
    TLE_FILE,
    DeployedWorker,
    Status,
    request,
    run_until_drained,
)
from tests.e2e.harness import Suite
from tests.legacy import legacy_rule_violations
from tests.support import wait_until

pytestmark = pytest.mark.e2e

#: segment_gatherer keys its slots by start time alone: granules of one test get start times of their own
MINUTE = dt.timedelta(minutes=1)
ALL_SEGMENTS = sorted({segment for segments in PRODUCTS.values() for segment in segments})


@pytest.fixture
def broker_suite(tmp_path):
    """The supervised suite with the test TLE set in elements/."""
    suite = Suite(tmp_path)
    (suite.base / "elements").mkdir(parents=True)
    shutil.copy(TLE_FILE, suite.base / "elements" / "weather.txt")
    with suite:
        yield suite


def place_granule(suite: Suite, platform: str, orbit: int, start: dt.datetime, segments=ALL_SEGMENTS) -> None:
    naive = start.astimezone(dt.UTC).replace(tzinfo=None)
    end = naive + dt.timedelta(seconds=85, microseconds=400000)
    created = naive + dt.timedelta(minutes=9, microseconds=123456)
    for segment in segments:
        suite.place(format_name(segment, platform, naive, end, orbit, created))


def key(msg: Message) -> tuple:
    return (msg.subject.rsplit("/", 1)[-1], msg.data["orbit_number"], msg.data["pass_direction"])


def drain(suite: Suite, product_sets: list[list[str]], want: set, timeout: float = 30) -> list[Message]:
    """Run deployed-style workers until every task key in ``want`` came and the queue is empty; all replies.

    The suite's own probe granules (orbits 99001 and up, from ``wait_flowing``) are tasks too: they are received
    like the others and must not come twice either."""
    s = suite.settings
    workers = [DeployedWorker(s.task_port, s.update_port, products) for products in product_sets]
    raws = run_until_drained(workers, s.update_port, 10, lambda: wait_until(
        lambda: want <= {key(Message.decode(raw)) for w in workers for raw in list(w.received)}, timeout,
        f"every task of {sorted(want)} handed out", 0.1))
    for raw in raws:
        assert legacy_rule_violations(raw.decode()) == []
    messages = [Message.decode(raw) for raw in raws]
    counts = Counter(key(m) for m in messages)
    assert set(counts.values()) == {1}, f"handed out twice: {[k for k, n in counts.items() if n > 1]}"
    assert want <= set(counts), f"never handed out: {want - set(counts)}"
    return messages


def wait_acknowledged(suite: Suite, product: str, orbit: int, timeout: float = 30) -> None:
    """Peek ("just testing") until the oldest ``product`` task is ``orbit``: it is queued, and acknowledged.

    A probe granule's task (``wait_flowing``'s, orbits 99001 and up) that is older is taken out of the way."""
    body = json.dumps({"desired products": [product], "just testing": True}).encode()
    oldest_task = [b""]

    def oldest_is_orbit() -> bool:
        oldest_task[0] = request(suite.settings.task_port, body)
        oldest = Message.decode(oldest_task[0]).data["orbit_number"] if oldest_task[0] else None
        if oldest is not None and oldest >= 99000:  # a late probe granule's task: out of the way
            request(suite.settings.task_port, json.dumps({"desired products": [product]}).encode())
        return oldest == orbit

    wait_until(oldest_is_orbit, timeout, lambda: f"{product} orbit {orbit} queued (oldest {oldest_task[0][:600]!r})",
               0.1)


def wait_queue(suite: Suite, length: int, timeout: float = 30) -> dict:
    with Status(suite.settings.update_port) as status:
        return status.wait_for(lambda st: st["queue length"] >= length, timeout)


def test_placed_files_become_tasks_a_deployed_worker_gets_exactly_once(broker_suite):
    suite = broker_suite
    suite.wait_flowing()
    place_granule(suite, "npp", 50001, ASCENDING_TIME)
    place_granule(suite, "j01", 50002, DESCENDING_TIME)
    want = {(product, orbit, direction) for product in PRODUCTS
            for orbit, direction in [(50001, "ascending"), (50002, "descending")]}
    messages = drain(suite, [["tir", "mir", "dnb"], ["btd", "vis"], ["vis", "tir"]], want)
    messages = [m for m in messages if m.data["orbit_number"] < 99000]
    assert {key(m) for m in messages} == want
    platforms = {m.data["orbit_number"]: m.data["platform_name"] for m in messages}
    assert platforms == {50001: PLATFORMS["npp"][0], 50002: PLATFORMS["j01"][0]}
    for msg in messages:
        product = msg.subject.rsplit("/", 1)[-1]
        assert sorted(item["uid"][:5] for item in msg.data["dataset"]) == sorted(PRODUCTS[product])
        assert all(os.path.exists(item["uri"]) for item in msg.data["dataset"])
    log = (suite.base / "log" / "task_broker.log").read_text()
    assert "from tle (weather.txt" in log


def test_supervisord_restarts_a_sigkilled_broker_with_its_queue(broker_suite):
    suite = broker_suite
    suite.wait_flowing()
    with Status(suite.settings.update_port) as status:  # the probes' datasets were published: their tasks come
        status.wait_for(lambda st: st["queue length"] > 0, 10)
    drain(suite, [list(PRODUCTS)], set())  # the probe granules' tasks (a late one is taken by wait_acknowledged)
    place_granule(suite, "j02", 50010, ASCENDING_TIME, segments=PRODUCTS["tir"] + PRODUCTS["dnb"])
    place_granule(suite, "npp", 50011, DESCENDING_TIME, segments=PRODUCTS["btd"])
    for product, orbit in [("tir", 50010), ("dnb", 50010), ("btd", 50011)]:
        wait_acknowledged(suite, product, orbit)
    queued = wait_queue(suite, 3)["queue length"]
    # more granules on their way while the broker is killed: acknowledged or not, never twice
    place_granule(suite, "j01", 50012, ASCENDING_TIME + MINUTE * 2, segments=PRODUCTS["mir"])
    old = suite.pid("task_broker")
    os.kill(old, signal.SIGKILL)
    suite.wait_ready(timeout=90, since={"task_broker": old})
    after = wait_queue(suite, queued)
    assert after["queue length"] >= queued
    # the restarted broker follows the gatherers that were already running
    place_granule(suite, "j02", 50013, DESCENDING_TIME + MINUTE * 3, segments=PRODUCTS["vis"])
    want = {("tir", 50010, "ascending"), ("dnb", 50010, "ascending"), ("btd", 50011, "descending"),
            ("vis", 50013, "descending")}
    drain(suite, [list(PRODUCTS), ["tir", "vis"]], want)
    assert "exited: task_broker (terminated by SIGKILL" in (suite.base / "log" / "supervisord.log").read_text()
