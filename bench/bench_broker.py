"""task_broker throughput, latency and memory, against a bare pyzmq REP loop measured in the same run.

1. Throughput: 8 concurrent REQ clients (each always has one request in flight), for a fixed time, against
   (a) a bare pyzmq REP loop that answers every request with a fixed message the size of a task reply, and
   (b) the task_broker process with 10,000 tasks queued, answering ``"just testing"`` requests with the oldest
   task (the full path: parse, validate, pick, encode). Prints requests/s for both and the ratio. Goal >= 0.5.
2. Latency: the same 8 clients take real tasks (removed from the queue, written to the journal and fsync'd
   before the reply) while 10,000 are queued; p50/p99 of the round trip. Goal p99 <= 5 ms.
3. The broker's RSS (and peak RSS) with 10,000 tasks queued. Goal <= 80 MB. Also the RSS of the pass-direction
   helper process after one direction (it holds pyorbital, scipy and h5py, outside the broker).

The clients run in two client processes (4 REQ sockets each), the servers in their own processes.
Run inside a loopback-only network namespace: ``make bench`` or
``scripts/loopback-netns .venv/bin/python bench/bench_broker.py [--seconds S] [--tasks N]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avoviirscollector.broker.direction_client import DirectionClient  # noqa: E402
from avoviirscollector.broker.protocol import encode_task  # noqa: E402
from tests.broker_support import ASCENDING_TIME, Broker, Status, seed_queue  # noqa: E402
from tests.support import percentile  # noqa: E402

CLIENT_PROCESSES = 2
SOCKETS_PER_PROCESS = 4
PRODUCTS = ["tir", "mir", "btd", "vis", "dnb"]


def client(port: int, payload: bytes, seconds: float, limit: int, out: mp.Queue) -> None:
    """SOCKETS_PER_PROCESS REQ sockets, each always with one request in flight, for ``seconds`` or ``limit``."""
    context = zmq.Context()
    socks = []
    for _ in range(SOCKETS_PER_PROCESS):
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port}")
        socks.append(sock)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    latencies: list[float] = []
    empty = 0
    sent_at = {}
    deadline = time.perf_counter() + seconds
    for sock in socks:
        sent_at[sock] = time.perf_counter()
        sock.send(payload)
    in_flight = len(socks)
    while in_flight:
        for sock, _ in poller.poll(10000):
            reply = sock.recv()
            now = time.perf_counter()
            latencies.append(now - sent_at[sock])
            empty += reply == b""
            in_flight -= 1
            if now < deadline and len(latencies) + in_flight < limit:
                sent_at[sock] = time.perf_counter()
                sock.send(payload)
                in_flight += 1
    for sock in socks:
        sock.close()
    context.term()
    out.put((latencies, empty))


def drive(port: int, payload: bytes, seconds: float, limit: int = 10**9) -> tuple[float, list[float], int]:
    """Run the client processes; requests/s over the busy period, all latencies, empty replies."""
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=client, args=(port, payload, seconds, limit // CLIENT_PROCESSES, out))
             for _ in range(CLIENT_PROCESSES)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    latencies = [lat for lats, _ in results for lat in lats]
    return len(latencies) / elapsed, latencies, sum(empty for _, empty in results)


def bare_rep(port: int, reply: bytes, ready) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    ready.set()
    while True:
        message = sock.recv()
        if message == b"stop":
            sock.send(b"")
            break
        sock.send(reply)
    sock.close()
    context.term()


def seed(base: Path, count: int) -> bytes:
    """Write ``count`` tasks as the broker's state; returns the encoded reply of one (the bare REP's answer)."""
    tasks = seed_queue(base, [PRODUCTS[index % len(PRODUCTS)] for index in range(count)], orbit=10000)
    return encode_task(tasks[0])


def rss_kb(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def measure_bare_rep(reply: bytes, payload: bytes, seconds: float) -> tuple[float, list[float]]:
    """Throughput and latencies of the bare REP loop (in a process of its own) answering ``reply``."""
    from tests.broker_support import free_port

    port = free_port()
    ready = mp.Event()
    rep = mp.Process(target=bare_rep, args=(port, reply, ready))
    rep.start()
    ready.wait(10)
    rate, latencies, _ = drive(port, payload, seconds)
    context = zmq.Context()
    stopper = context.socket(zmq.REQ)
    stopper.connect(f"tcp://127.0.0.1:{port}")
    stopper.send(b"stop")
    stopper.recv()
    stopper.close()
    context.term()
    rep.join(5)
    return rate, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run; default %(default)s")
    parser.add_argument("--tasks", type=int, default=10000, help="tasks queued; default %(default)s")
    args = parser.parse_args(argv)
    peek = json.dumps({"desired products": ["btd", "tir"], "just testing": True}).encode()
    take = json.dumps({"desired products": PRODUCTS}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "viirs"
        reply = seed(base, args.tasks)
        print(f"task reply size: {len(reply)} bytes; {args.tasks} tasks queued; "
              f"{CLIENT_PROCESSES * SOCKETS_PER_PROCESS} REQ clients")

        bare_rate, bare_lat = measure_bare_rep(reply, peek, args.seconds)
        broker = Broker(base)
        started = time.perf_counter()
        broker.start()
        print(f"broker started with {args.tasks} tasks in {time.perf_counter() - started:.2f} s")
        try:
            rss_loaded, _ = rss_kb(broker.proc.pid)
            broker_rate, broker_lat, empty = drive(broker.task_port, peek, args.seconds)
            assert empty == 0, "just-testing requests found no task"
            handouts = min(args.tasks // 2, 5000)
            _, take_lat, empty = drive(broker.task_port, take, 60, limit=handouts)
            with Status(broker.update_port) as status:
                left = status.next(3)["queue length"]
            rss_now, rss_peak = rss_kb(broker.proc.pid)
        finally:
            broker.stop()
        print(f"throughput  bare REP {bare_rate:8.0f} req/s   task_broker {broker_rate:8.0f} req/s   "
              f"ratio {broker_rate / bare_rate:.2f} (goal >= 0.5)")
        print(f"latency, just testing ({len(broker_lat)} requests): bare p50 {percentile(bare_lat, 50) * 1e3:.2f} ms "
              f"p99 {percentile(bare_lat, 99) * 1e3:.2f} ms; broker p50 {percentile(broker_lat, 50) * 1e3:.2f} ms "
              f"p99 {percentile(broker_lat, 99) * 1e3:.2f} ms")
        print(f"latency, real hand-outs with {args.tasks} queued ({len(take_lat)} taken, {empty} empty, {left} left): "
              f"p50 {percentile(take_lat, 50) * 1e3:.2f} ms  p99 {percentile(take_lat, 99) * 1e3:.2f} ms "
              f"(goal p99 <= 5 ms)")
        print(f"broker RSS: {rss_loaded / 1024:.1f} MB loaded, {rss_now / 1024:.1f} MB after the runs, "
              f"peak {rss_peak / 1024:.1f} MB (goal <= 80 MB)")
        helper = DirectionClient(base / "elements")
        try:
            found = helper.find("NOAA-20", ASCENDING_TIME, [])
            helper_rss, _ = rss_kb(helper.proc.pid)
        finally:
            helper.close()
        print(f"direction helper process (pyorbital, scipy, h5py; outside the broker): {helper_rss / 1024:.1f} MB "
              f"after one direction ({found.value} from {found.method})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
