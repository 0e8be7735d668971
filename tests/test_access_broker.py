"""ALLOWED_CLIENTS on task_broker as a process (real nameserver, real publisher, real sockets; 127.0.0.2 plays the
foreign host): an allowed deployed-style worker gets its task, a foreign one gets nothing on TASK_PORT or UPDATE_PORT
and is not left holding a task, one log line; the operators' ipc socket keeps working; refused connects at 100 a
second do not stall the allowed worker."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from posttroll.publisher import Publish

from avoviirscollector.access import read_refusals
from tests.broker_support import ASCENDING_TIME, BIN, Broker, DeployedWorker, Status, granule_data
from tests.support import ask, wait_until
from tests.test_broker_server import send_until_visible

FOREIGN = "127.0.0.2"
REPO = Path(__file__).resolve().parents[1]
REFUSED_LINE = f"refused a connection from {FOREIGN} to task_broker: not in ALLOWED_CLIENTS"


@pytest.fixture
def broker(tmp_path, nameserver):
    b = Broker(tmp_path / "viirs")
    b.env["ALLOWED_CLIENTS"] = "127.0.0.1"
    try:
        b.start()
        yield b
    finally:
        b.stop()


def served_worker(broker: Broker, timeout: float = 15, **where: str) -> DeployedWorker:
    """A deployed-style worker asking for tir (from and to the addresses ``where`` names), run until a task came
    and stopped."""
    worker = DeployedWorker(broker.task_port, broker.update_port, ["tir"], **where)
    worker.start()
    try:
        wait_until(lambda: worker.received, timeout, lambda: f"a task for the worker\n{broker.log_text()[-3000:]}")
    finally:
        worker.stop()
    return worker


def counted_refusals(broker: Broker, at_least: float) -> list[dict]:
    """The broker's refusal counts (``read_refusals``) once they hold ``at_least`` refusals: the file is rewritten
    at most once a second."""
    return wait_until(lambda: (found := read_refusals(broker.base / "state")) and found[0]["total"] >= at_least
                      and found, 5, f"{at_least:g} refusals in the counts file")


def test_only_allowed_clients_get_tasks_and_status(tmp_path, broker):
    with Publish("segment_gatherer_test", nameservers=["localhost"]) as pub:
        send_until_visible(pub, broker, "tir", granule_data("tir", "NOAA-20", 70001, ASCENDING_TIME, tmp_path), 1)
    foreign = DeployedWorker(broker.task_port, broker.update_port, ["tir"], source=FOREIGN)
    foreign.start()
    try:
        # a foreign client that asks without waiting for the status: its request is never delivered, never answered
        body = json.dumps({"desired products": ["tir"], "just testing": False}).encode()
        assert ask(broker.task_port, body, 3.0, source=FOREIGN) is None
    finally:
        foreign.stop()
    assert foreign.heard == 0 and not foreign.received and not foreign.latencies
    with Status(broker.update_port) as status:  # the task is still there for the allowed worker
        assert status.wait_for(lambda s: True, 5)["queue length"] == 1
    allowed = served_worker(broker)
    assert len(allowed.received) == 1 and b"/AVO/viirs/granule/tir" in allowed.received[0]
    # the operators' socket (ipc://, no IP address) is not refused
    listed = subprocess.run([str(BIN / "avoviirscollector"), "tasks", "list"], env=broker.env, capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    log = broker.log_text()
    assert log.count("refused a connection") == 1 and REFUSED_LINE in log, log[-3000:]
    (counts,) = counted_refusals(broker, 2)
    assert counts["program"] == "task_broker" and counts["total"] >= 2 and set(counts["peers"]) == {FOREIGN}


def test_ipv6_entries_admit_ipv6_workers_and_ipv4_peers_are_checked_as_ipv4(tmp_path, nameserver, ipv6_hosts):
    """TASK_PORT and UPDATE_PORT listen on IPv6 and IPv4: with ALLOWED_CLIENTS naming one IPv6 address, a worker
    from it (to ::1) gets its task; another IPv6 address and 127.0.0.2 (over IPv4, seen by the dual-stack socket as
    ::ffff:127.0.0.2) get nothing, each refusal logged once under its own address."""
    allowed6, foreign6 = ipv6_hosts
    broker = Broker(tmp_path / "viirs")
    broker.env["ALLOWED_CLIENTS"] = f"{allowed6}, 192.0.2.0/24"
    try:
        broker.start()
        with Publish("segment_gatherer_test", nameservers=["localhost"]) as pub:
            send_until_visible(pub, broker, "tir", granule_data("tir", "NOAA-20", 70002, ASCENDING_TIME, tmp_path), 1)
        foreigners = [DeployedWorker(broker.task_port, broker.update_port, ["tir"], source=foreign6, host="::1"),
                      DeployedWorker(broker.task_port, broker.update_port, ["tir"], source=FOREIGN)]
        for worker in foreigners:
            worker.start()

        def both_refused() -> bool:  # each foreign worker's two sockets (status and tasks) refused
            peers = {peer: count for c in read_refusals(broker.base / "state") for peer, count in c["peers"].items()}
            return all(peers.get(address, 0) >= 2 for address in (foreign6, FOREIGN))

        try:
            wait_until(both_refused, 10, "the foreign workers refused")
        finally:
            for worker in foreigners:
                worker.stop()
        for worker in foreigners:
            assert worker.heard == 0 and not worker.received and not worker.latencies
        allowed = served_worker(broker, source=allowed6, host="::1")
        assert allowed.heard > 0 and len(allowed.received) == 1, broker.log_text()[-3000:]
        log = broker.log_text()
        assert log.count("refused a connection") == 2, log[-3000:]
        assert f"refused a connection from {foreign6} to task_broker" in log and REFUSED_LINE in log
        assert re.search(rf"handed out task \d+ tir .* to {re.escape(allowed6)}\n", log), log[-2000:]
    finally:
        broker.stop()


def flood(port: int, seconds: float, per_second: int = 100, keep: float = 0.5) -> int:
    """New connections from FOREIGN at ``per_second`` for ``seconds``, each closed ``keep`` seconds later; returns
    how many were made. Runs in a process of its own (see :func:`start_flood`) so that it takes nothing from the
    measuring client but CPU."""
    context = zmq.Context()
    opened: list[tuple[float, zmq.Socket]] = []
    count = 0
    start = next_at = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            while opened and now - opened[0][0] >= keep:
                opened.pop(0)[1].close(linger=0)
            if now < next_at:
                time.sleep(min(0.005, next_at - now))  # the flood's pace: per_second connections
                continue
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://{FOREIGN}:0;127.0.0.1:{port}")
            opened.append((now, sock))
            count += 1
            next_at += 1.0 / per_second
    finally:
        for _, sock in opened:
            sock.close(linger=0)
        context.term()
    return count


def start_flood(port: int, seconds: float) -> subprocess.Popen:
    code = f"from tests.test_access_broker import flood; print(flood({port}, {seconds}))"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)


def reply_times(port: int, seconds: float, every: float = 0.02) -> list[float]:
    """An allowed REQ client asking ("just testing") every ``every`` s for ``seconds``: each reply time in s."""
    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    body = json.dumps({"desired products": ["tir"], "just testing": True}).encode()
    times = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            sock.send(body)
            assert sock.poll(5000), "no reply in 5 s"
            sock.recv()
            times.append(time.perf_counter() - sent)
            time.sleep(every)  # the client's pace: a request every ``every`` s
    finally:
        sock.close()
        context.term()
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.mark.alone
def test_refused_connects_do_not_stall_the_allowed_worker(broker):
    """100 refused connects a second from 127.0.0.2 for 30 s; the allowed client's p99 reply time stays < 10 ms.

    The same client is measured for 10 s without the load first. On a machine whose other work alone pushes that
    quiet p99 to 5 ms or more (a shared 2-core test machine while others run their tests), 10 ms cannot be judged:
    the test then skips, giving both figures. The flood runs in a process of its own."""
    quiet = reply_times(broker.task_port, 10)
    flooder = start_flood(broker.task_port, 30)
    try:
        loaded = reply_times(broker.task_port, 30)
    finally:
        out, _ = flooder.communicate(timeout=30)
    result = [int(out.strip())]
    (counts,) = counted_refusals(broker, 0.9 * result[0])
    print(f"\nallowed worker reply time: p99 {p99(loaded) * 1000:.2f} ms, median "
          f"{statistics.median(loaded) * 1000:.2f} ms, max {max(loaded) * 1000:.2f} ms over {len(loaded)} requests "
          f"under {result[0]} refused connects in 30 s ({counts['total']} refusals counted by the broker); "
          f"without load p99 {p99(quiet) * 1000:.2f} ms")
    assert result[0] >= 2900 and counts["total"] >= 0.9 * result[0]
    assert broker.log_text().count("refused a connection") == 1
    if p99(quiet) >= 0.005:
        pytest.skip(f"the machine is too busy to judge 10 ms (p99 {p99(quiet) * 1000:.1f} ms without the load, "
                    f"{p99(loaded) * 1000:.1f} ms with it)")
    assert p99(loaded) < 0.010
