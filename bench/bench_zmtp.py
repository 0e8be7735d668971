"""Benchmark: the ZMTP listener (avoviirscollector/broker/zmtp) beside a bare pyzmq REP loop and a pyzmq ROUTER loop,
on this machine in the same run, each server in a process of its own answering every request with the same reply
(the size of a task reply):

1. throughput: 8 REQ clients (two client processes, four REQ sockets each, as bench_broker.py), each always with one
   request in flight, for ``--seconds``: requests/s, the ratio to the ROUTER loop, round-trip p50/p99, and the
   server process's CPU time per request (every thread: the ROUTER's and REP's libzmq I/O thread too);
2. latency alone: one REQ client asking in a loop: p50/p99.

The listener runs in a loop shaped like task_broker's will be (a zmq.Poller holding the listener, ``handle()``,
``recv_requests()``, ``reply()``, and once a second ``silent()``/``push_empty()``), once as it ships (a PING after
every reply) and once without that PING, to show what it costs. The ROUTER loop is written like task_broker's
``_serve`` today. ``--rounds`` repeats everything in a rotated order and reports each figure's median (the machine is
shared: single runs wander).

The goal when the listener replaces task_broker's ROUTER: the broker within 10% of today's throughput and latency
(bench_broker.py: 0.73 of a bare REP loop, p50 4.2 ms with 10,000 queued), so the listener alone must be close to
the ROUTER loop.

Run inside a loopback-only network namespace: ``make bench`` or
``scripts/loopback-netns .venv/bin/python bench/bench_zmtp.py [--seconds S] [--rounds N]``; ``--profile FILE`` writes
a pyinstrument profile of the listener under load (``.venv/bin/pip install pyinstrument`` first).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avoviirscollector.broker.zmtp import ZmtpListener  # noqa: E402
from tests.support import free_port, percentile  # noqa: E402

CLIENT_PROCESSES = 2
SOCKETS_PER_PROCESS = 4
REPLY = b"r" * 1500  # about a task reply's size (bench_broker prints the real one's)
REQUEST = b'{"desired products": ["btd", "tir"], "just testing": true}'
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def client(port: int, sockets: int, seconds: float, out: mp.Queue) -> None:
    """``sockets`` REQ sockets, each always with one request in flight, for ``seconds``; the latencies."""
    context = zmq.Context()
    socks = [context.socket(zmq.REQ) for _ in range(sockets)]
    poller = zmq.Poller()
    for sock in socks:
        sock.connect(f"tcp://127.0.0.1:{port}")
        poller.register(sock, zmq.POLLIN)
    latencies: list[float] = []
    sent_at = {sock: time.perf_counter() for sock in socks}
    for sock in socks:
        sock.send(REQUEST)
    deadline, in_flight = time.perf_counter() + seconds, len(socks)
    while in_flight:
        for sock, _ in poller.poll(10000):
            sock.recv()
            now = time.perf_counter()
            latencies.append(now - sent_at[sock])
            in_flight -= 1
            if now < deadline:
                sent_at[sock] = now
                sock.send(REQUEST)
                in_flight += 1
    context.destroy(linger=0)
    out.put(latencies)


def drive(port: int, processes: int, sockets: int, seconds: float) -> tuple[float, list[float]]:
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=client, args=(port, sockets, seconds, out)) for _ in range(processes)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    latencies = [lat for lats in results for lat in lats]
    return len(latencies) / elapsed, latencies


def rep_loop(port: int, ready) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    ready.set()
    while True:
        sock.recv()
        sock.send(REPLY)


def router_loop(port: int, ready) -> None:
    """As task_broker's ``_serve``: poll, then every waiting request answered without blocking."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind(f"tcp://127.0.0.1:{port}")
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    ready.set()
    while True:
        poller.poll(50)
        while router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = router.recv_multipart(zmq.NOBLOCK)
            router.send_multipart(frames[:-1] + [REPLY], zmq.NOBLOCK)


