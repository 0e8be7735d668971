"""monitor under a simulated day of passes: its CPU and memory, and how fast /metrics and / answer with 24 hours of
history.

The day: three satellites a quarter orbit apart (101.5 min orbits), 8 passes each over the station, 10 granules a
pass, every file of every product (12 per granule; one granule in 37 lacks SVM16), placed 20-40 min after the
granule's start: about 2,900 files, 36 GB of real data (here empty files in ``sdr/``; monitor only reads names).
task_broker's journal gets a task per complete product granule and most are handed out a few minutes later, and a
status publisher stands in for task_broker's status stream (1 message a second, the real format). The real
``monitor`` process runs against it (no supervisord: its supervisord poll fails fast, which slightly flatters it).

1. Restart after downtime: the journals of the day's first 20 hours are written before monitor starts; it rebuilds
   them (files, tasks, hand-outs, the queue-length curve) at start: the time that takes.
   Accelerated ingest: the last 4 hours' journal lines are appended with their real (past) times, ``--speed`` times
   faster than real time (default 120: 4 hours in 2 minutes); the CPU monitor spends is divided by the simulated
   time: the ingest cost at real-time rate.
2. Real time with 24 h of history: ``--idle`` seconds (default 60) with Prometheus-like scrapes (/metrics every
   15 s, / every 30 s); CPU over that time is the fixed cost (polls of the journals, sdr/, the logs, the disk;
   the health verdict at each scrape, from what monitor holds). Goal: ingest + fixed under 2% of one core; RSS
   under 100 MB.
3. Response times with 24 hours of history: ``--requests`` (default 200) sequential GETs of /metrics and of /,
   p50 and p99. Goal p99 under 200 ms.

``--screenshot FILE`` also saves the page as headless Chromium renders it (the README's picture comes from here).
Run inside a loopback-only network namespace: ``make bench`` or
``scripts/loopback-netns .venv/bin/python bench/bench_monitor.py [--speed N] [--idle S] [--requests N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avoviirscollector.ondisk.state import BROKER_JOURNAL, MIRROR_JOURNAL  # noqa: E402
from avoviirscollector.viirs import PRODUCTS, format_name  # noqa: E402
from tests.support import free_port, percentile  # noqa: E402

BIN = Path(sys.executable).parent
ORBIT = dt.timedelta(minutes=101.5)
GRANULE = dt.timedelta(seconds=85.4)
SEGMENTS = sorted({s for segs in PRODUCTS.values() for s in segs})
SIZE = 12_400_000


def day_of_passes(now: dt.datetime) -> list[tuple[dt.datetime, str, dict]]:
    """(placed time, "file" or "broker", journal record) for a day ending ``now``, in time order: a mirror journal
    record per file, task_broker's journal records of the tasks."""
    events: list[tuple[dt.datetime, str, dict]] = []
    start_of_day = now - dt.timedelta(hours=24)
    task_ids = itertools.count(1)
    for sat_index, platform in enumerate(("npp", "j01", "j02")):
        first = start_of_day + ORBIT * sat_index / 4
        for orbit in range(14):
            if orbit % 7 in (3, 4, 5) and orbit % 14 != 3:  # out of the station's sight
                continue
            for granule in range(10):
                start = first + orbit * ORBIT + granule * GRANULE
                events += granule_events(platform, orbit, granule, start, now, task_ids)
    events.sort(key=lambda e: e[0])
    return [(at, kind, record) for at, kind, record in events]  # type: ignore[misc]


