"""Latency through the supervised suite: rename into sdr/ -> `file` message, last file of a granule -> `dataset`.

Starts the real suite (supervisord with the repo's supervisord.conf) in a temp VIIRS_BASE and subscribes twice:
to the public PUB port (PUBLISH_PORT, through msg_publisher) and directly to trollstalker's and the btd
segment_gatherer's own posttroll publishers (the floor: what the pytroll daemons themselves take). Places btd
granules (GMTCO, SVM15, SVM16) one file at a time, waiting for each message on both, and prints p50/p99 of both
and what msg_publisher adds. Goal: at most 20 ms added at p50.

Run inside a loopback-only network namespace: ``make bench`` or
``scripts/loopback-netns .venv/bin/python bench/bench_bus_latency.py [--granules N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import posttroll
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avoviirscollector.viirs import PRODUCTS, format_name  # noqa: E402
from tests.e2e.harness import Sub, Suite  # noqa: E402
from tests.support import percentile  # noqa: E402


def direct_address(suite: Suite, service: str) -> str:
    from posttroll.ns import get_pub_address

    env = suite.env
    with posttroll.config.set(nameserver_port=int(env["POSTTROLL_NAMESERVER_PORT"])):
        addresses = get_pub_address(service, timeout=10, nameserver="localhost")
    return addresses[0]["URI"]


BASE = dt.datetime(2026, 11, 23, 0, 0, 0, 600000)
#: (key in the latencies, label in the table), in the table's order
PATHS = (("file direct", "file: trollstalker's publisher"), ("file ours", "file: PUBLISH_PORT"),
         ("dataset direct", "dataset: gatherer's publisher"), ("dataset ours", "dataset: PUBLISH_PORT"))


@dataclass
class Subscriptions:
    """Ours on PUBLISH_PORT and the two direct ones on the pytroll daemons' own publishers, in one poller."""

    ours: Sub
    direct_files: zmq.Socket
    direct_sets: zmq.Socket
    poller: zmq.Poller

    def close(self) -> None:
        self.ours.close()
        self.direct_files.close(linger=0)
        self.direct_sets.close(linger=0)


def subscribe(suite: Suite) -> Subscriptions:
    ctx = zmq.Context.instance()
    ours = suite.subscriber()
    suite.wait_flowing(ours)
    direct_files = ctx.socket(zmq.SUB)
    direct_files.setsockopt_string(zmq.SUBSCRIBE, "pytroll://AVO/viirs/sdr")
    direct_files.connect(direct_address(suite, "trollstalker_viirs"))
    direct_sets = ctx.socket(zmq.SUB)
    direct_sets.setsockopt_string(zmq.SUBSCRIBE, "pytroll://AVO/viirs/granule/btd")
    direct_sets.connect(direct_address(suite, "segment_gatherer_btd"))
    time.sleep(1)  # let the direct subscriptions reach the publishers
    poller = zmq.Poller()
    for sock in (ours.sock, direct_files, direct_sets):
        poller.register(sock, zmq.POLLIN)
    return Subscriptions(ours, direct_files, direct_sets, poller)


def collect(subs: Subscriptions, wanted: set[tuple[str, str]], t0: float, lat: dict[str, list[float]]) -> None:
    """Receive until every (key, marker) in ``wanted`` came, 10 s at most; each one's ms since ``t0`` into ``lat``.

    What came is taken out of ``wanted``: what is left in it is missing."""
    deadline = t0 + 10
    while wanted and time.perf_counter() < deadline:
        for sock, _ in subs.poller.poll(100):
            raw = sock.recv().decode()
            now = time.perf_counter()
            kind = "dataset" if " dataset " in raw[:80] else "file"
            who = "ours" if sock is subs.ours.sock else "direct"
            for key, marker in list(wanted):
                if key == f"{kind} {who}" and marker in raw:
                    lat[key].append((now - t0) * 1000)
                    wanted.discard((key, marker))


def place_granule(suite: Suite, subs: Subscriptions, g: int, lat: dict[str, list[float]]) -> set[tuple[str, str]]:
    """Place btd granule number ``g`` one file at a time, each after the previous file's messages came; returns
    what is missing (nothing: all came)."""
    start = BASE + dt.timedelta(minutes=2 * g)
    orbit = 50000 + g
    segments = PRODUCTS["btd"]
    for index, segment in enumerate(segments):
        name = format_name(segment, "j01", start, start + dt.timedelta(seconds=85), orbit, start)
        tmp_file = suite.settings.tmp_dir / name
        tmp_file.write_bytes(b"x")
        last = index == len(segments) - 1
        wanted = {("file ours", name), ("file direct", name)}
        if last:
            marker = f'"orbit_number": {orbit}'
            wanted |= {("dataset ours", marker), ("dataset direct", marker)}
        t0 = time.perf_counter()
        tmp_file.replace(suite.settings.sdr_dir / name)
        collect(subs, wanted, t0, lat)
        if wanted:
            return wanted
    return set()


def report(granules: int, lat: dict[str, list[float]]) -> None:
    print(f"{granules} btd granules, {len(lat['file ours'])} files, loopback, 2 cores")
    print(f"{'path':<34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for key, label in PATHS:
        values = lat[key]
        print(f"{label:<34}{statistics.median(values):>9.1f}{percentile(values, 99):>9.1f}{max(values):>9.1f}")
    for kind in ("file", "dataset"):
        added = statistics.median(lat[f"{kind} ours"]) - statistics.median(lat[f"{kind} direct"])
        verdict = "OK" if added <= 20 else "MISSED"
        print(f"msg_publisher adds at p50 ({kind}): {added:.1f} ms (goal <= 20 ms): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--granules", type=int, default=200, help="btd granules (3 files each); default %(default)s")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Suite(Path(tmp)) as suite:
        subs = subscribe(suite)
        lat: dict[str, list[float]] = {"file ours": [], "file direct": [], "dataset ours": [], "dataset direct": []}
        for g in range(args.granules):
            missing = place_granule(suite, subs, g, lat)
            if missing:
                print(f"missing after 10 s: {sorted(missing)}", file=sys.stderr)
                return 1
        subs.close()
    report(args.granules, lat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