def listener_loop(port: int, ready, ping_after_reply: bool = True, profile: str | None = None) -> None:
    """The listener in a loop shaped like task_broker's will be."""
    listener = ZmtpListener(port, "127.0.0.1", ping_after_reply=ping_after_reply)
    poller = zmq.Poller()
    poller.register(listener, zmq.POLLIN)
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        deadline = time.monotonic() + 6
    ready.set()
    next_push = time.monotonic() + 1
    while profiler is None or time.monotonic() < deadline:
        poller.poll(50)
        listener.handle()
        for request in listener.recv_requests():
            listener.reply(request.conn_id, request.frames[:-1] + [REPLY])
        if time.monotonic() >= next_push:
            next_push += 1
            for conn_id in listener.silent(1.0):
                listener.push_empty(conn_id)
    profiler.stop()
    Path(profile).write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    print(listener.counts())


SERVERS = {
    "bare REP": (rep_loop, {}),
    "pyzmq ROUTER": (router_loop, {}),
    "ZMTP listener": (listener_loop, {}),
    "ZMTP listener, no PING after replies": (listener_loop, {"ping_after_reply": False}),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def measure(name: str, seconds: float) -> dict:
    """One server: started in a process, warmed up, driven by 8 REQs then by one; its figures."""
    target, options = SERVERS[name]
    port = free_port()
    ready = mp.Event()
    server = mp.Process(target=target, args=(port, ready), kwargs=options, daemon=True)
    server.start()
    ready.wait(10)
    try:
        drive(port, 1, 2, 0.5)  # warm-up
        cpu = cpu_seconds(server.pid)
        rate, latencies = drive(port, CLIENT_PROCESSES, SOCKETS_PER_PROCESS, seconds)
        cpu = cpu_seconds(server.pid) - cpu
        _, alone = drive(port, 1, 1, seconds / 2)
    finally:
        server.terminate()
        server.join(5)
    return {"rate": rate, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "cpu_us": cpu / len(latencies) * 1e6, "alone_p50": percentile(alone, 50),
            "alone_p99": percentile(alone, 99)}


def report(figures: dict[str, list[dict]]) -> None:
    median = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
              for name, runs in figures.items()}
    router = median["pyzmq ROUTER"]["rate"]
    print(f"{'server':38} {'req/s':>8} {'/ROUTER':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10}   "
          f"{'1 client p50/p99 ms':>19}")
    for name, fig in median.items():
        print(f"{name:38} {fig['rate']:8.0f} {fig['rate'] / router:8.2f} {fig['p50'] * 1e3:7.2f} "
              f"{fig['p99'] * 1e3:7.2f} {fig['cpu_us']:10.1f}   {fig['alone_p50'] * 1e3:9.3f} / "
              f"{fig['alone_p99'] * 1e3:.3f}")
    rates = {name: [f"{run['rate']:.0f}" for run in runs] for name, runs in figures.items()}
    print(f"req/s of each round: {rates}")


def profile_listener(path: str, seconds: float) -> None:
    port = free_port()
    ready = mp.Event()
    server = mp.Process(target=listener_loop, args=(port, ready), kwargs={"profile": path})
    server.start()
    ready.wait(10)
    drive(port, CLIENT_PROCESSES, SOCKETS_PER_PROCESS, min(seconds, 5))
    server.join(30)
    print(f"pyinstrument profile of the listener under 8 REQ clients written to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput run; default %(default)s")
    parser.add_argument("--rounds", type=int, default=3, help="default %(default)s")
    parser.add_argument("--profile", metavar="FILE", help="write a pyinstrument profile of the listener instead")
    args = parser.parse_args(argv)
    if args.profile:
        profile_listener(args.profile, args.seconds)
        return 0
    names = list(SERVERS)
    figures: dict[str, list[dict]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names[round_number % len(names):] + names[:round_number % len(names)]:
            figures[name].append(measure(name, args.seconds))
    print(f"{CLIENT_PROCESSES * SOCKETS_PER_PROCESS} REQ clients, reply {len(REPLY)} bytes, {args.rounds} rounds of "
          f"{args.seconds:g} s, medians; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end")
    report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
