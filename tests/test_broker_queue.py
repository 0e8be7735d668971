"""The task queue's rules (SPEC section 6), tested directly on the pure class."""

from __future__ import annotations

import datetime as dt

import pytest

from avoviirscollector.broker.taskqueue import (
    MERGE_WINDOW,
    NotAGranule,
    TaskQueue,
    parse_granule,
    task_from_record,
    task_to_record,
)
from avoviirscollector.ondisk.journal import decode, encode
from avoviirscollector.viirs import format_name

T0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2024, 6, 1, 12, 30, tzinfo=dt.UTC)


def granule(product="tir", platform="Suomi-NPP", orbit=100, minute=0.0, seconds=85.4, uids=("a",)):
    start = T0 + dt.timedelta(minutes=minute)
    data = {
        "platform_name": platform, "orbit_number": orbit, "start_time": start,
        "end_time": start + dt.timedelta(seconds=seconds), "sensor": ["viirs"],
        "dataset": [{"uri": f"/viirs/sdr/{uid}", "uid": uid} for uid in uids],
    }
    return parse_granule(f"/AVO/viirs/granule/{product}", "dataset", "gatherer@host", NOW, data)


def uids(task):
    return [item["uid"] for item in task.data["dataset"]]


# (description, [(granule kwargs, direction)], expected queue as [(product, orbit, direction, uids)])
MERGE_CASES = [
    ("same identity, next granule: merged", [({"uids": ["a"]}, "ascending"), ({"minute": 1.4, "uids": ["b"]},
     "ascending")], [("tir", 100, "ascending", ["a", "b"])]),
    ("duplicate message: one task, no duplicate uid", [({}, "ascending"), ({}, "ascending")],
     [("tir", 100, "ascending", ["a"])]),
    ("other product: separate", [({"product": "tir"}, "ascending"), ({"product": "mir"}, "ascending")],
     [("tir", 100, "ascending", ["a"]), ("mir", 100, "ascending", ["a"])]),
    ("other orbit: separate", [({"orbit": 100}, "ascending"), ({"orbit": 101}, "ascending")],
     [("tir", 100, "ascending", ["a"]), ("tir", 101, "ascending", ["a"])]),
    ("other platform: separate", [({"platform": "Suomi-NPP"}, "ascending"), ({"platform": "NOAA-20"}, "ascending")],
     [("tir", 100, "ascending", ["a"]), ("tir", 100, "ascending", ["a"])]),
    ("other direction of one orbit: separate", [({}, "ascending"), ({"minute": 2, "uids": ["b"]}, "descending")],
     [("tir", 100, "ascending", ["a"]), ("tir", 100, "descending", ["b"])]),
    ("exactly 30 minutes apart: merged", [({}, "descending"), ({"minute": 30, "uids": ["b"]}, "descending")],
     [("tir", 100, "descending", ["a", "b"])]),
    ("31 minutes apart: separate", [({}, "descending"), ({"minute": 31, "uids": ["b"]}, "descending")],
     [("tir", 100, "descending", ["a"]), ("tir", 100, "descending", ["b"])]),
    ("earlier granule within the window: merged", [({"minute": 10}, "ascending"),
     ({"minute": 5, "uids": ["b"]}, "ascending")], [("tir", 100, "ascending", ["a", "b"])]),
]


@pytest.mark.parametrize("description,offers,expected", MERGE_CASES, ids=[c[0] for c in MERGE_CASES])
def test_merge_rule(description, offers, expected):
    queue = TaskQueue()
    for kwargs, direction in offers:
        queue.offer(granule(**kwargs), direction)
    got = [(t.product, t.data["orbit_number"], t.pass_direction, uids(t)) for t in queue]
    assert got == expected


def test_merge_keeps_position_and_widens_times():
    queue = TaskQueue()
    first, _ = queue.offer(granule(minute=10, seconds=85, uids=["a"]), "ascending")
    queue.offer(granule(product="mir"), "ascending")
    merged_into, merged = queue.offer(granule(minute=8, seconds=60, uids=["b", "a"]), "ascending")
    assert merged and merged_into is first
    queue.offer(granule(minute=12, seconds=100, uids=["c"]), "ascending")
    assert [t.product for t in queue] == ["tir", "mir"]
    assert first.start_time == T0 + dt.timedelta(minutes=8)
    assert first.end_time == T0 + dt.timedelta(minutes=12, seconds=100)
    assert uids(first) == ["a", "b", "c"]
    assert queue.take(["tir", "mir"]) is first


def test_merge_picks_the_task_within_the_window_not_the_first_of_the_identity():
    queue = TaskQueue()
    early, _ = queue.offer(granule(minute=0, uids=["a"]), "ascending")
    late, _ = queue.offer(granule(minute=100, uids=["b"]), "ascending")
    task, merged = queue.offer(granule(minute=99, uids=["c"]), "ascending")
    assert merged and task is late
    assert uids(early) == ["a"] and uids(late) == ["b", "c"]


