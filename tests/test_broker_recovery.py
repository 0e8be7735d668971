"""task_broker as a process: reconciliation with sdr/, the operators' commands, hand-outs in doubt, a graceful stop
that answers every request, and a full disk. Real broker, real nameserver, real sockets on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import zmq
from posttroll.message import Message

from avoviirscollector.broker.store import JOURNAL_NAME, JournalStore
from avoviirscollector.viirs import PRODUCTS, format_name
from tests.broker_support import BIN, Broker, Status, free_port, request, seed_queue

T0 = dt.datetime(2024, 6, 1, 12, 10, 3, 300000)  # ASCENDING_TIME of the test TLEs, in the naive form of names


def place(base, product: str, short: str, start: dt.datetime, orbit: int = 70000) -> list[str]:
    names = [format_name(segment, short, start, start + dt.timedelta(seconds=85.4), orbit,
                         start + dt.timedelta(minutes=9)) for segment in PRODUCTS[product]]
    (base / "sdr").mkdir(parents=True, exist_ok=True)
    (base / "tmp").mkdir(parents=True, exist_ok=True)
    for name in names:
        (base / "tmp" / name).write_bytes(b"x")
        os.replace(base / "tmp" / name, base / "sdr" / name)
    return names


def ask(broker: Broker, products: list[str]) -> bytes:
    return request(broker.task_port, json.dumps({"desired products": products}).encode())


def tasks_cli(broker: Broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "avoviirscollector"), "tasks", *args], env=broker.env, capture_output=True,
                          text=True, timeout=30)


def wait_log(broker: Broker, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = broker.log_text()
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the broker's log after {timeout} s:\n{broker.log_text()[-3000:]}")


def test_complete_granules_in_sdr_become_one_task_each_and_operators_steer_them(tmp_path, nameserver):
    """Granules completed while no dataset came (here: no gatherer at all) are recovered once each; the hand-out is
    listed with the worker's address; a dropped task never comes back; a re-queue hands a granule out again."""
    broker = Broker(tmp_path / "viirs")
    try:
        broker.start()  # the ledger begins now: files placed from here on count
        btd = place(broker.base, "btd", "npp", T0)
        place(broker.base, "tir", "j01", T0 + dt.timedelta(minutes=30), orbit=30000)
        place(broker.base, "btd", "j02", T0 + dt.timedelta(minutes=50), orbit=10000)[:2]  # complete too
        os.unlink(broker.base / "sdr" / place(broker.base, "dnb", "npp", T0)[0])  # incomplete: never a task
        with Status(broker.update_port) as status:
            got = status.wait_for(lambda s: s["queue length"] == 3, timeout=60)
        assert got["recovered (24 h)"] == 3 and got["tasks by product"] == {"btd": 2, "tir": 1}
        log = broker.log_text()
        assert log.count("recovered granule") == 3
        assert "recovered granule btd Suomi-NPP 2024-06-01T12:10:03.3 (no dataset from segment_gatherer-btd" in log
        task = Message.decode(ask(broker, ["btd"]))
        assert [item["uid"] for item in task.data["dataset"]] == btd
        assert task.data["platform_name"] == "Suomi-NPP" and task.data["pass_direction"] == "ascending"
        listed = tasks_cli(broker, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        answer = json.loads(listed.stdout)
        assert [t["product"] for t in answer["queued"]] == ["tir", "btd"]
        (entry,) = answer["handed out"]
        assert entry["worker"] == "127.0.0.1" and entry["kind"] == "handed out"
        assert entry["granules"] == [["btd", "Suomi-NPP", T0.isoformat()]]
        assert "to 127.0.0.1" in broker.log_text()
        tir_id = answer["queued"][0]["id"]
        dropped = tasks_cli(broker, "drop", str(tir_id))
        assert dropped.returncode == 0 and "dropped task" in dropped.stdout
        assert tasks_cli(broker, "drop", str(tir_id)).returncode == 1
        requeued = tasks_cli(broker, "requeue", "--from", T0.isoformat(), "--product", "btd")
        assert requeued.returncode == 0 and "re-queued 1 granules" in requeued.stdout, requeued.stdout
        with Status(broker.update_port) as status:
            status.wait_for(lambda s: s["tasks by product"] == {"btd": 2}, timeout=20)
        time.sleep(12)  # a further reconciliation: nothing dropped or queued comes again
        assert broker.wait_status()["tasks by product"] == {"btd": 2}
        assert tasks_cli(broker, "requeue", "--from", "yesterday").returncode == 1
    finally:
        broker.stop()


def test_nothing_completed_before_the_first_start_with_no_ledger_is_recovered(tmp_path, nameserver):
    base = tmp_path / "viirs"
    place(base, "btd", "npp", T0)
    broker = Broker(base)
    try:
        broker.start()
        time.sleep(3)
        place(base, "mir", "npp", T0)
        with Status(broker.update_port) as status:
            got = status.wait_for(lambda s: s["queue length"] >= 1, timeout=60)
            time.sleep(11)
            got = status.next(3)
        assert got["tasks by product"] == {"mir": 1}
    finally:
        broker.stop()


def test_a_hand_out_written_just_before_a_kill_is_queued_again_and_logged_in_doubt(tmp_path, nameserver):
    broker = Broker(tmp_path / "viirs")
    seed_queue(broker.base, ["tir"] * 2)
    try:
        broker.start()
        first = Message.decode(ask(broker, ["tir"]))
        broker.signal(signal.SIGKILL)  # within a second of the hand-out: its reply may never have left
        broker.wait(5)
        broker.start()
        log = wait_log(broker, "is in doubt", 5)
        assert f"orbit {first.data['orbit_number']}" in log.split("is in doubt")[0].splitlines()[-1]
        again = Message.decode(ask(broker, ["tir"]))
        assert again.data["orbit_number"] == first.data["orbit_number"]
        assert broker.wait_status()["in doubt (24 h)"] == 1
        second = Message.decode(ask(broker, ["tir"]))
        time.sleep(2.5)  # marks written after it: a kill now leaves nothing in doubt
        broker.signal(signal.SIGKILL)
        broker.wait(5)
        broker.start()
        assert ask(broker, ["tir"]) == b"", f"task {second.data['orbit_number']} came back"
        assert broker.log_text().count("is in doubt") == 1
    finally:
        broker.stop()


def test_a_graceful_stop_answers_requests_that_arrive_while_it_writes_its_state(tmp_path, nameserver):
    broker = Broker(tmp_path / "viirs")
    seed_queue(broker.base, list(PRODUCTS) * 6000)  # the final write takes a while
    replies: list[bytes | None] = []

    def worker(delay: float) -> None:
        time.sleep(delay)
        context = zmq.Context()
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(f"tcp://127.0.0.1:{broker.task_port}")
            sock.send(b'{"desired products": ["vis"]}')
            replies.append(sock.recv() if sock.poll(10000) else None)
        finally:
            sock.close()
            context.term()

    try:
        broker.start(timeout=60)
        # requests keep coming during the first 0.4 s of the stop; writing 30,000 tasks takes about a second
        workers = [threading.Thread(target=worker, args=(0.01 * i,)) for i in range(40)]
        broker.signal(signal.SIGTERM)
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(20)
        assert broker.wait(10) == 0
        assert len(replies) == 40 and None not in replies, f"{replies.count(None)} requests were never answered"
        assert all(r.startswith(b"pytroll://AVO/viirs/granule/vis") for r in replies)
        loaded = JournalStore(broker.base / "state").load()
        assert loaded.clean and len(loaded.tasks) == 30000 - 40 and len(loaded.ledger) == 40
    finally:
        broker.stop()


def test_on_a_full_disk_it_starts_serves_from_memory_says_so_once_and_writes_again_when_space_returns(
        tmp_path, nameserver):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    seeded = tmp_path / "seed"
    seed_queue(seeded, ["tir"] * 3)
    base = tmp_path / "viirs"
    base.mkdir()
    task_port, update_port = free_port(), free_port()
    env = dict(os.environ, VIIRS_BASE=str(base), TASK_PORT=str(task_port), UPDATE_PORT=str(update_port),
               PUBLISH_PORT=str(free_port()), SEED=str(seeded / "state" / JOURNAL_NAME))
    script = ('mount -t tmpfs -o size=512k tmpfs "$VIIRS_BASE" || exit 97; '
              'mkdir -p "$VIIRS_BASE/state" "$VIIRS_BASE/sdr" "$VIIRS_BASE/elements" "$VIIRS_BASE/run"; '
              'cp "$SEED" "$VIIRS_BASE/state/"; '
              'dd if=/dev/zero of="$VIIRS_BASE/fill" bs=4k 2>/dev/null; '
              'exec "$@"')
    log_path = tmp_path / "task_broker.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                 str(BIN / "task_broker")], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with Status(update_port) as status:
            got = status.next(20)
            if got is None and proc.poll() == 97:
                pytest.skip("cannot mount a tmpfs here")
            assert got is not None, log_path.read_text()
            assert got["queue length"] == 3 and got.get("state behind") is True
            handed = [Message.decode(request(task_port, b'{"desired products": ["tir"]}')) for _ in range(2)]
            assert [m.data["orbit_number"] for m in handed] == [40000, 40001]
            assert request(task_port, b"not json").startswith(b'{"error"')
            time.sleep(1.5)
            log = log_path.read_text()
            assert "Traceback" not in log
            assert log.count("ERROR") == 1 and "state: cannot write" in log and "serving from memory" in log
            (f"/proc/{proc.pid}/root" / base.relative_to("/") / "fill").unlink()  # space comes back
            status.wait_for(lambda s: "state behind" not in s, timeout=20)
        assert "written again" in log_path.read_text()
        loaded = JournalStore(f"/proc/{proc.pid}/root" / base.relative_to("/") / "state").load()
        assert [t["data"]["orbit_number"] for t in loaded.tasks] == [40002]
        assert len(loaded.ledger) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
