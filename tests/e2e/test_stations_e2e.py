"""Every pass, from whichever receiving station has it first (issue 14), on the real suite with the GINA double at two
stations: a pass at both is fetched once (no byte of the other station's copy), from the station that listed it
first; a pass at one station only is tasked; a granule split between the stations is one granule of its tasks, whole;
no task holds two copies of a segment; with ``VIIRS_FACILITY=gilmore`` only gilmore's passes come.

The tests start mirror_gina themselves (the suite's cron is stopped: its minute run against the same double would
race the test), one listing round at a time, as the cron's rounds would.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import pytest

from avoviirscollector.viirs import PRODUCTS, parse_name
from tests.broker_support import DeployedWorker, Status
from tests.e2e.chaos import log_tails, read_task
from tests.e2e.harness import Suite
from tests.support import wait_until

pytestmark = pytest.mark.e2e

SEGMENTS = sorted({segment for segments in PRODUCTS.values() for segment in segments})
SIZES = {segment: 60_000 for segment in SEGMENTS}
MIRROR = [sys.executable, "-m", "avoviirscollector.mirror.cli", "--once", "--stall-seconds", "2"]


def mirror(suite: Suite, **env: str) -> str:
    proc = subprocess.run(MIRROR, env=dict(suite.env, **env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def drain(suite: Suite, worker: DeployedWorker, orbit: int, granules: int, timeout: float = 60.0) -> list:
    """Wait until the worker's tasks of ``orbit`` hold ``granules`` product granules (and the queue is empty); those
    tasks, read."""

    def granules_handed_out() -> bool:
        assert not worker.hung, f"a worker got no reply\n{log_tails(suite)}"
        tasks = [task for task in map(read_task, list(worker.received)) if task.orbit == orbit]
        return sum(len(task.granules) for task in tasks) >= granules

    wait_until(granules_handed_out, timeout, lambda: f"{granules} granules of orbit {orbit} handed out\n"
               f"{log_tails(suite)}", 0.2)
    with Status(suite.settings.update_port) as status:
        status.wait_for(lambda st: st["queue length"] == 0, 30)
    time.sleep(1.0)  # workers ask again on stale statuses: a task handed out twice would come now
    return [task for task in map(read_task, list(worker.received)) if task.orbit == orbit]


def test_two_stations_one_copy_of_every_pass_and_one_task_per_granule(mirrored_suite, double):
    suite = mirrored_suite
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
    both_start = now - dt.timedelta(minutes=30, seconds=-3.3)
    only_start = both_start + dt.timedelta(seconds=85.4)
    split_start = only_start + dt.timedelta(seconds=85.4)
    later = time.time() + 3600
    both = double.add_granule_at_stations("npp", 71000, both_start, segments=SEGMENTS, sizes=SIZES,
                                          listed_at=[None, later])  # gilmore lists it first
    only = double.add_granule("npp", 71000, only_start, segments=SEGMENTS, sizes=SIZES, station="uafgina")
    geolocation = [s for s in SEGMENTS if s.startswith("G")]
    split = double.add_granule_at_stations("npp", 71000, split_start, sizes=SIZES, segments_at={
        "gilmore": geolocation, "uafgina": [s for s in SEGMENTS if s not in geolocation]})
    sub = suite.subscriber("pytroll://AVO/viirs/granule")
    suite.wait_flowing()
    worker = DeployedWorker(suite.settings.task_port, suite.settings.update_port, list(PRODUCTS), hang_after=60)
    worker.start()
    datasets = []
    try:
        mirror(suite)
        double.list_at([s.name for s in both])  # uafgina lists its copy of the first granule now
        second = mirror(suite)
        tasks = drain(suite, worker, 71000, 3 * len(PRODUCTS))
        while (msg := sub.recv(0.5)) is not None:
            datasets.append(msg)
    finally:
        sub.close()
        worker.stopping.set()
        worker.join(5)
    uafginas_copy = {s.name for s in both if s.station == "uafgina"}
    assert not [r for r in double.file_requests if r[0] in uafginas_copy]  # not a byte of the second copy
    assert f"left alone {len(SEGMENTS)} copies" in second and "from uafgina" in second
    fetched = {s.name for s in both if s.station == "gilmore"} | {s.name for s in only} | {s.name for s in split}
    assert {p.name for p in suite.settings.sdr_dir.iterdir() if p.name[6:9] == "npp" and "_b71000_" in p.name} \
        == fetched
    problems = [p for task in tasks for p in task.problems]
    assert not problems, problems  # among them: no task holds two copies of a segment
    by_granule: dict = {}
    for task in tasks:
        for key, segments in task.granules.items():
            by_granule.setdefault((key[0], round(key[2].timestamp())), []).append(segments)
    starts = {round(t.replace(tzinfo=dt.UTC).timestamp()) for t in (both_start, only_start, split_start)}
    assert {(product, start) for product in PRODUCTS for start in starts} == set(by_granule), sorted(by_granule)
    for (product, _start), held in by_granule.items():
        assert held == [set(PRODUCTS[product])], (product, held)  # in one task, whole
    # the gatherers joined the two stations' files of the split granule in one slot (time_tolerance)
    joined = {msg.subject.rsplit("/", 1)[-1] for msg in datasets
              if {parse_name(item["uid"]).start_time for item in msg.data["dataset"]} ==
              {split_start, split_start + dt.timedelta(seconds=0.1)}}
    assert joined == set(PRODUCTS), joined  # every product takes a geolocation file and bands
    # a task may hold consecutive granules of a product: keep the split granule's files (start within 1 s of it)
    split_files = {item for task in tasks for item in _names(task)
                   if abs((parse_name(item).start_time - split_start).total_seconds()) < 1}
    assert {parse_name(n).start_time for n in split_files} == {split_start, split_start + dt.timedelta(seconds=0.1)}


def _names(task) -> list[str]:
    from posttroll.message import Message

    return [item["uid"] for item in Message.decode(task.raw.decode()).data["dataset"]]


def test_one_named_station_takes_its_passes_only(mirrored_suite, double):
    suite = mirrored_suite
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0) - dt.timedelta(minutes=20)
    theirs = double.add_granule("j01", 35000, now, segments=SEGMENTS, sizes=SIZES, station="uafgina")
    ours = double.add_granule("j01", 35000, now + dt.timedelta(seconds=85.4), segments=SEGMENTS, sizes=SIZES)
    out = mirror(suite, VIIRS_FACILITY="gilmore")
    names = {p.name for p in suite.settings.sdr_dir.iterdir()}
    assert {s.name for s in ours} <= names and not {s.name for s in theirs} & names, out
    assert all(query.get("facilities[]") == ["gilmore"] for query in double.listing_requests)
