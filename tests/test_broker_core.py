"""task_broker's rules in this process, on a clock that moves when told (broker/core.py): replay and hand-outs in
doubt, admission and merge, the ledger, reconciliation with sdr/, requests, operator commands, the bad-request
count, a full disk and the compaction policy. The journal is a real file; what a SIGKILL leaves of it is what the
core had written when it is dropped without a clean stop (every record is one ``os.write``)."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import time

import pytest
from posttroll.message import Message

from avoviirscollector.broker.core import BrokerCore, Decided, Resolve, Scan
from avoviirscollector.broker.direction import DirectionFinder
from avoviirscollector.broker.reconcile import GRACE_SECONDS, complete_between, gatherer_timeouts
from avoviirscollector.broker.store import JOURNAL_NAME, JournalStore
from avoviirscollector.broker.taskqueue import TaskQueue, parse_granule, task_to_record
from avoviirscollector.config import PACKAGE_ETC
from avoviirscollector.granules import GranuleKey, OnDisk
from avoviirscollector.ondisk.journal import Mark, Put, Stop
from avoviirscollector.viirs import PRODUCTS, format_name, parse_name
from tests.broker_support import ASCENDING_TIME, DESCENDING_TIME, FakeClock, granule_data, place, seed_queue
from tests.test_broker_protocol import BAD

T0 = dt.datetime(2024, 6, 1, 12, 10, 3, 300000)  # ASCENDING_TIME of the test TLEs, in the naive form of names
EARLY, LATE = dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1)
WORKER = "127.0.0.1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time() - 2)  # 2 s before now: files placed from now on count


@pytest.fixture
def finder(elements) -> DirectionFinder:
    return DirectionFinder(elements)


@pytest.fixture
def base(tmp_path):
    return tmp_path / "viirs"


def start(base, clock: FakeClock, store: JournalStore | None = None) -> BrokerCore:
    """A core as the daemon makes it, loaded from ``base/state``."""
    core = BrokerCore(store or JournalStore(base / "state", now=clock.now), base / "sdr", dt.timedelta(hours=6),
                      gatherer_timeouts(PACKAGE_ETC / "segment_gatherer.ini"), wall=clock.wall, ticks=clock.ticks)
    core.load()
    return core


def kill(core: BrokerCore) -> None:
    """What a SIGKILL leaves: the journal as written so far, no clean stop."""
    core.close()


def stop(core: BrokerCore) -> None:
    """A clean stop's writes."""
    core.write_state()
    core.mark_clean_stop()
    core.close()


def decided(finder: DirectionFinder, resolves: list[Resolve]) -> list[Decided]:
    """What the resolver thread does with each granule: its direction from the finder."""
    return [Decided(r, finder.find(r.granule.platform_name, r.granule.start_time, r.granule.data["dataset"]))
            for r in resolves]


def live(core: BrokerCore, finder: DirectionFinder, product: str, data: dict) -> None:
    """One granule by the bus, queued."""
    granule = parse_granule(f"/AVO/viirs/granule/{product}", "dataset", "gatherer@test", dt.datetime.now(dt.UTC),
                            data)
    assert core.take_in(decided(finder, [Resolve(granule, "live")])) == []


def reconcile(core: BrokerCore, finder: DirectionFinder, found: list[OnDisk] | None = None) -> int:
    """One scan of sdr/ (all its complete granules) and the recoveries it makes; how many."""
    if found is None:
        found = complete_between(core.sdr_dir, EARLY, LATE)
    resolves = core.take_in([Scan(found)])
    core.take_in(decided(finder, resolves))
    return len(resolves)


def ask(core: BrokerCore, products: list[str], just_testing: bool = False, worker: str = WORKER) -> bytes:
    reply, task = core.request([json.dumps({"desired products": products, "just testing": just_testing}).encode()],
                               lambda: worker)
    if task is not None:
        core.delivered(task)
    return reply


def command(core: BrokerCore, finder: DirectionFinder, body: dict) -> dict:
    """An operator's command; the granules it re-queues go through the direction finder and are queued."""
    answer, resolves = core.control([json.dumps(body).encode()])
    core.take_in(decided(finder, resolves))
    return json.loads(answer)


def journal_ops(base) -> list[dict]:
    return [json.loads(line) for line in (base / "state" / JOURNAL_NAME).read_text().splitlines()]


# -- reconciliation and operators --------------------------------------------------------------------------------