def granule_events(platform: str, orbit: int, granule: int, start: dt.datetime, now: dt.datetime,
                   task_ids: Iterator[int]) -> list[tuple[dt.datetime, str, dict]]:
    """One granule's events: its files, placed 20-40 min after its start (none if that is after ``now``), then a
    task per complete product (numbered from ``task_ids``)."""
    placed_base = start + dt.timedelta(minutes=20 + granule % 7 * 3)
    if placed_base > now:
        return []
    lacks = (orbit * 10 + granule) % 37 == 0
    naive = start.replace(tzinfo=None)
    events: list[tuple[dt.datetime, str, dict]] = []
    names = {}
    for index, segment in enumerate(SEGMENTS):
        if lacks and segment == "SVM16":
            continue
        name = format_name(segment, platform, naive, naive + GRANULE, 40000 + orbit, naive)
        names[segment] = name
        at = placed_base + dt.timedelta(seconds=index * 3)
        events.append((at, "file", {"time": at.isoformat(), "name": name, "bytes": SIZE,
                                    "md5": "0" * 32, "seconds": 2.5, "connections": 4}))
    done = placed_base + dt.timedelta(seconds=len(SEGMENTS) * 3 + 5)
    for product, needed in PRODUCTS.items():
        if all(s in names for s in needed):
            events += task_events(next(task_ids), product, [names[s] for s in needed], platform, naive, done, now)
    return events


def task_events(task_id: int, product: str, files: list[str], platform: str, naive: dt.datetime, done: dt.datetime,
                now: dt.datetime) -> list[tuple[dt.datetime, str, dict]]:
    """task_broker's journal records of one task: put at ``done``, handed out 2-10 minutes later (if before ``now``)."""
    dataset = [{"uid": name, "uri": f"/viirs/sdr/{name}"} for name in files]
    events = [(done, "broker", {"op": "put", "t": done.isoformat(), "task": {
        "id": task_id, "subject": f"/AVO/viirs/granule/{product}", "type": "dataset",
        "data": {"dataset": dataset}}})]
    taken = done + dt.timedelta(minutes=2 + task_id % 9)
    if taken < now:
        events.append((taken, "broker", {
            "op": "take", "t": taken.isoformat(), "id": task_id, "kind": "handed out",
            "worker": f"10.0.0.{task_id % 4 + 10}:5555",
            "granules": [[product, {"npp": "Suomi-NPP", "j01": "NOAA-20", "j02": "NOAA-21"}[platform],
                          naive.isoformat()]]}))
    return events


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


