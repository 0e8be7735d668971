"""Subscribers of a host whose link dies: how many drop its connection (and can follow the service address to the
other host), for task_broker's status publisher vs a plain pyzmq XPUB with the suite's former heartbeat interval,
measured in the same run.

libzmq arms a connection's TTL timer only when a PING arrives and cancels it when any message arrives. A subscriber
whose last message before the cut was data, not a PING, never drops the connection (no FIN comes: the link is
dead). task_broker's status publisher (broker/zmtp/publisher.py) follows every status with a PING, so no cut can
leave a subscriber behind (before it, libzmq's XPUB with a PING every 50 ms left the cuts within 50 ms of a status).

On host a of the pair lab (tests/e2e/pair.py: network namespaces, a veth on a bridge): task_broker as one host
(status once a second on UPDATE_PORT, heartbeats with HEARTBEAT_TTL 4) and, as the reference, a bare XPUB sending
the same kind of status once a second with a PING every second (``max(1, TTL / 5)``, the interval the publishers
had before). In worker w1, ``--subscribers`` SUB sockets (no option, like the deployed workers) on each, connected
at staggered moments. Then a's switch port goes down, ``--cuts`` times (the link comes back and they reconnect
in between): the share of SUBs that dropped the connection within TTL + 2 s, for each publisher.

Needs root. Run inside a loopback-only network namespace: ``scripts/loopback-netns .venv/bin/python
bench/bench_dead_subscribers.py [--subscribers N] [--cuts N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.broker_support import TLE_FILE  # noqa: E402
from tests.e2e.pair import BIN, HOSTS, PairLab, missing_tools  # noqa: E402
from tests.support import wait_until  # noqa: E402

TTL = 4
UPDATE_PORT, REFERENCE_PORT = 19193, 19194

# The reference: an XPUB with the former interval (a PING every max(1, TTL / 5) s), a status a second
REFERENCE = """
import json, sys, time, zmq
ttl = int(sys.argv[2])
sock = zmq.Context().socket(zmq.XPUB)
sock.setsockopt(zmq.HEARTBEAT_IVL, int(max(1.0, ttl / 5) * 1000))
sock.setsockopt(zmq.HEARTBEAT_TTL, ttl * 1000)
sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ttl * 1000)
sock.bind(f"tcp://*:{sys.argv[1]}")
while True:
    sock.send_json({"queue length": 0, "products waiting": [], "tasks by product": {}})
    time.sleep(1.0)
"""

# N SUBs on each port, connected 0.1 s apart; prints "ready", then for each cut (a line on stdin) how many SUBs of
# each port saw their connection dropped within the given seconds, as JSON
SUBSCRIBERS = """
import json, sys, time, zmq
from zmq.utils.monitor import recv_monitor_message
host, ports, count, wait = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], int(sys.argv[3]), float(sys.argv[4])
context = zmq.Context()
subs = {port: [] for port in ports}
for index in range(count):
    for port in ports:
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECTED)
        sock.connect(f"tcp://{host}:{port}")
        subs[port].append((sock, monitor))
    time.sleep(0.1)
def drain():
    for pairs in subs.values():
        for sock, monitor in pairs:
            while sock.poll(0):
                sock.recv()
            while monitor.poll(0):
                recv_monitor_message(monitor)
print("ready", flush=True)
for line in sys.stdin:
    drain()
    dropped = {port: set() for port in ports}
    until = time.monotonic() + wait
    while time.monotonic() < until:
        for port, pairs in subs.items():
            for index, (sock, monitor) in enumerate(pairs):
                while sock.poll(0):
                    sock.recv()
                while monitor.poll(0):
                    if recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
                        dropped[port].add(index)
        time.sleep(0.02)
    print(json.dumps({str(port): len(found) for port, found in dropped.items()}), flush=True)
"""


def start_publishers(lab: PairLab) -> None:
    host = lab.hosts["a"]
    for folder in ("elements", "log"):
        (host.base / folder).mkdir(parents=True, exist_ok=True)
    (host.base / "elements" / "weather.txt").write_bytes(TLE_FILE.read_bytes())
    env = {**os.environ, "VIIRS_BASE": str(host.base), "TASK_PORT": "19093", "UPDATE_PORT": str(UPDATE_PORT),
           "HEARTBEAT_TTL": str(TTL)}
    host.ns.start(str(BIN / "task_broker"), output=host.base / "log" / "task_broker.out", env=env)
    host.ns.start(sys.executable, "-c", REFERENCE, str(REFERENCE_PORT), str(TTL))
    wait_until(lambda: lab.status("a", UPDATE_PORT), 20, "task_broker's status")


def measure(lab: PairLab, subscribers: int, cuts: int) -> dict[str, int]:
    ports = f"{UPDATE_PORT},{REFERENCE_PORT}"
    proc = subprocess.Popen(lab.workers["w1"].command(sys.executable, "-c", SUBSCRIBERS, HOSTS["a"][0], ports,
                                                      str(subscribers), str(TTL + 2)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    totals = {str(UPDATE_PORT): 0, str(REFERENCE_PORT): 0}
    try:
        assert proc.stdout.readline().strip() == "ready"
        for cut in range(cuts):
            time.sleep(3.0 + 0.37 * cut)  # every SUB connected and hearing; a different phase each cut
            proc.stdin.write("cut\n")
            proc.stdin.flush()
            lab.link("a", False)
            got = json.loads(proc.stdout.readline())
            lab.link("a", True)
            print(f"  cut {cut + 1}: dropped within {TTL + 2} s: task_broker's status {got[str(UPDATE_PORT)]} of "
                  f"{subscribers}, reference {got[str(REFERENCE_PORT)]} of {subscribers}")
            for port, count in got.items():
                totals[port] += count
    finally:
        proc.kill()
        proc.wait(5)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--cuts", type=int, default=5)
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or missing_tools():
        print(f"skipped: needs root and {', '.join(missing_tools()) or 'nothing else'}")
        return 0
    with tempfile.TemporaryDirectory() as tmp, PairLab(Path(tmp)) as lab:
        start_publishers(lab)
        totals = measure(lab, args.subscribers, args.cuts)
    all_subs = args.subscribers * args.cuts
    ours, reference = totals[str(UPDATE_PORT)] / all_subs, totals[str(REFERENCE_PORT)] / all_subs
    print(f"subscribers that dropped a cut-off host within TTL + 2 s: task_broker's status {ours:.0%}, the former "
          f"interval (reference) {reference:.0%} ({all_subs} each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