def test_complete_granules_in_sdr_become_one_task_each_and_operators_steer_them(base, clock, finder, caplog):
    """Granules completed while no dataset came (here: no gatherer at all) are recovered once each, after the grace
    period; the hand-out is listed with the worker's address; a dropped task never comes back; a re-queue hands a
    granule out again; a further reconciliation brings back nothing dropped or queued."""
    caplog.set_level(logging.INFO, "task_broker")
    core = start(base, clock)  # the ledger begins now: files placed from here on count
    btd = place(base, "btd", "npp", T0)
    place(base, "tir", "j01", T0 + dt.timedelta(minutes=30), orbit=30000)
    place(base, "btd", "j02", T0 + dt.timedelta(minutes=50), orbit=10000)
    os.unlink(base / "sdr" / place(base, "dnb", "npp", T0)[0])  # incomplete: never a task
    assert reconcile(core, finder) == 0  # complete for less than the grace period: the live path may bring them
    clock.advance(GRACE_SECONDS + 3)
    assert reconcile(core, finder) == 3
    got = core.status()
    assert got["queue length"] == 3
    assert got["recovered (24 h)"] == 3 and got["tasks by product"] == {"btd": 2, "tir": 1}
    assert caplog.text.count("recovered granule") == 3
    assert ("recovered granule btd Suomi-NPP 2024-06-01T12:10:03.3 (trollstalker announced no file message for its "
            "GMTCO, SVM15, SVM16 (stopped or restarting when they were placed))") in caplog.text
    task = Message.decode(ask(core, ["btd"]))
    assert [item["uid"] for item in task.data["dataset"]] == btd
    assert task.data["platform_name"] == "Suomi-NPP" and task.data["pass_direction"] == "ascending"
    answer = command(core, finder, {"command": "list"})
    assert [t["product"] for t in answer["queued"]] == ["tir", "btd"]
    (entry,) = answer["handed out"]
    assert entry["worker"] == WORKER and entry["kind"] == "handed out"
    assert entry["granules"] == [["btd", "Suomi-NPP", T0.isoformat()]]
    assert f"to {WORKER}" in caplog.text
    tir_id = answer["queued"][0]["id"]
    assert command(core, finder, {"command": "drop", "id": tir_id})["dropped"].startswith(f"task {tir_id} tir")
    assert "error" in command(core, finder, {"command": "drop", "id": tir_id})
    requeued = command(core, finder, {"command": "requeue", "from": T0.isoformat(), "to": T0.isoformat(),
                                      "product": "btd", "platform": None})
    assert requeued == {"requeued": ["btd Suomi-NPP 2024-06-01T12:10:03.3"]}
    assert core.status()["tasks by product"] == {"btd": 2}
    clock.advance(60)
    assert reconcile(core, finder) == 0  # a further reconciliation: nothing dropped or queued comes again
    assert core.status()["tasks by product"] == {"btd": 2}
    assert "error" in command(core, finder, {"command": "requeue", "from": "yesterday", "to": "yesterday"})


def on_disk(product: str, complete_at: float, start: dt.datetime = T0) -> OnDisk:
    files = tuple(parse_name(format_name(s, "npp", start, start + dt.timedelta(seconds=85.4), 70000, start))
                  for s in PRODUCTS[product])
    return OnDisk(GranuleKey(product, "Suomi-NPP", start), files, complete_at, complete_at)


def test_nothing_completed_before_the_first_start_with_no_ledger_is_recovered(base, clock, finder):
    before = on_disk("btd", complete_at=clock.wall() - 1)  # in sdr/ before the first start
    core = start(base, clock)
    since = core.ledger_since
    after = on_disk("mir", complete_at=clock.wall() + 3)
    clock.advance(3 + GRACE_SECONDS + 1)
    assert reconcile(core, finder, [before, after]) == 1
    clock.advance(11)
    assert reconcile(core, finder, [before, after]) == 0
    assert core.status()["tasks by product"] == {"mir": 1}
    stop(core)
    core = start(base, clock)
    assert core.ledger_since == since  # the ledger's beginning is kept across a restart
    clock.advance(11)
    assert reconcile(core, finder, [before, after]) == 0
    assert core.status()["tasks by product"] == {"mir": 1}