class StatusStandIn(threading.Thread):
    """task_broker's status stream: queue length from the journal records written so far, once a second."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.length, self.stopping = port, 0, threading.Event()

    def run(self) -> None:
        context = zmq.Context()
        pub = context.socket(zmq.PUB)
        pub.bind(f"tcp://127.0.0.1:{self.port}")
        while not self.stopping.wait(1.0):
            pub.send_json({"queue length": self.length, "products waiting": ["tir"] if self.length else [],
                           "tasks by product": {"tir": self.length} if self.length else {},
                           "recovered (24 h)": 0, "in doubt (24 h)": 0, "duplicate (24 h)": 0})
        pub.close(linger=0)
        context.term()


def timed_gets(url: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as reply:
            reply.read()
        out.append(time.perf_counter() - started)
    return out


class Journals:
    """The mirror's and task_broker's journals that monitor reads, appended as the day goes, and the queue length
    they make, which the status stand-in publishes once they are flushed."""

    def __init__(self, base: Path, status: StatusStandIn, now: dt.datetime) -> None:
        self.sdr, self.status, self.length = base / "sdr", status, 0
        self.mirror = open(base / "state" / MIRROR_JOURNAL, "a")
        self.broker = open(base / "state" / BROKER_JOURNAL, "a")
        self.broker.write(json.dumps({"format": "avoviirscollector-task-queue", "version": 2, "t": now.isoformat(),
                                      "next_id": 1, "ledger_since": (now - dt.timedelta(days=2)).isoformat()}) + "\n")
        self.broker.flush()

    def append(self, kind: str, record: dict) -> None:
        if kind == "file":
            self.mirror.write(json.dumps(record, separators=(",", ":")) + "\n")
            (self.sdr / record["name"]).touch()
        else:
            self.broker.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.length += 1 if record["op"] == "put" else -1

    def flush(self) -> None:
        self.mirror.flush()
        self.broker.flush()
        self.status.length = self.length


@dataclass
class Monitor:
    """The monitor process under test, where it answers and where its output goes."""

    proc: subprocess.Popen
    url: str
    log: Path

    def get(self, path: str) -> bytes:
        return urllib.request.urlopen(self.url + path, timeout=10).read()


def make_base(tmp: Path) -> Path:
    """A VIIRS_BASE with its folders and a task_broker log of one error line (the page shows it)."""
    base = tmp / "viirs"
    for sub in ("sdr", "tmp", "log", "state", "elements", "run"):
        (base / sub).mkdir(parents=True)
    (base / "log" / "task_broker.log").write_text(
        "2026-01-01T00:00:00Z task_broker ERROR an example error line, as the page shows it\n")
    return base


def wait_serving(monitor: Monitor) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(monitor.url + "/metrics", timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline or monitor.proc.poll() is not None:
                raise SystemExit(f"monitor did not start: {monitor.log.read_text()}") from None
            time.sleep(0.05)


def accelerated_ingest(monitor: Monitor, journals: Journals, events: list[tuple[dt.datetime, str, dict]], first: int,
                       cut: dt.datetime, speed: float, files: int) -> float:
    """1. The journal lines of ``events[first:]`` (from ``cut`` on) at ``speed`` times real time; prints the CPU
    that costs monitor and returns it in % of a core at real-time rate."""
    cpu0 = cpu_seconds(monitor.proc.pid)
    wall0 = time.monotonic()
    for at, kind, record in events[first:]:
        due = wall0 + (at - cut).total_seconds() / speed
        pause = due - time.monotonic()
        if pause > 0:
            journals.flush()
            time.sleep(pause)
        journals.append(kind, record)
    journals.flush()
    time.sleep(6)  # the last poll
    ingest_cpu = cpu_seconds(monitor.proc.pid) - cpu0
    ingest_wall = time.monotonic() - wall0
    simulated = (events[-1][0] - cut).total_seconds()
    got = monitor.get("/metrics").decode()
    placed = sum(float(line.rsplit(" ", 1)[1]) for line in got.splitlines()
                 if line.startswith("avo_files_placed_total{"))
    print(f"ingest: {ingest_cpu:.2f} CPU s over {ingest_wall:.0f} s for {simulated / 3600:.1f} simulated "
          f"hours; at real-time rate that is {100 * ingest_cpu / simulated:.4f}% of a core "
          f"(avo_files_placed_total {placed:.0f} of {files})")
    return 100 * ingest_cpu / simulated


def real_time(monitor: Monitor, base: Path, idle: float, ingest: float) -> tuple[float, float]:
    """2. ``idle`` seconds at real time with 24 h of history, scraped like Prometheus; prints the CPU and memory
    that costs and returns (CPU with the ``ingest`` in % of a core, peak RSS in MB)."""
    cpu1 = cpu_seconds(monitor.proc.pid)
    wall1 = time.monotonic()
    next_metrics = next_page = wall1
    while time.monotonic() - wall1 < idle:
        if time.monotonic() >= next_metrics:
            monitor.get("/metrics")
            next_metrics += 15
        if time.monotonic() >= next_page:
            monitor.get("/")
            next_page += 30
        time.sleep(0.2)
    idle_cpu = cpu_seconds(monitor.proc.pid) - cpu1
    idle_wall = time.monotonic() - wall1
    fixed = 100 * idle_cpu / idle_wall
    rss, peak = rss_mb(monitor.proc.pid)
    total = fixed + ingest
    print(f"real time with 24 h of history: {idle_cpu:.2f} CPU s over {idle_wall:.0f} s = {fixed:.2f}% "
          f"of a core; with the ingest {total:.2f}% (goal < 2%)")
    print(f"RSS {rss:.1f} MB, peak {peak:.1f} MB (goal < 100 MB); state/monitor.json "
          f"{(base / 'state' / 'monitor.json').stat().st_size / 1e6:.2f} MB")
    return total, peak


def response_times(monitor: Monitor, requests: int) -> tuple[list[float], list[float]]:
    """3. ``requests`` sequential GETs of /metrics and of /; prints p50, p99 and max, returns the times of both."""
    metrics_times = timed_gets(monitor.url + "/metrics", requests)
    page_times = timed_gets(monitor.url + "/", requests)
    size_metrics = len(monitor.get("/metrics"))
    size_page = len(monitor.get("/"))
    for label, times, size in (("/metrics", metrics_times, size_metrics), ("/", page_times, size_page)):
        print(f"GET {label:8s} ({size / 1000:.0f} kB): p50 {percentile(times, 50) * 1e3:.1f} ms, "
              f"p99 {percentile(times, 99) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms (goal p99 < 200 ms)")
    return metrics_times, page_times


def screenshot(monitor: Monitor, path: Path, tmp: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium: no screenshot")
        return
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp / 'chromium'}", "--disable-dev-shm-usage",
                    f"--screenshot={path.resolve()}", "--window-size=1140,1300",
                    monitor.url + "/"], capture_output=True, timeout=120, check=True)
    print(f"screenshot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=120.0, help="simulated seconds per real second")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds at real time with full history")
    parser.add_argument("--requests", type=int, default=200, help="GETs of /metrics and of / each")
    parser.add_argument("--screenshot", type=Path, help="save the page as headless Chromium renders it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_monitor.") as tmp:
        base = make_base(Path(tmp))
        now = dt.datetime.now(dt.UTC)
        events = day_of_passes(now)
        files = sum(1 for _, kind, _ in events if kind == "file")
        print(f"simulated day: {files} files, {sum(1 for e in events if e[1] == 'broker')} broker records; the last "
              f"4 hours at speed x{args.speed:g}")
        monitor_port, update_port = free_port(), free_port()
        env = dict(os.environ, VIIRS_BASE=str(base), MONITOR_PORT=str(monitor_port), UPDATE_PORT=str(update_port),
                   TASK_PORT=str(free_port()), PUBLISH_PORT=str(free_port()))
        status = StatusStandIn(update_port)
        status.start()
        journals = Journals(base, status, now)
        cut = now - dt.timedelta(hours=4)
        before = [e for e in events if e[0] < cut]
        for _, kind, record in before:
            journals.append(kind, record)
        journals.flush()
        log = open(Path(tmp) / "monitor.log", "ab")
        started = time.monotonic()
        proc = subprocess.Popen([str(BIN / "monitor")], env=env, stdout=log, stderr=subprocess.STDOUT)
        monitor = Monitor(proc, f"http://127.0.0.1:{monitor_port}", Path(tmp) / "monitor.log")
        try:
            wait_serving(monitor)
            print(f"start with 20 h to rebuild from the journals ({sum(1 for e in before if e[1] == 'file')} files, "
                  f"{sum(1 for e in before if e[1] == 'broker')} broker records): serving after "
                  f"{time.monotonic() - started:.2f} s, {cpu_seconds(proc.pid):.2f} CPU s")
            ingest = accelerated_ingest(monitor, journals, events, len(before), cut, args.speed, files)
            total, peak = real_time(monitor, base, args.idle, ingest)
            metrics_times, page_times = response_times(monitor, args.requests)
            if args.screenshot:
                screenshot(monitor, args.screenshot, Path(tmp))
            ok = total < 2.0 and peak < 100 and percentile(metrics_times, 99) < 0.2 and percentile(page_times, 99) < 0.2
            return 0 if ok else 1
        finally:
            proc.terminate()
            proc.wait(10)
            status.stopping.set()
            status.join(2)


if __name__ == "__main__":
    raise SystemExit(main())
