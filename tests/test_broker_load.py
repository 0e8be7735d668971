"""task_broker's start from its journal (BrokerCore.load), without sockets: the ledger as replayed."""

from __future__ import annotations

import datetime as dt

from avoviirscollector.broker.core import BrokerCore
from avoviirscollector.broker.store import JournalStore
from avoviirscollector.broker.taskqueue import TaskQueue, parse_granule, task_to_record
from tests.broker_support import ASCENDING_TIME, granule_data

NOW = dt.datetime.now(dt.UTC)


def granule(base, orbit=100):
    data = granule_data("btd", "NOAA-20", orbit, ASCENDING_TIME, base)
    return parse_granule("/AVO/viirs/granule/btd", "dataset", "gatherer@test", NOW, data)


def test_a_task_put_back_after_a_failed_delivery_is_queued_and_not_in_the_ledger(tmp_path):
    queue = TaskQueue()
    task, _, _ = queue.admit(granule(tmp_path), "ascending")
    store = JournalStore(tmp_path / "state")
    store.compact(iter([{"op": "put", "task": task_to_record(task)}]), store.header(queue.next_id, NOW))
    queue.take(["btd"], when=NOW, worker="127.0.0.1")
    store.take(task.id, **queue.ledger()[0].to_record())
    store.put(task_to_record(task))  # the reply could not be delivered: put back
    store.append({"op": "stop"})
    store.close()
    broker = BrokerCore(JournalStore(tmp_path / "state"), tmp_path / "sdr", dt.timedelta(hours=6))
    broker.load()
    broker.close()
    assert [t.id for t in broker.queue] == [task.id] and broker.queue.ledger() == []
    assert broker.queue.admit(granule(tmp_path), "ascending")[1] == "merged"
