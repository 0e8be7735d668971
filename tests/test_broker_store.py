"""The task queue journal: atomic compaction, replay, torn and damaged lines, foreign files."""

from __future__ import annotations

import json
import logging

from avoviirscollector.broker.store import FORMAT, JOURNAL_NAME, JournalStore


def record(task_id: int, orbit: int = 1) -> dict:
    return {"id": task_id, "subject": "/AVO/viirs/granule/tir", "orbit": orbit}


def test_missing_file_is_an_empty_queue(tmp_path):
    assert JournalStore(tmp_path / "state").load() == ([], 1)


def test_replay_puts_merges_and_takes(tmp_path):
    store = JournalStore(tmp_path)
    store.compact([record(1), record(2)], next_id=3)
    store.put(record(3), new=True)
    store.put(record(1, orbit=7), new=False)  # a merge rewrites the task in place
    store.take(2)
    store.close()
    records, next_id = JournalStore(tmp_path).load()
    assert records == [record(1, orbit=7), record(3)]
    assert next_id == 4


def test_next_id_survives_taking_the_newest_task(tmp_path):
    store = JournalStore(tmp_path)
    store.compact([], next_id=1)
    store.put(record(1), new=True)
    store.take(1)
    store.close()
    assert JournalStore(tmp_path).load() == ([], 2)


def test_compaction_is_one_atomic_rename_and_leaves_no_temp_file(tmp_path):
    store = JournalStore(tmp_path)
    store.compact([record(1)], next_id=2)
    inode_before = (tmp_path / JOURNAL_NAME).stat().st_ino
    store.compact([record(1), record(2)], next_id=3)
    assert (tmp_path / JOURNAL_NAME).stat().st_ino != inode_before
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL_NAME]
    assert oct((tmp_path / JOURNAL_NAME).stat().st_mode & 0o777) == "0o644"
    store.put(record(3), new=True)  # appends to the new file
    store.close()
    assert [r["id"] for r in JournalStore(tmp_path).load()[0]] == [1, 2, 3]


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    store = JournalStore(tmp_path)
    store.compact([record(1)], next_id=2)
    store.close()
    with open(tmp_path / JOURNAL_NAME, "ab") as out:
        out.write(b'{"op":"put","task":{"id":2,"subj')  # a kill in the middle of a write
    with caplog.at_level(logging.WARNING):
        records, _ = JournalStore(tmp_path).load()
    assert records == [record(1)]
    assert "incomplete record" in caplog.text
    assert not list(tmp_path.glob("*.damaged-*"))


def test_damaged_line_in_the_middle_is_skipped_and_a_copy_kept(tmp_path, caplog):
    store = JournalStore(tmp_path)
    store.compact([record(1)], next_id=2)
    store.close()
    with open(tmp_path / JOURNAL_NAME, "ab") as out:
        out.write(b"\x00\x01garbage\n")
        out.write(json.dumps({"op": "put", "task": record(2)}).encode() + b"\n")
    with caplog.at_level(logging.ERROR):
        records, next_id = JournalStore(tmp_path).load()
    assert records == [record(1), record(2)] and next_id == 3
    assert "line 3 is damaged" in caplog.text
    assert len(list(tmp_path.glob(f"{JOURNAL_NAME}.damaged-*"))) == 1


def test_foreign_file_is_moved_aside(tmp_path, caplog):
    path = tmp_path / JOURNAL_NAME
    for content in (b'{"format": "something else", "version": 1}\n', b"\x89HDF\r\n\x1a\n binary", b"[1, 2]\n",
                    json.dumps({"format": FORMAT, "version": 99}).encode() + b"\n"):
        path.write_bytes(content)
        with caplog.at_level(logging.ERROR):
            assert JournalStore(tmp_path).load() == ([], 1)
        assert not path.exists()
        assert "moved aside" in caplog.text
    assert len(list(tmp_path.glob(f"{JOURNAL_NAME}.foreign-*"))) == 4


def test_needs_compaction_after_many_takes(tmp_path):
    store = JournalStore(tmp_path)
    store.compact([record(i) for i in range(1, 11)], next_id=11)
    assert not store.needs_compaction()
    for i in range(11, 5100):
        store.put(record(i), new=True, sync=False)
        store.take(i, sync=False)
    assert store.needs_compaction()
    store.compact([record(i) for i in range(1, 11)], next_id=5100)
    assert not store.needs_compaction()
    store.close()


def test_stepwise_compaction_keeps_every_operation_made_meanwhile(tmp_path):
    store = JournalStore(tmp_path)
    store.compact([record(i) for i in range(1, 2001)], next_id=2001)
    for i in range(1, 1001):
        store.take(i, sync=False)
    snapshot = [record(i) for i in range(1001, 2001)]
    store.start_compaction(snapshot, to_record=lambda r: r, next_id=2001)
    assert store.compacting
    steps = 0
    done = False
    while not done:
        steps += 1
        if steps == 2:  # operations while the new file is being written
            store.put(record(2001), new=True)
            store.take(1001)
            store.put(record(1500, orbit=9), new=False)
        done = store.compaction_step(budget=0.0005)
    assert steps > 3 and not store.compacting
    store.put(record(2002), new=True)  # appends go to the new file
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL_NAME]
    assert (tmp_path / JOURNAL_NAME).stat().st_size < 2000 * 60
    records, next_id = JournalStore(tmp_path).load()
    expected = [record(i, orbit=9 if i == 1500 else 1) for i in range(1002, 2001)] + [record(2001), record(2002)]
    assert records == expected and next_id == 2003


def test_an_interrupted_compaction_leaves_the_old_journal_whole(tmp_path):
    store = JournalStore(tmp_path)
    store.compact([record(1), record(2)], next_id=3)
    store.take(1)
    store.start_compaction([record(2)], to_record=lambda r: r, next_id=3)
    store.put(record(3), new=True)
    # the process dies here: nothing renamed, the old journal has every operation
    assert JournalStore(tmp_path).load() == ([record(2), record(3)], 4)
    store.abort_compaction()
    store.close()
    assert not (tmp_path / (JOURNAL_NAME + ".tmp")).exists()
