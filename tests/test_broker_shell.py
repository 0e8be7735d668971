"""task_broker's shell in this process (broker/server.py around its core, on real sockets): the operators' commands
over the ipc socket with ``avoviirscollector tasks``, and a hand-out's worker address as ZeroMQ reports it."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from posttroll.message import Message

from avoviirscollector import tasks
from tests.broker_support import InProcessBroker, Status, place, request, seed_queue

T0 = dt.datetime(2024, 6, 1, 12, 10, 3, 300000)  # ASCENDING_TIME of the test TLEs, in the naive form of names


@pytest.fixture
def broker(tmp_path, monkeypatch):
    base = tmp_path / "viirs"
    btd = place(base, "btd", "npp", T0)  # in sdr/ before the first start: only an operator queues it
    seed_queue(base, ["tir"])
    monkeypatch.setenv("VIIRS_BASE", str(base))
    b = InProcessBroker(base)
    b.btd = btd
    b.start()
    try:
        yield b
    finally:
        assert b.stop() == 0


def tasks_cli(capsys, *args: str) -> tuple[int, str]:
    code = tasks.main(list(args))
    return code, capsys.readouterr().out


def test_operators_list_drop_and_requeue_over_the_socket_and_the_ledger_names_the_worker(broker, capsys, caplog):
    caplog.set_level(logging.INFO, "task_broker")
    code, out = tasks_cli(capsys, "requeue", "--from", T0.isoformat(), "--product", "btd")
    assert code == 0 and "re-queued 1 granules" in out, out
    with Status(broker.update_port) as status:
        status.wait_for(lambda s: s["tasks by product"] == {"btd": 1, "tir": 1}, timeout=20)
    task = Message.decode(request(broker.task_port, b'{"desired products": ["btd"]}'))
    assert [item["uid"] for item in task.data["dataset"]] == broker.btd
    assert task.data["platform_name"] == "Suomi-NPP" and task.data["pass_direction"] == "ascending"
    code, out = tasks_cli(capsys, "list", "--json")
    assert code == 0
    answer = json.loads(out)
    assert [t["product"] for t in answer["queued"]] == ["tir"]
    (entry,) = answer["handed out"]
    assert entry["worker"] == "127.0.0.1" and entry["kind"] == "handed out"  # not ::ffff:127.0.0.1
    assert entry["granules"] == [["btd", "Suomi-NPP", T0.isoformat()]]
    assert "to 127.0.0.1" in caplog.text
    tir_id = answer["queued"][0]["id"]
    code, out = tasks_cli(capsys, "drop", str(tir_id))
    assert code == 0 and "dropped task" in out
    assert tasks_cli(capsys, "drop", str(tir_id))[0] == 1
    code, out = tasks_cli(capsys, "requeue", "--from", T0.isoformat(), "--product", "btd")
    assert code == 0 and "re-queued 1 granules" in out, out
    with Status(broker.update_port) as status:
        status.wait_for(lambda s: s["tasks by product"] == {"btd": 1}, timeout=20)
    assert tasks_cli(capsys, "requeue", "--from", "yesterday")[0] == 1
