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
from pathlib import Path

import posttroll
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avoviirscollector.viirs import PRODUCTS, format_name  # noqa: E402
from tests.e2e.harness import Suite  # noqa: E402
from tests.support import percentile  # noqa: E402


def direct_address(suite: Suite, service: str) -> str:
    from posttroll.ns import get_pub_address

    env = suite.env
    with posttroll.config.set(nameserver_port=int(env["POSTTROLL_NAMESERVER_PORT"])):
        addresses = get_pub_address(service, timeout=10, nameserver="localhost")
    return addresses[0]["URI"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--granules", type=int, default=200, help="btd granules (3 files each); default %(default)s")
    args = parser.parse_args(argv)
    ctx = zmq.Context.instance()
    with tempfile.TemporaryDirectory() as tmp, Suite(Path(tmp)) as suite:
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

        lat = {"file ours": [], "file direct": [], "dataset ours": [], "dataset direct": []}
        base = dt.datetime(2026, 11, 23, 0, 0, 0, 600000)
        for g in range(args.granules):
            start = base + dt.timedelta(minutes=2 * g)
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
                deadline = t0 + 10
                while wanted and time.perf_counter() < deadline:
                    for sock, _ in poller.poll(100):
                        raw = sock.recv().decode()
                        now = time.perf_counter()
                        kind = "dataset" if " dataset " in raw[:80] else "file"
                        who = "ours" if sock is ours.sock else "direct"
                        for key, marker in list(wanted):
                            if key == f"{kind} {who}" and marker in raw:
                                lat[key].append((now - t0) * 1000)
                                wanted.discard((key, marker))
                if wanted:
                    print(f"missing after 10 s: {sorted(wanted)}", file=sys.stderr)
                    return 1
        ours.close()
        direct_files.close(linger=0)
        direct_sets.close(linger=0)

    print(f"{args.granules} btd granules, {len(lat['file ours'])} files, loopback, 2 cores")
    print(f"{'path':<34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for key, label in (("file direct", "file: trollstalker's publisher"), ("file ours", "file: PUBLISH_PORT"),
                       ("dataset direct", "dataset: gatherer's publisher"), ("dataset ours", "dataset: PUBLISH_PORT")):
        values = lat[key]
        print(f"{label:<34}{statistics.median(values):>9.1f}{percentile(values, 99):>9.1f}{max(values):>9.1f}")
    for kind in ("file", "dataset"):
        added = statistics.median(lat[f"{kind} ours"]) - statistics.median(lat[f"{kind} direct"])
        verdict = "OK" if added <= 20 else "MISSED"
        print(f"msg_publisher adds at p50 ({kind}): {added:.1f} ms (goal <= 20 ms): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