# (queue as [(product, orbit)], desired, expected orbits taken in order until None)
ORDER_CASES = [
    ([("tir", 1), ("mir", 2), ("tir", 3)], ["tir"], [1, 3]),
    ([("tir", 1), ("mir", 2), ("tir", 3)], ["mir", "tir"], [1, 2, 3]),
    ([("tir", 1), ("mir", 2), ("btd", 3)], ["btd"], [3]),
    ([("tir", 1)], ["vis"], []),
    ([], ["tir"], []),
    ([("dnb", 5), ("vis", 6), ("dnb", 7)], ["vis", "dnb", "nonexistent"], [5, 6, 7]),
]


@pytest.mark.parametrize("queued,desired,expected", ORDER_CASES)
def test_oldest_desired_task_first(queued, desired, expected):
    queue = TaskQueue()
    for product, orbit in queued:
        queue.offer(granule(product=product, orbit=orbit), "ascending")
    taken = []
    while (task := queue.take(desired)) is not None:
        taken.append(task.data["orbit_number"])
    assert taken == expected
    assert len(queue) == len(queued) - len(expected)


def test_just_testing_returns_without_removing():
    queue = TaskQueue()
    queue.offer(granule(orbit=1), "ascending")
    queue.offer(granule(orbit=2), "ascending")
    peeked = queue.take(["tir"], just_testing=True)
    assert peeked.data["orbit_number"] == 1 and len(queue) == 2
    assert queue.take(["tir"], just_testing=True) is peeked
    assert queue.take(["tir"]) is peeked and len(queue) == 1


def test_status_counts_and_products():
    queue = TaskQueue()
    assert queue.status() == {"queue length": 0, "products waiting": [], "tasks by product": {}}
    for product, orbit in [("vis", 1), ("tir", 2), ("tir", 3), ("btd", 4)]:
        queue.offer(granule(product=product, orbit=orbit), "descending")
    assert queue.status() == {"queue length": 4, "products waiting": ["btd", "tir", "vis"],
                              "tasks by product": {"btd": 1, "tir": 2, "vis": 1}}
    queue.take(["vis", "btd"])
    queue.take(["vis", "btd"])
    assert queue.status()["products waiting"] == ["tir"]


def test_restore_puts_a_task_back_in_its_place():
    queue = TaskQueue()
    for orbit in (1, 2, 3):
        queue.offer(granule(orbit=orbit), "ascending")
    first = queue.take(["tir"])
    queue.offer(granule(orbit=4), "ascending")
    queue.restore(first)
    assert [t.data["orbit_number"] for t in queue] == [1, 2, 3, 4]
    assert queue.take(["tir"]) is first
    # a restored task still merges
    queue.restore(first)
    task, merged = queue.offer(granule(orbit=1, minute=1, uids=["z"]), "ascending")
    assert merged and task is first


def test_new_ids_follow_a_reloaded_queue():
    queue = TaskQueue()
    for orbit in (1, 2):
        queue.offer(granule(orbit=orbit), "ascending")
    queue.take(["tir"])
    reloaded = TaskQueue([task_from_record(task_to_record(t)) for t in queue], next_id=queue.next_id)
    new, _ = reloaded.offer(granule(orbit=9), "ascending")
    assert new.id == 3 and [t.data["orbit_number"] for t in reloaded] == [2, 9]


def test_record_round_trip_keeps_everything():
    task, _ = TaskQueue().offer(granule(uids=["a", "b"]), "descending")
    back = task_from_record(task_to_record(task))
    assert back == task
    assert back.start_time.tzinfo is not None


@pytest.mark.parametrize("data,reason", [
    ("not a dict", "not an object"),
    ({"orbit_number": 1, "start_time": T0, "end_time": T0}, "missing platform_name"),
    ({"platform_name": "NOAA-20", "orbit_number": "1", "start_time": T0, "end_time": T0}, "orbit_number"),
    ({"platform_name": "NOAA-20", "orbit_number": True, "start_time": T0, "end_time": T0}, "orbit_number"),
    ({"platform_name": "NOAA-20", "orbit_number": 1, "start_time": "yesterday", "end_time": T0}, "start_time"),
    ({"platform_name": "NOAA-20", "orbit_number": 1, "start_time": T0, "end_time": T0, "dataset": "x"}, "dataset"),
])
def test_unusable_messages_are_refused_with_a_reason(data, reason):
    with pytest.raises(NotAGranule, match=reason):
        parse_granule("/AVO/viirs/granule/tir", "dataset", "s", NOW, data)


def test_naive_and_aware_times_are_the_same_utc_instant():
    naive = dict(platform_name="NOAA-20", orbit_number=1, start_time=dt.datetime(2024, 6, 1, 12),
                 end_time="2024-06-01T03:01:00-09:00")
    got = parse_granule("/AVO/viirs/granule/tir", "dataset", "s", NOW, naive)
    assert got.start_time == T0
    assert got.end_time == T0 + dt.timedelta(minutes=1)
    assert MERGE_WINDOW == dt.timedelta(minutes=30)


def test_direction_must_be_known_value():
    with pytest.raises(ValueError):
        TaskQueue().offer(granule(), "sideways")


