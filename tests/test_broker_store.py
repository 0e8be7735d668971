"""The task queue journal: atomic compaction, replay, torn and damaged lines, foreign files, the ledger, clean and
unclean stops (hand-outs in doubt)."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from avoviirscollector.broker.store import DOUBT_SECONDS, JOURNAL_NAME, JournalStore
from avoviirscollector.granules import GranuleKey
from avoviirscollector.ondisk.journal import FORMAT, Event, Forget, Put, Stop, Take

SINCE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def record(task_id: int, orbit: int = 1) -> dict:
    return {"id": task_id, "subject": "/AVO/viirs/granule/tir", "orbit": orbit}


def compact(store: JournalStore, records: list[dict], next_id: int) -> None:
    store.compact((Put(r) for r in records), store.header(next_id, SINCE))


def load(path) -> tuple[list, int]:
    loaded = JournalStore(path).load()
    return loaded.tasks, loaded.next_id


def test_missing_file_is_an_empty_queue(tmp_path):
    assert load(tmp_path / "state") == ([], 1)


def test_replay_puts_merges_and_takes(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(1), record(2)], next_id=3)
    store.append(Put(record(3)))
    store.append(Put(record(1, orbit=7)))  # a merge rewrites the task in place
    store.append(Take(2))
    store.close()
    records, next_id = load(tmp_path)
    assert records == [record(1, orbit=7), record(3)]
    assert next_id == 4


def test_next_id_survives_taking_the_newest_task(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [], next_id=1)
    store.append(Put(record(1)))
    store.append(Take(1))
    store.close()
    assert load(tmp_path) == ([], 2)


def test_compaction_is_one_atomic_rename_and_leaves_no_temp_file(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(1)], next_id=2)
    inode_before = (tmp_path / JOURNAL_NAME).stat().st_ino
    compact(store, [record(1), record(2)], next_id=3)
    assert (tmp_path / JOURNAL_NAME).stat().st_ino != inode_before
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL_NAME]
    assert oct((tmp_path / JOURNAL_NAME).stat().st_mode & 0o777) == "0o644"
    store.append(Put(record(3)))  # appends to the new file
    store.close()
    assert [r["id"] for r in load(tmp_path)[0]] == [1, 2, 3]


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    store = JournalStore(tmp_path)
    compact(store, [record(1)], next_id=2)
    store.close()
    with open(tmp_path / JOURNAL_NAME, "ab") as out:
        out.write(b'{"op":"put","task":{"id":2,"subj')  # a kill in the middle of a write
    with caplog.at_level(logging.WARNING):
        records, _ = load(tmp_path)
    assert records == [record(1)]
    assert "incomplete record" in caplog.text
    assert not list(tmp_path.glob("*.damaged-*"))


def test_damaged_line_in_the_middle_is_skipped_and_a_copy_kept(tmp_path, caplog):
    store = JournalStore(tmp_path)
    compact(store, [record(1)], next_id=2)
    store.close()
    with open(tmp_path / JOURNAL_NAME, "ab") as out:
        out.write(b"\x00\x01garbage\n")
        out.write(json.dumps({"op": "put", "task": record(2)}).encode() + b"\n")
    with caplog.at_level(logging.ERROR):
        records, next_id = load(tmp_path)
    assert records == [record(1), record(2)] and next_id == 3
    assert "line 3 is damaged" in caplog.text
    assert len(list(tmp_path.glob(f"{JOURNAL_NAME}.damaged-*"))) == 1


def test_foreign_file_is_moved_aside(tmp_path, caplog):
    path = tmp_path / JOURNAL_NAME
    for content in (b'{"format": "something else", "version": 1}\n', b"\x89HDF\r\n\x1a\n binary", b"[1, 2]\n",
                    json.dumps({"format": FORMAT, "version": 99}).encode() + b"\n"):
        path.write_bytes(content)
        with caplog.at_level(logging.ERROR):
            assert load(tmp_path) == ([], 1)
        assert not path.exists()
        assert "moved aside" in caplog.text
    assert len(list(tmp_path.glob(f"{JOURNAL_NAME}.foreign-*"))) == 4


def test_needs_compaction_after_many_takes(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(i) for i in range(1, 11)], next_id=11)
    assert not store.needs_compaction(10)
    for i in range(11, 5100):
        store.append(Put(record(i)))
        store.append(Take(i))
    assert store.needs_compaction(10)
    compact(store, [record(i) for i in range(1, 11)], next_id=5100)
    assert not store.needs_compaction(10)
    store.close()


def test_stepwise_compaction_keeps_every_operation_made_meanwhile(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(i) for i in range(1, 2001)], next_id=2001)
    for i in range(1, 1001):
        store.append(Take(i))
    snapshot = [record(i) for i in range(1001, 2001)]
    store.start_compaction((Put(r) for r in snapshot), store.header(2001, SINCE))
    assert store.compacting
    steps = 0
    done = False
    while not done:
        steps += 1
        if steps == 2:  # operations while the new file is being written
            store.append(Put(record(2001)))
            store.append(Take(1001))
            store.append(Put(record(1500, orbit=9)))
        done = store.compaction_step(budget=0.0005)
    assert steps > 3 and not store.compacting
    store.append(Put(record(2002)))  # appends go to the new file
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL_NAME]
    assert (tmp_path / JOURNAL_NAME).stat().st_size < 2000 * 60
    records, next_id = load(tmp_path)
    expected = [record(i, orbit=9 if i == 1500 else 1) for i in range(1002, 2001)] + [record(2001), record(2002)]
    assert records == expected and next_id == 2003


def test_an_interrupted_compaction_leaves_the_old_journal_whole(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(1), record(2)], next_id=3)
    store.append(Take(1))
    store.start_compaction(iter([Put(record(2))]), store.header(3, SINCE))
    store.append(Put(record(3)))
    # the process dies here: nothing renamed, the old journal has every operation
    assert load(tmp_path) == ([record(2), record(3)], 4)
    store.abort_compaction()
    store.close()
    assert not (tmp_path / (JOURNAL_NAME + ".tmp")).exists()


def test_a_failed_compaction_leaves_the_old_journal_whole_and_no_temp_file(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(1)], next_id=2)

    def records():
        yield Put(record(2))
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        store.compact(records(), store.header(3, SINCE))
    assert load(tmp_path) == ([record(1)], 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL_NAME]


def test_the_ledger_events_and_ledger_since_come_back(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(1), record(2)], next_id=3)
    granules = (GranuleKey.from_json(["tir", "Suomi-NPP", "2026-01-01T00:00:00.300000"]),)
    store.append(Take(1, "handed out", "127.0.0.1", granules, "task 1"))
    store.append(Forget(granules))
    store.append(Event("recovered"))
    store.append(Stop())
    store.close()
    loaded = JournalStore(tmp_path).load()
    assert [r["id"] for r in loaded.tasks] == [2]
    assert [type(record) for record in loaded.ledger] == [Take, Forget]
    assert loaded.ledger[0].worker == "127.0.0.1" and loaded.ledger[0].granules == granules
    assert loaded.ledger[0].t is not None and loaded.ledger[0].what == "task 1"
    assert [event.kind for event in loaded.events] == ["recovered"]
    assert loaded.ledger_since == SINCE
    assert loaded.clean and loaded.in_doubt == []


def test_a_version_1_journal_is_read_and_has_no_ledger_yet(tmp_path):
    (tmp_path / JOURNAL_NAME).write_text(
        json.dumps({"format": FORMAT, "version": 1, "next_id": 3}) + "\n"
        + json.dumps({"op": "put", "task": record(1)}) + "\n" + json.dumps({"op": "put", "task": record(2)}) + "\n"
        + json.dumps({"op": "take", "id": 1}) + "\n")
    loaded = JournalStore(tmp_path).load()
    assert loaded.tasks == [record(2)] and loaded.next_id == 3
    assert loaded.ledger_since is None and loaded.ledger == []


def _lines(path, ops: list[dict]) -> None:
    with open(path, "a") as out:
        for op in ops:
            out.write(json.dumps(op) + "\n")


def test_after_an_unclean_stop_the_hand_outs_of_its_last_second_are_in_doubt(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(1), record(2), record(3)], next_id=4)
    store.close()
    t0 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)

    def at(seconds: float) -> str:
        return (t0 + dt.timedelta(seconds=seconds)).isoformat()

    _lines(tmp_path / JOURNAL_NAME, [
        {"op": "take", "t": at(0), "id": 1, "granules": [], "worker": "a"},   # delivered long before the end
        {"op": "mark", "t": at(1)}, {"op": "mark", "t": at(2)},
        {"op": "take", "t": at(5), "id": 2, "granules": [], "worker": "b"},   # within the last second: in doubt
        {"op": "take", "t": at(5 + DOUBT_SECONDS / 2), "id": 3, "granules": [], "worker": "c"},
    ])
    loaded = JournalStore(tmp_path).load()
    assert not loaded.clean
    assert loaded.tasks == []
    assert sorted((task["id"], take.worker) for task, take in loaded.in_doubt) == [(2, "b"), (3, "c")]
    _lines(tmp_path / JOURNAL_NAME, [{"op": "stop", "t": at(6)}])  # the same journal, stopped cleanly
    assert JournalStore(tmp_path).load().in_doubt == []


def test_a_mark_after_a_hand_out_settles_it(tmp_path):
    store = JournalStore(tmp_path)
    compact(store, [record(1)], next_id=2)
    store.close()
    _lines(tmp_path / JOURNAL_NAME, [
        {"op": "take", "t": "2026-01-01T12:00:00+00:00", "id": 1, "granules": []},
        {"op": "mark", "t": "2026-01-01T12:00:01.500000+00:00"},
    ])
    loaded = JournalStore(tmp_path).load()
    assert not loaded.clean and loaded.in_doubt == []
