"""Both hosts collect everything from GINA: the GINA double on the pair's switch (the witness's address, as GINA
is beyond the site's gateway), the whole suite on each host of the pair's lab with its own cron running mirror_gina
every minute against it (nothing placed by the test), keepalived beside each, two workers written like the deployed
ones on the service address. A steady flow of two satellites' passes, most at two receiving stations, some at one;
once the workers have had a few tasks and while the passes still come, the active host is deleted (every process
killed, its namespace gone) and comes back with its disk 10 s later, as the standby, and its own mirror fetches
what it missed.

At the end: each host's disk holds every granule GINA listed (no shared disk: each host its own copy), every
complete product granule GINA listed is in exactly one task a worker received (hand-outs logged in doubt apart), no
worker waited for ever, and neither host counted a granule handed out by both. The GINA traffic of the pair is
printed (``-s``): each host lists and fetches on its own.

Skipped like test_pair_e2e.py without root, keepalived or ping."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest

from avoviirscollector.granules import GranuleMap
from avoviirscollector.viirs import PRODUCTS
from tests.e2e import chaos
from tests.e2e.harness import short_slot_etc
from tests.e2e.pair import WITNESS, Netns, PairLab, PairWorker, worker_states
from tests.e2e.pair_chaos import PORTS, PairSuites, pair_drained
from tests.gina_double import SATELLITE_TO_SHORT, GinaDouble, Schedule, stations_of
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

GINA_PORT = 8080  # on the witness's address, in the lab's own switch namespace: no other test's port
SATELLITES = ("snpp", "noaa20")
STATIONS = ("gilmore", "uafgina")
STATION_LAG = 8.0  # s: the second station lists its copy this long after the first
EVERY = 5.0  # s: one new granule per satellite this often
ROUNDS = 16  # new granules per satellite (after the two each satellite has at the start)
TASKS_BEFORE = 4  # the active host is deleted once the workers have had this many tasks (mid-flow: cron's first
#                   mirror_gina run comes at the next minute, up to a minute after the start)
DOWN = 10.0  # s the deleted host is away
SLOT_TIMEOUT = 20  # s: the gatherers' slot timeout (short_slot_etc)
SCALE = 0.004  # of the real files' sizes (GITCO about 240 kB)


def double_in(ns: Netns, root: Path, port: int) -> GinaDouble:
    """The GINA double serving on WITNESS:``port`` from inside ``ns`` (its socket is made by a thread that entered
    the namespace; the connections it accepts are in there too)."""
    made: list[GinaDouble] = []

    def make() -> None:
        ns.enter_here()
        made.append(GinaDouble(root, host=WITNESS, port=port))

    maker = threading.Thread(target=make)
    maker.start()
    maker.join()
    return made[0].start()


class Feed(threading.Thread):
    """Each satellite's two latest granules at once, then every ``EVERY`` s the next one of each, ``ROUNDS`` times:
    at both stations (the second listing its copy ``STATION_LAG`` s later), every fourth at one station only, the
    stations taking turns (as ``gina_double --stations`` does). The granules end half an hour ago and later: the
    mirror's listing window (the last two days) takes all of them."""

    def __init__(self, double: GinaDouble) -> None:
        super().__init__(name="feed", daemon=True)
        self.double = double
        self.schedule = Schedule()
        self.stopping = threading.Event()
        self.latest: dict[str, object] = {}
        self.added: dict[str, int] = {}
        self.done = threading.Event()
        self.errors: list[str] = []

    def _add(self, granule) -> None:
        index = self.added.get(granule.platform, 0)
        at = time.time()
        self.double.add_granule_at_stations(
            granule.platform, granule.orbit, granule.start, stations=STATIONS, scale=SCALE,
            segments_at=dict.fromkeys(stations_of(STATIONS, index, 4), chaos.ALL_SEGMENTS),
            listed_at=[at + STATION_LAG * i for i in range(len(STATIONS))])
        self.added[granule.platform] = index + 1
        self.latest[granule.platform] = granule

    def run(self) -> None:
        try:
            then = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=30)
            for sat in SATELLITES:
                for granule in self.schedule.latest(SATELLITE_TO_SHORT[sat], then, 2):
                    self._add(granule)
            for _ in range(ROUNDS):
                if self.stopping.wait(EVERY):
                    return
                for platform in list(self.latest):
                    self._add(self.schedule.following(self.latest[platform]))
        except Exception as err:  # noqa: BLE001 (the test fails on it, saying what)
            self.errors.append(repr(err))
        finally:
            self.done.set()


def collected(lab: PairLab, listed: set) -> dict[str, int]:
    """How many of the complete granules GINA lists (``listed``) each host's disk has complete."""
    counts = {}
    for name, host in lab.hosts.items():
        have = GranuleMap((key, None) for key in chaos.complete_on_disk(host.base / "sdr"))
        counts[name] = sum(1 for key in listed if key in have)
    return counts