# -- one task per granule, and the hand-out ledger ---------------------------------------------------------------

def sdr_granule(product="btd", short="npp", start=dt.datetime(2024, 6, 1, 12, 0, 3, 300000), orbit=100, minutes=9):
    from avoviirscollector.granules import granule_data
    from avoviirscollector.viirs import PRODUCTS, parse_name

    files = [parse_name(format_name(segment, short, start, start + dt.timedelta(seconds=85.4), orbit,
                                    start + dt.timedelta(minutes=minutes))) for segment in PRODUCTS[product]]
    data = granule_data(product, files, lambda n: f"/viirs/sdr/{n}")
    return parse_granule(f"/AVO/viirs/granule/{product}", "dataset", "gatherer@host", NOW, data)


def test_a_granule_already_queued_merges_into_its_task_whatever_direction_it_gets():
    queue = TaskQueue()
    first, outcome, _ = queue.admit(sdr_granule(), "ascending")
    again, outcome_again, _ = queue.admit(sdr_granule(minutes=40), "unknown")  # a reissue, another direction
    assert (outcome, outcome_again) == ("queued", "merged") and again is first and len(queue) == 1
    assert len(first.data["dataset"]) == 3  # one file per segment: the reissue replaced the older copies
    assert {parse_name_minutes(i["uid"]) for i in first.data["dataset"]} == {40}


def parse_name_minutes(uid: str) -> int:
    from avoviirscollector.viirs import parse_name

    parsed = parse_name(uid)
    return int((parsed.proctime - parsed.start_time).total_seconds() // 60)


def test_a_granule_handed_out_is_refused_as_a_duplicate_with_the_hand_out_named():
    queue = TaskQueue()
    queue.admit(sdr_granule(), "ascending")
    handed = queue.take(["btd"], when=NOW, worker="192.0.2.7")
    task, outcome, entry = queue.admit(sdr_granule(minutes=50), "ascending")
    assert task is None and outcome == "duplicate"
    assert (entry.task_id, entry.worker, entry.kind, entry.when) == (handed.id, "192.0.2.7", "handed out", NOW)
    assert len(queue) == 0
    # another granule of the same pass is a new task (its own granule), not a duplicate
    other, outcome, _ = queue.admit(sdr_granule(start=dt.datetime(2024, 6, 1, 12, 1, 28, 700000)), "ascending")
    assert outcome == "queued" and other.id != handed.id


def test_the_other_stations_copy_of_a_granule_is_that_granule_queued_and_handed_out():
    """Two receiving stations: the copies start 0.1 s apart; the queue, the ledger and an operator's forget treat
    them as one granule."""
    start = dt.datetime(2024, 6, 1, 12, 0, 3, 300000)
    other = start + dt.timedelta(seconds=0.1)
    queue = TaskQueue()
    first, _, _ = queue.admit(sdr_granule(start=start), "ascending")
    again, outcome, _ = queue.admit(sdr_granule(start=other, minutes=12), "ascending")
    assert outcome == "merged" and again is first and len(first.data["dataset"]) == 3
    handed = queue.take(["btd"], when=NOW, worker="192.0.2.7")
    assert queue.admit(sdr_granule(start=other, minutes=13), "ascending")[1] == "duplicate"
    (key,) = handed and queue.ledger()[0].granules
    assert queue.knows(key._replace(start_time=other))
    assert queue.forget([key._replace(start_time=other)]) == [key._replace(start_time=other)]
    assert queue.ledger() == [] and not queue.knows(key)


def test_restore_and_forget_take_granules_out_of_the_ledger_and_pruning_forgets_old_hand_outs():
    queue = TaskQueue()
    queue.admit(sdr_granule(), "ascending")
    handed = queue.take(["btd"], when=NOW)
    queue.restore(handed)
    assert queue.ledger() == [] and len(queue) == 1
    handed = queue.take(["btd"], when=NOW)
    (key,) = queue.ledger()[0].granules
    assert queue.knows(key) and queue.forget([key]) == [key] and not queue.knows(key)
    assert queue.admit(sdr_granule(), "ascending")[1] == "queued"
    queue.take(["btd"], when=NOW)
    assert queue.prune_ledger(NOW) == 0 and queue.prune_ledger(NOW + dt.timedelta(seconds=1)) == 1
    assert not queue.knows(key)


def test_a_dropped_task_is_in_the_ledger_as_dropped():
    queue = TaskQueue()
    task, _, _ = queue.admit(sdr_granule(), "descending")
    entry = queue.drop(task.id, NOW)
    assert entry.kind == "dropped" and entry.worker == "operator" and len(queue) == 0
    assert queue.admit(sdr_granule(), "descending")[1] == "duplicate"
    assert queue.drop(task.id, NOW) is None


def test_hand_out_records_round_trip():
    from avoviirscollector.broker.taskqueue import HandOut

    queue = TaskQueue()
    queue.admit(sdr_granule(), "ascending")
    queue.take(["btd"], when=NOW, worker="10.0.0.1")
    entry = queue.ledger()[0]
    assert HandOut.from_take(decode(encode(entry.to_take()))) == entry