def test_a_granule_placed_before_the_first_start_of_task_broker_but_after_the_suites_is_recovered(
        base, clock, finder, caplog):
    """``supervise`` begins the ledger at the suite's first start, before any program runs: a granule completed before
    task_broker first came up (a slow start) is recovered, one from before the suite's start is the archive."""
    caplog.set_level(logging.INFO, "task_broker")
    archive = on_disk("btd", complete_at=clock.wall() - 5)
    assert JournalStore(base / "state", now=clock.now).begin(clock.now() - dt.timedelta(seconds=2))
    assert not JournalStore(base / "state", now=clock.now).begin(clock.now())  # once only
    early = on_disk("mir", complete_at=clock.wall() - 1)  # placed before task_broker's first start
    core = start(base, clock)
    assert "no hand-out ledger" not in caplog.text
    clock.advance(GRACE_SECONDS + 1)
    assert reconcile(core, finder, [archive, early]) == 1
    assert core.status()["tasks by product"] == {"mir": 1}
    assert "(completed while task_broker was not following the bus (stopped or restarting))" in caplog.text


def test_a_recovered_granule_that_came_by_the_bus_meanwhile_is_not_queued_twice(base, clock, finder, caplog):
    caplog.set_level(logging.INFO, "task_broker")
    core = start(base, clock)
    place(base, "tir", "j01", ASCENDING_TIME.replace(tzinfo=None), orbit=30000)
    clock.advance(GRACE_SECONDS + 3)
    resolves = core.take_in([Scan(complete_between(core.sdr_dir, EARLY, LATE))])
    assert len(resolves) == 1
    live(core, finder, "tir", granule_data("tir", "NOAA-20", 30000, ASCENDING_TIME, base))  # the dataset came
    core.take_in(decided(finder, resolves))
    assert core.status()["queue length"] == 1 and core.status()["recovered (24 h)"] == 0
    assert "reached the queue by the bus meanwhile: not recovered" in caplog.text


# -- hand-outs in doubt --------------------------------------------------------------------------------------

