"""No worker waits for ever, measured: deployed-style workers (plain REQ sockets, no option) against the real suite.

1. Kills: ``--kills`` times, with every worker's request inside task_broker (SIGSTOPped, the requests sent, then
   ``kill -9``; supervisord restarts it): the seconds from the kill to the reply of each waiting worker ("no task",
   pushed to its silent connection), p50 and max over all workers and kills. Goal: max <= 15 s.
2. Hangs: ``--hangs`` times, task_broker SIGSTOPped (its host hung) after each worker was served: the seconds from
   the hang to each worker's REQ dropping its connection and connecting again (libzmq's own monitor events), p50
   and max. Goal: max <= HEARTBEAT_TTL + 2 s. Then SIGCONT and every worker served again.

Run inside a loopback-only network namespace: ``scripts/loopback-netns .venv/bin/python bench/bench_dead_peers.py
[--workers N] [--kills N] [--hangs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zmq  # noqa: E402
from zmq.utils.monitor import recv_monitor_message  # noqa: E402

from tests.e2e.harness import Suite  # noqa: E402
from tests.support import percentile, wait_until  # noqa: E402

ASK = json.dumps({"desired products": ["tir"], "just testing": False}).encode()


class Worker:
    """A plain REQ (no option) and a monitor of its connection's events."""

    def __init__(self, context: zmq.Context, port: int) -> None:
        self.sock = context.socket(zmq.REQ)
        self.events = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def served(self, timeout: float = 30) -> bool:
        self.sock.send(ASK)
        return bool(self.sock.poll(int(timeout * 1000))) and self.sock.recv() is not None

    def close(self) -> None:
        self.sock.disable_monitor()
        self.events.close(linger=0)
        self.sock.close(linger=0)


def restarted(suite: Suite, old: int) -> None:
    wait_until(lambda: suite.programs().get("task_broker", ("", old))[1] not in (None, old), 60, "a new task_broker",
               every=0.05)


def kill_round(suite: Suite, workers: list[Worker]) -> list[float]:
    """Seconds from the kill to each worker's reply."""
    old = suite.pid("task_broker")
    os.kill(old, signal.SIGSTOP)
    for worker in workers:
        worker.sock.send(ASK)
    time.sleep(0.5)
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    took = []
    for worker in workers:
        if worker.sock.poll(int(max(0.1, 60 - (time.monotonic() - killed)) * 1000)):
            worker.sock.recv()
            took.append(time.monotonic() - killed)
        else:
            took.append(float("inf"))
    restarted(suite, old)
    time.sleep(1.2)  # the deployed loop's pause after "no task"
    return took


def hang_round(suite: Suite, workers: list[Worker]) -> list[float]:
    """Seconds from the hang to each worker's REQ connected again (dropped by the TTL, then a new handshake)."""
    for worker in workers:
        assert worker.served()
        while worker.events.poll(0):
            recv_monitor_message(worker.events)
    pid = suite.pid("task_broker")
    os.kill(pid, signal.SIGSTOP)
    hung = time.monotonic()
    try:
        took = [dropped_after(worker, hung) for worker in workers]
    finally:
        os.kill(pid, signal.SIGCONT)
    return took


def dropped_after(worker: Worker, since: float, limit: float = 60) -> float:
    """Seconds from ``since`` (monotonic) to the worker's REQ dropping its connection (inf: not within ``limit``)."""
    while time.monotonic() - since < limit:
        if worker.events.poll(100) and recv_monitor_message(worker.events)["event"] == zmq.EVENT_DISCONNECTED:
            return time.monotonic() - since
    return float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--hangs", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-dead-peers-") as tmp:
        suite = Suite(Path(tmp))
        context = zmq.Context()
        try:
            suite.start()
            ttl = suite.settings.heartbeat_ttl
            workers = [Worker(context, suite.settings.task_port) for _ in range(args.workers)]
            kills = [s for _ in range(args.kills) for s in kill_round(suite, workers)]
            hangs = [s for _ in range(args.hangs) for s in hang_round(suite, workers)]
            served_after = all(worker.served() for worker in workers)
            for worker in workers:
                worker.close()
        finally:
            context.term()
            suite.stop()
    print(f"{args.workers} workers; HEARTBEAT_TTL {ttl} s")
    print(f"kill -9 with requests inside -> every waiting worker answered ({args.kills} kills): "
          f"p50 {percentile(kills, 50):.1f} s, max {max(kills):.1f} s")
    print(f"hung host -> the workers' connection dropped ({args.hangs} hangs): p50 {percentile(hangs, 50):.1f} s, "
          f"max {max(hangs):.1f} s; every worker served after: {served_after}")
    goals = [("kill: max <= 15 s", max(kills) <= 15), (f"hang: max <= TTL + 2 = {ttl + 2} s", max(hangs) <= ttl + 2),
             ("served after", served_after)]
    print("goals: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in goals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