def fail_over_mid_flow(suites: PairSuites, workers: dict[str, PairWorker], feed: Feed, began: float) -> int:
    """Once the workers have had TASKS_BEFORE tasks, the active deleted, DOWN s away, back with its disk as the
    standby; returns the tasks handed out before the deletion. From the main thread: the lab's processes die with
    the thread that started them."""
    wait_until(lambda: sum(len(w.received) for w in workers.values()) >= TASKS_BEFORE, 90,
               lambda: f"{TASKS_BEFORE} tasks before a host is deleted: {suites.summary()}")
    assert not feed.done.is_set(), "the flow ended before the failover: make ROUNDS larger"
    deleted = wait_until(suites.active, 30, "a host serving before it is deleted")
    handed_before = sum(len(w.received) for w in workers.values())
    print(f"\n{time.monotonic() - began:.0f} s: deleting {deleted}; {suites.summary()}; "
          f"workers {worker_states(workers)}")
    suites.delete(deleted)
    time.sleep(DOWN)
    suites.bring_back(deleted)
    wait_until(suites.whole, 90, f"the pair whole again after {deleted} came back")
    print(f"{time.monotonic() - began:.0f} s: {deleted} back as the standby; {suites.summary()}")
    return handed_before


def settle(lab: PairLab, suites: PairSuites, workers: dict[str, PairWorker], feed: Feed, until: float) -> set:
    """The feed ended (by ``until``), every host holding every complete granule GINA lists (its own cron's
    mirror_gina, whatever it missed while it was away), the pair whole and its queue drained; those granules."""
    assert feed.done.wait(max(0.0, until - time.monotonic())), "the feed never ended"
    assert not feed.errors, feed.errors
    listed = chaos.complete_on_disk(feed.double.files_dir)
    wait_until(lambda: set(collected(lab, listed).values()) == {len(listed)}, 150,
               lambda: f"both hosts holding all {len(listed)} complete granules GINA lists: {collected(lab, listed)}")
    wait_until(lambda: suites.whole() and pair_drained(suites), SLOT_TIMEOUT + 60,
               lambda: f"the pair whole and its queue drained: {suites.summary()}; workers {worker_states(workers)}")
    time.sleep(3.0)  # the workers ask again on the statuses that follow: a task handed out twice would come now
    return listed


def test_both_hosts_mirror_gina_and_every_granule_is_in_one_task_across_a_failover(lab, tmp_path):
    etc = short_slot_etc(tmp_path / "etc", SLOT_TIMEOUT)
    double = double_in(lab.lan, tmp_path / "gina", GINA_PORT)
    suites = PairSuites(lab, tmp_path, {"AVO_ETC": str(etc), "RECOVERY_HOURS": "12", "MIRROR_POLL_SECONDS": "5",
                                        "GINA_URL": f"http://{WITNESS}:{GINA_PORT}"})
    workers = {name: PairWorker(lab, name, int(PORTS["TASK_PORT"]), suites.port, 1.0, tuple(PRODUCTS))
               for name in lab.workers}
    feed = Feed(double)
    began = time.monotonic()
    try:
        suites.start()
        wait_until(suites.whole, 60, "the pair whole at the start")
        for worker in workers.values():
            worker.start()
        feed.start()
        flow = time.monotonic()
        handed_before = fail_over_mid_flow(suites, workers, feed, began)
        listed = settle(lab, suites, workers, feed, flow + EVERY * ROUNDS + 30)
        statuses = {name: suites.status(name) for name in lab.hosts}
    finally:
        feed.stopping.set()
        for worker in workers.values():
            worker.stop()
        suites.stop()
        double.stop()
    logs = [chaos.BrokerLog.read(host.base / "log" / "task_broker.log") for host in lab.hosts.values()]
    in_doubt = set().union(*(log.in_doubt_tasks for log in logs))
    result = chaos.account(listed, [raw for worker in workers.values() for raw in worker.received], in_doubt)
    served = double.bytes_served()
    print(f"pair from the GINA double: {result.summary()}\n"
          f"in doubt (24 h): { {name: s.get('in doubt (24 h)') for name, s in statuses.items()} }; GINA served "
          f"{served['listing_requests']} listings ({served['listing'] / 1e6:.1f} MB, {served['not_modified']} "
          f"not modified), {served['file_requests']} file requests ({served['files'] / 1e6:.1f} MB) to both hosts; "
          f"run {time.monotonic() - began:.0f} s")
    assert len(listed) == len(PRODUCTS) * len(SATELLITES) * (2 + ROUNDS), sorted(listed)
    assert not result.lost, result.summary()
    assert not result.twice, result.summary()
    assert not result.partial and not result.problems, result.summary()
    assert not [name for name, worker in workers.items() if worker.hung]
    assert len(result.tasks) > handed_before, "no task after the failover"
    assert {name: s.get("handed out twice (24 h)") for name, s in statuses.items()} == dict.fromkeys(lab.hosts, 0)