def test_a_hand_out_written_just_before_a_kill_is_queued_again_and_logged_in_doubt(base, clock, caplog):
    seed_queue(base, ["tir"] * 3)
    core = start(base, clock)
    sent = Message.decode(ask(core, ["tir"]))  # its reply was written to the worker's connection: not in doubt
    reply, _task = core.request([json.dumps({"desired products": ["tir"]}).encode()], lambda: WORKER)
    first = Message.decode(reply)  # taken, and the broker killed before the reply was written
    clock.advance(0.5)
    kill(core)  # within a second of the hand-outs
    core = start(base, clock)
    lines = [r.getMessage() for r in caplog.records if "is in doubt" in r.getMessage()]
    assert len(lines) == 1 and f"orbit {first.data['orbit_number']}" in lines[0]
    assert f"orbit {sent.data['orbit_number']}" not in lines[0]
    again = Message.decode(ask(core, ["tir"]))
    assert again.data["orbit_number"] == first.data["orbit_number"]
    assert core.status()["in doubt (24 h)"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # nothing written before the journal opened
    assert [op for op in journal_ops(base) if op.get("kind") == "in doubt"]  # the event is in the journal
    second = Message.decode(ask(core, ["tir"]))
    for _ in range(3):  # the shell's ticks: marks written after it, so a kill now leaves nothing in doubt
        clock.advance(1)
        core.tick()
    kill(core)
    core = start(base, clock)
    assert ask(core, ["tir"]) == b"", f"task {second.data['orbit_number']} came back"
    assert caplog.text.count("is in doubt") == 1


# -- admission, merge and the ledger ---------------------------------------------------------------------------

def test_a_granule_merges_into_its_pass_and_once_handed_out_is_refused_as_a_duplicate(base, clock, finder):
    core = start(base, clock)
    first = granule_data("tir", "Suomi-NPP", 60000, ASCENDING_TIME, base)
    follow_up = granule_data("tir", "Suomi-NPP", 60000, ASCENDING_TIME + dt.timedelta(seconds=85.4), base)
    live(core, finder, "tir", first)
    live(core, finder, "tir", follow_up)
    live(core, finder, "tir", first)  # the same granule again: its task is updated, never a second one
    assert core.status()["queue length"] == 1
    merged = Message.decode(ask(core, ["tir"]))
    assert len(merged.data["dataset"]) == 4
    assert merged.data["start_time"] == ASCENDING_TIME.replace(tzinfo=None)
    assert merged.data["end_time"] == (ASCENDING_TIME + dt.timedelta(seconds=2 * 85.4)).replace(tzinfo=None)
    live(core, finder, "tir", follow_up)  # handed out: refused
    assert core.status()["queue length"] == 0 and core.status()["duplicate (24 h)"] == 1
    stop(core)
    core = start(base, clock)  # the ledger and the count are kept across a restart
    live(core, finder, "tir", first)
    assert core.status()["queue length"] == 0 and core.status()["duplicate (24 h)"] == 2


def test_the_ledger_forgets_hand_outs_after_the_recovery_window_and_an_hour_and_counts_a_day(base, clock, finder):
    core = start(base, clock)
    data = granule_data("mir", "NOAA-20", 61000, DESCENDING_TIME, base)
    live(core, finder, "mir", data)
    assert ask(core, ["mir"])
    live(core, finder, "mir", data)
    assert core.status()["duplicate (24 h)"] == 1
    clock.advance(7 * 3600 - 60)
    core.tick()
    live(core, finder, "mir", data)
    assert core.status()["queue length"] == 0  # still in the ledger 6 h 59 min later
    clock.advance(120)
    core.tick()
    live(core, finder, "mir", data)
    assert core.status()["queue length"] == 1  # forgotten after RECOVERY_HOURS and an hour: a new task
    assert core.status()["duplicate (24 h)"] == 2
    clock.advance(86400)
    core.tick()
    assert core.status()["duplicate (24 h)"] == 0


def test_a_reply_that_cannot_be_delivered_puts_the_task_back_in_its_place(base, clock):
    seed_queue(base, ["tir"] * 3)
    core = start(base, clock)
    reply, task = core.request([b'{"desired products": ["tir"]}'], lambda: WORKER)
    core.undelivered(task, "the worker has gone")
    assert [t.id for t in core.queue] == [task.id, task.id + 1, task.id + 2] and core.queue.ledger() == []
    assert ask(core, ["tir"]) == reply
    stop(core)
    core = start(base, clock)
    assert len(core.queue) == 2 and len(core.queue.ledger()) == 1


def test_a_task_put_back_after_a_failed_delivery_is_queued_and_not_in_the_ledger(base, clock):
    now = clock.now()
    granule = parse_granule("/AVO/viirs/granule/btd", "dataset", "gatherer@test", now,
                            granule_data("btd", "NOAA-20", 100, ASCENDING_TIME, base))
    queue = TaskQueue()
    task, _, _ = queue.admit(granule, "ascending")
    store = JournalStore(base / "state")
    store.compact(iter([Put(task_to_record(task))]), store.header(queue.next_id, now))
    queue.take(["btd"], when=now, worker=WORKER)
    store.append(queue.ledger()[0].to_take())
    store.append(Put(task_to_record(task)))  # the reply could not be delivered: put back
    store.append(Stop())
    store.close()
    core = start(base, clock)
    assert [t.id for t in core.queue] == [task.id] and core.queue.ledger() == []
    assert core.queue.admit(granule, "ascending")[1] == "merged"


# -- requests --------------------------------------------------------------------------------------------------

def test_just_testing_leaves_the_task_and_empty_reply_when_nothing_matches(base, clock, finder):
    core = start(base, clock)
    live(core, finder, "mir", granule_data("mir", "NOAA-21", 61000, DESCENDING_TIME, base))
    assert ask(core, ["tir"]) == b""
    peeked = Message.decode(ask(core, ["mir"], just_testing=True))
    assert peeked.data["orbit_number"] == 61000 and peeked.data["pass_direction"] == "descending"
    taken = Message.decode(ask(core, ["vis", "mir"]))
    assert taken.data == peeked.data
    assert ask(core, ["mir"]) == b""


def test_every_bad_request_gets_one_error_reply_and_serving_goes_on(base, clock):
    seed_queue(base, ["tir"], orbit=62000)
    core = start(base, clock)
    for payload, reason in BAD:
        reply, task = core.request([payload], lambda: WORKER)
        assert reason in json.loads(reply)["error"] and task is None
    reply, task = core.request([b'{"desired products": ["tir"]}', b"more"], lambda: WORKER)
    assert "one frame" in json.loads(reply)["error"] and task is None
    assert Message.decode(ask(core, ["tir"])).data["orbit_number"] == 62000


def test_bad_requests_are_counted_in_the_status_and_the_journal_across_a_restart(base, clock):
    core = start(base, clock)
    for _ in range(5):
        assert "error" in json.loads(core.request([b"not json"], lambda: WORKER)[0])
    assert core.status()["bad request (24 h)"] == 5
    stop(core)  # a clean stop writes the bad requests not yet in the journal
    events = [op for op in journal_ops(base) if op.get("op") == "event" and op.get("kind") == "bad request"]
    assert sum(op.get("count", 1) for op in events) == 5
    core = start(base, clock)
    assert "error" in json.loads(core.request([b"[]"], lambda: WORKER)[0])
    assert core.status()["bad request (24 h)"] == 6


def test_bad_requests_reach_the_journal_as_one_counted_event_every_ten_seconds_at_most(base, clock):
    core = start(base, clock)
    for _ in range(3):
        core.request([b"not json"], lambda: WORKER)
        clock.advance(1)
        core.tick()
    clock.advance(10)
    core.tick()
    core.request([b"not json"], lambda: WORKER)
    clock.advance(1)
    core.tick()
    events = [op for op in journal_ops(base) if op.get("kind") == "bad request"]
    assert [op.get("count", 1) for op in events] == [1, 2]  # the first at once, the rest 10 s later
    assert core.status()["bad request (24 h)"] == 4


# -- the state file --------------------------------------------------------------------------------------------

def test_a_foreign_state_file_is_moved_aside_and_the_broker_serves(base, clock, caplog):
    state = base / "state"
    state.mkdir(parents=True)
    (state / JOURNAL_NAME).write_bytes(b"\x00\x01 not a journal at all\n")
    core = start(base, clock)
    assert core.status()["queue length"] == 0
    assert ask(core, ["tir"]) == b""
    assert len(list(state.glob("task_queue.journal.foreign-*"))) == 1
    assert "is not a task queue journal: moved aside" in caplog.text
    stop(core)
    assert JournalStore(state).load().clean


class FullDisk(JournalStore):
    """The journal on a disk with no space left while ``full``: every write fails as the kernel's would."""

    full = True

    def _check(self) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")

    def compact(self, records, header) -> None:
        self._check()
        super().compact(records, header)

    def append(self, obj: dict, sync: bool = False) -> None:
        self._check()
        super().append(obj, sync)

    def start_compaction(self, records, header) -> None:
        self._check()
        super().start_compaction(records, header)

    def sync(self) -> None:
        self._check()
        super().sync()


def test_on_a_full_disk_it_starts_serves_from_memory_says_so_once_and_writes_again_when_space_returns(
        base, clock, caplog):
    caplog.set_level(logging.INFO, "task_broker")
    seed_queue(base, ["tir"] * 3)
    store = FullDisk(base / "state", now=clock.now)
    core = start(base, clock, store)
    got = core.status()
    assert got["queue length"] == 3 and got.get("state behind") is True
    handed = [Message.decode(ask(core, ["tir"])) for _ in range(2)]
    assert [m.data["orbit_number"] for m in handed] == [40000, 40001]
    assert core.request([b"not json"], lambda: WORKER)[0].startswith(b'{"error"')
    for _ in range(2):
        clock.advance(1)
        core.tick()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text
    assert len(errors) == 1 and "state: cannot write" in errors[0].getMessage()
    assert "serving from memory" in errors[0].getMessage()
    store.full = False  # space comes back
    for _ in range(11):
        clock.advance(1)
        core.tick()
    assert "state behind" not in core.status()
    assert "written again" in caplog.text
    loaded = JournalStore(base / "state").load()
    assert [t["data"]["orbit_number"] for t in loaded.tasks] == [40002]
    assert len(loaded.ledger) == 2
    stop(core)


def test_a_journal_of_mostly_dead_records_is_compacted_in_steps_between_requests(base, clock):
    """The compaction policy: more than 10,000 records beyond three per live entry start a compaction at the next
    tick; it advances in steps (what the shell runs between requests) while hand-outs go on, and the journal that
    replaces the old one holds the state, a hand-out made meanwhile included."""
    seed_queue(base, ["tir"])
    core = start(base, clock)
    for _ in range(10000):  # dead records (marks, as after hand-outs): just under the limit with one task live
        core.store.append(Mark())
    clock.advance(1)
    core.tick()
    assert not core.store.compacting
    for _ in range(5):
        core.store.append(Mark())
    clock.advance(1)
    core.tick()
    assert core.store.compacting and core.compaction_due
    size = (base / "state" / JOURNAL_NAME).stat().st_size
    steps, handed = 0, b""
    while core.store.compacting:
        core.compaction_step()
        handed = handed or ask(core, ["tir"])  # a hand-out while it runs
        steps += 1
    assert handed and steps > 1
    loaded = JournalStore(base / "state").load()
    assert loaded.tasks == [] and len(loaded.ledger) == 1
    assert (base / "state" / JOURNAL_NAME).stat().st_size < size / 100
