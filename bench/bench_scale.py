"""Cost at any archive size (SPEC section 11a): the whole suite with months of files in sdr/, beside the same suite
with only the files of the listing window.

Two VIIRS_BASEs, one after the other in one run (never at the same time, so the CPU figures do not disturb each
other): "empty", whose sdr/ holds only the files of the 2-day listing window, and "archive", the same plus
``--files`` older files (default 600,000: four months at 3 satellites x 150 granules x 12 files a day). Every file
is an empty file with a real VIIRS SDR name (the 12 segments of ``viirs.PRODUCTS``; the window's: npp, j01 and j02
on granule grids of their own, 85.35 s apart, passes of 10 granules, about 150 granules a day each, created 10 min
after the granule's start, which is also its mtime; the archive's: ``tests/archive.py``), made before the suite's
first start in that VIIRS_BASE; the archive's granules end an hour before the window begins. The GINA double
(``tests/gina_double.py``) lists the window's files, so every mirror_gina run finds them all placed. Each case
starts the real suite (``tests/e2e/harness.py``: supervisord with the repo's supervisord.conf) twice: a first start
and a restart on the same VIIRS_BASE.

First start:

7. start-up: seconds from ``Suite.start()`` to task_broker answering a request on TASK_PORT. Goal: within 10 s with
   the archive (also shown for the restart).
   Then the bus must flow (``Suite.wait_flowing()``): the gatherers take the files of sdr/ at their first message
   and hear nothing meanwhile, so when it does not flow within a minute the bench waits until the gatherers are
   quiet (at most ``--flow-wait`` seconds in all, default 1800) and tries once more; the time is shown. Then
   ``--settle`` seconds.
1. idle CPU over ``--idle`` seconds of every supervised program (utime+stime+cutime+cstime of the program and of its
   descendants still alive: cron counts its mirror_gina runs) and of supervisord itself (its own time only), in CPU
   seconds and % of one core. Goal: archive <= 1.2x empty, and under 3% of a core.
   Then the suite's cron is stopped: the bench runs mirror_gina itself from here on (so status reports the suite
   unhealthy, exit status 1: a program is not RUNNING).
2. monitor: p50 and p99 of ``--requests`` sequential ``GET /`` and ``GET /metrics``. Goal: p99 < 200 ms.
3. ``avoviirscollector status`` and ``status --quick``: wall time, median of 3. Goal: < 1 s.
4. ``mirror_gina --queue noaa20-moderate`` over the full 2-day listing (its entry in
   ``state/mirror_gina.listings.json`` is removed before each run, so it lists in full), every file already
   placed: wall time, median of 3. Goal: archive <= 1.2x empty.
5. GINA listing -> task handed out: a new NOAA-20 granule (all 12 files, small real HDF5 files, a start 3 minutes
   ago, a new orbit number) is added to the double, then mirror_gina runs the three noaa20 queues at once; from
   the moment the double lists the granule to the moment a REQ worker asking for all five products (every 0.1 s,
   at once again after a task) has the granule's first task, and all five. ``--granules`` such granules, one
   after the other. Also counted: the ``recovered granule`` lines task_broker logs meanwhile (goal 0: every
   granule comes through the live path, a dataset from the gatherer). Goal: median archive <= 1.2x empty.
6. RSS of every supervised program with its children at the end (cron's at the end of the idle window: it is
   stopped afterwards), and each main process's peak. Goal: archive <= 1.2x empty + 50 MB.

Restart: start-up as in 7, cron stopped at once, ``--first-after`` seconds, then part 5 for one granule: the first
granule after a start of the suite (the gatherers' first message since their start).

A wait that runs out (``--timeout`` for a request or a command, ``--wait`` for a granule's tasks and the broker's
first answer, ``--flow-wait`` for the bus) is a figure ("> 60 s") and the bench goes on. The load average
(/proc/loadavg) is printed at the start and the end of every measured part. Creating 600,000 files takes about 35 s
(printed).

Run inside a loopback-only network namespace:
``scripts/loopback-netns .venv/bin/python bench/bench_scale.py [--files N] [--idle S] [--settle S] [--requests N]
[--granules N] [--keep DIR]``. The exit status is 0 whether or not the goals are met; the last line says which.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from posttroll.message import Message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avoviirscollector.ondisk.state import MIRROR_LISTINGS  # noqa: E402
from avoviirscollector.viirs import PLATFORMS, PRODUCTS, format_name  # noqa: E402
from tests import archive  # noqa: E402
from tests.e2e.chaos import rss_kib  # noqa: E402
from tests.e2e.harness import BIN, Suite  # noqa: E402
from tests.gina_double import GinaDouble, orbit_number  # noqa: E402
from tests.support import percentile  # noqa: E402 (nearest rank: an Over among the values stays one)

SEGMENTS = sorted({segment for segments in PRODUCTS.values() for segment in segments})
STEP = dt.timedelta(seconds=85.35)
GRID_EPOCH = dt.datetime(2026, 1, 1)
GRID_OFFSET = {"j01": dt.timedelta(0), "j02": dt.timedelta(seconds=28.5), "npp": dt.timedelta(seconds=57.0)}
PASS_EVERY, PASS_LENGTH = 67, 10  # 10 granules of every 67 (95 min): about 150 granules a day
CREATED_AFTER = dt.timedelta(minutes=10)
WINDOW = dt.timedelta(days=2)
WINDOW_ENDS_BEFORE_NOW = dt.timedelta(minutes=10)  # the new granules (3 min ago) never meet a window granule
ARCHIVE_ENDS_BEFORE_WINDOW = dt.timedelta(hours=1)
FILES_PER_DAY = 3 * 150 * len(SEGMENTS)
MIRROR_QUEUE = "noaa20-moderate"
NEW_PLATFORM, NEW_SATELLITE = "j01", "noaa20"
NEW_QUEUES = [f"{NEW_SATELLITE}-moderate", f"{NEW_SATELLITE}-imagery", f"{NEW_SATELLITE}-dnb"]
NEW_ORBIT = 90000  # orbit numbers no file of the window or the archive has
RECOVERED = re.compile(r"recovered granule")
CASES = ("empty", "archive")


class Over(float):
    """A wait that ran out: the figure is more than this."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(values: list[float]) -> float | None:
    return percentile(values, 50)


# -- the files -----------------------------------------------------------------------------------------------------
def granule_starts(platform: str, first: dt.datetime, last: dt.datetime) -> list[dt.datetime]:
    """The starts in [first, last) of ``platform``'s granules: its own grid, 85.35 s apart, passes of 10."""
    origin = GRID_EPOCH + GRID_OFFSET[platform]
    index = math.ceil((first - origin) / STEP)
    out = []
    while (start := origin + STEP * index) < last:
        if index % PASS_EVERY < PASS_LENGTH:
            out.append(start)
        index += 1
    return out


def granule_files(platform: str, start: dt.datetime) -> list[tuple[str, float]]:
    """(name, creation time as a POSIX timestamp) of the 12 files of one granule."""
    created = start + CREATED_AFTER
    orbit = orbit_number(platform, start)
    stamp = created.replace(tzinfo=dt.UTC).timestamp()
    return [(format_name(segment, platform, start, start + STEP, orbit, created), stamp) for segment in SEGMENTS]


def files_between(first: dt.datetime, last: dt.datetime) -> Iterator[tuple[str, float]]:
    """Every file of every platform's granules starting in [first, last), newest granule first."""
    granules = sorted(((start, platform) for platform in PLATFORMS for start in granule_starts(platform, first, last)),
                      reverse=True)
    for start, platform in granules:
        yield from granule_files(platform, start)


def make_empty_files(folder: Path, files: Iterable[tuple[str, float]]) -> tuple[int, float]:
    """Create each file empty (no data written) with its mtime and atime (ctime is now); (files, oldest mtime)."""
    count, oldest = 0, math.inf
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    for name, stamp in files:
        fd = os.open(os.path.join(folder, name), flags, 0o644)
        try:
            os.utime(fd, (stamp, stamp))
        finally:
            os.close(fd)
        count, oldest = count + 1, min(oldest, stamp)
    return count, oldest


def make_window(sdr: Path, double: GinaDouble, now: dt.datetime) -> int:
    """The 2-day listing window: in sdr/, and listed by the double (empty files of the same names)."""
    files = list(files_between(now - WINDOW, now - WINDOW_ENDS_BEFORE_NOW))
    make_empty_files(sdr, files)
    make_empty_files(double.files_dir, files)
    for name, _ in files:
        double.add_existing(double.files_dir / name)
    return len(files)


def make_archive(sdr: Path, now: dt.datetime, count: int) -> tuple[int, float, dt.datetime, dt.datetime]:
    """``count`` older files in sdr/ (tests/archive.py); (files, seconds it took, oldest and newest start)."""
    last = now - WINDOW - ARCHIVE_ENDS_BEFORE_WINDOW
    started = time.monotonic()
    made = archive.fill(sdr, count, newest=last)
    oldest = last - dt.timedelta(days=made / FILES_PER_DAY)
    return made, time.monotonic() - started, oldest, last


# -- the suite's processes ---------------------------------------------------------------------------------------
def proc_times(pid: int, children: bool = True) -> float:
    """CPU seconds of ``pid``: utime+stime, plus cutime+cstime (its children waited for) when ``children``."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                kids = [int(kid) for kid in (task / "children").read_text().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children waited for, plus those of its descendants still alive."""
    total = 0.0
    for member in (pid, *descendants(pid)):
        try:
            total += proc_times(member)
        except (OSError, IndexError):
            continue
    return total


def peak_kib(pid: int) -> int:
    try:
        return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])
    except (OSError, TypeError):
        return 0


def running_pids(suite: Suite) -> dict[str, int]:
    """{program: pid} of every RUNNING program, and supervisord's."""
    pids = {name: pid for name, (state, pid) in suite.programs().items() if state == "RUNNING" and pid}
    if suite.proc is not None:
        pids["supervisord"] = suite.proc.pid
    return pids


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far per program (supervisord: its own time only, its children are the programs)."""
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = proc_times(pid, children=False) if name == "supervisord" else tree_cpu(pid)
        except OSError:
            out[name] = math.nan
    return out


def rss_of(suite: Suite) -> dict[str, tuple[float, float]]:
    """{program: (RSS MB of it and its children, peak RSS MB of its main process)}; supervisord's own."""
    out = {}
    for name, pid in running_pids(suite).items():
        own = name == "supervisord"
        kib = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) if own else rss_kib(pid)
        out[name] = (kib / 1024, peak_kib(pid) / 1024)
    return out


def recovered_lines(suite: Suite) -> int:
    path = suite.base / "log" / "task_broker.log"
    if not path.exists():
        return 0
    with open(path, errors="replace") as handle:
        return sum(1 for line in handle if RECOVERED.search(line))


# -- workers ---------------------------------------------------------------------------------------------------------
class BrokerProbe(threading.Thread):
    """From its creation on, asks TASK_PORT (a REQ with a short receive timeout, reopened after each) until any
    reply comes; ``seconds()`` is the time from the probe's creation to that reply."""

    def __init__(self, port: int, timeout: float) -> None:
        super().__init__(daemon=True)
        self.port, self.timeout = port, timeout
        self.created = time.monotonic()
        self.answered: float | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        context = zmq.Context()
        body = json.dumps({"desired products": ["tir"], "just testing": True}).encode()
        try:
            while not self.stopping.is_set() and time.monotonic() - self.created < self.timeout:
                sock = context.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(f"tcp://127.0.0.1:{self.port}")
                sock.send(body)
                if sock.poll(300):
                    sock.recv()
                    self.answered = time.monotonic() - self.created
                    sock.close()
                    return
                sock.close()
        finally:
            context.term()

    def seconds(self) -> float:
        self.join(max(0.0, self.created + self.timeout - time.monotonic()) + 1)
        self.stopping.set()
        return self.answered if self.answered is not None else Over(self.timeout)


class TaskWatcher(threading.Thread):
    """A worker that asks TASK_PORT for all five products every 0.1 s (at once again after a task), with a receive
    timeout and a new socket after one; notes when each task came: {(platform_name, orbit): {product: time}}."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.lock = threading.Lock()
        self.tasks: dict[tuple[str, int], dict[str, float]] = {}
        self.received = 0
        self.unanswered = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        context = zmq.Context()
        body = json.dumps({"desired products": list(PRODUCTS), "just testing": False}).encode()
        client = None
        try:
            while not self.stopping.is_set():
                if client is None:
                    client = context.socket(zmq.REQ)
                    client.setsockopt(zmq.LINGER, 0)
                    client.connect(f"tcp://127.0.0.1:{self.port}")
                client.send(body)
                if not client.poll(5000):
                    self.unanswered += 1
                    client.close()
                    client = None
                    continue
                reply = client.recv()
                if not reply or not self._note(reply, time.monotonic()):
                    self.stopping.wait(0.1)
        finally:
            if client is not None:
                client.close()
            context.term()

    def _note(self, reply: bytes, when: float) -> bool:
        try:
            msg = Message.decode(reply.decode("utf-8"))
        except Exception:  # an {"error": ...} reply: nothing to note
            return False
        key = (msg.data.get("platform_name"), msg.data.get("orbit_number"))
        with self.lock:
            self.received += 1
            self.tasks.setdefault(key, {}).setdefault(msg.subject.rsplit("/", 1)[-1], when)
        return True

    def wait_for(self, platform_name: str, orbit: int, deadline: float) -> dict[str, float]:
        """{product: when its task came} for that granule, once all five came or at ``deadline``."""
        while True:
            with self.lock:
                got = dict(self.tasks.get((platform_name, orbit), {}))
            if len(got) == len(PRODUCTS) or time.monotonic() >= deadline:
                return got
            time.sleep(0.02)

    def drain(self, quiet: float = 2.0, timeout: float = 60.0) -> int:
        """Wait until no task came for ``quiet`` seconds; the tasks received so far."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.received != seen:
                seen, since = self.received, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.1)
        return self.received

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


# -- the measured parts --------------------------------------------------------------------------------------------
@dataclass
class Case:
    """The figures of one VIIRS_BASE: ``figures`` by key (seconds, %, MB, counts), the load averages of each part,
    each new granule's latencies, and notes (what is no figure of the table)."""

    name: str
    figures: dict[str, float | None] = field(default_factory=dict)
    loads: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def part(self, label: str, action: Callable[[], None]) -> None:
        """Run one measured part, noting the load average at its start and end."""
        before = load()
        print(f"  [{self.name}] {label} (load {before})", flush=True)
        try:
            action()
        finally:
            self.loads.append((label, before, load()))


def start_suite(suite: Suite, case: Case, key: str, wait: float) -> None:
    """``Suite.start()``, and the seconds from it to task_broker's first answer on TASK_PORT."""
    probe = BrokerProbe(suite.settings.task_port, wait)
    probe.start()
    try:
        suite.start(timeout=wait)
    except BaseException:
        probe.stopping.set()
        raise
    finally:
        case.figures[f"{key}.running"] = time.monotonic() - probe.created
        case.figures[key] = probe.seconds()


def gatherers_cpu(suite: Suite) -> float:
    return sum(tree_cpu(pid) for name, pid in running_pids(suite).items() if name.startswith("segment_gatherer"))


def wait_gatherers_quiet(suite: Suite, deadline: float, every: float = 5.0, busy: float = 0.1) -> bool:
    """Wait until the five gatherers together use less than ``busy`` of a core over ``every`` seconds (their scan
    of sdr/ at their first message is over), or until ``deadline``; True when they did."""
    while time.monotonic() < deadline:
        before = gatherers_cpu(suite)
        time.sleep(every)
        if gatherers_cpu(suite) - before < busy * every:
            return True
    return False


def wait_flowing(suite: Suite, case: Case, wait: float) -> None:
    """``Suite.wait_flowing()`` for a minute; when the bus does not flow by then, wait (up to ``wait`` seconds in
    all) until the gatherers are quiet, and try once more: wait_flowing places a probe granule every 3 s, and an
    unbounded wait would fill sdr/ with probes while the gatherers cannot hear them."""
    started = time.monotonic()
    try:
        suite.wait_flowing(timeout=60)
    except TimeoutError:
        print(f"    bus not flowing after 60 s; waiting up to {wait:.0f} s in all for the gatherers to be quiet",
              flush=True)
        quiet = wait_gatherers_quiet(suite, started + wait)
        try:
            if not quiet:
                raise TimeoutError("the gatherers were still busy") from None
            suite.wait_flowing(timeout=60)
        except TimeoutError as err:
            case.figures["flowing"] = Over(time.monotonic() - started)
            case.notes.append(f"bus not flowing {time.monotonic() - started:.0f} s after the first start: {err}")
            return
    case.figures["flowing"] = time.monotonic() - started


def idle_cpu(suite: Suite, case: Case, seconds: float) -> None:
    pids = running_pids(suite)
    wall0 = time.monotonic()
    cpu0 = cpu_of(pids)
    time.sleep(seconds)
    cpu1 = cpu_of(pids)
    wall = time.monotonic() - wall0
    after = running_pids(suite)
    for name, pid in pids.items():
        case.figures[f"cpu.{name}"] = cpu1[name] - cpu0[name]
        if after.get(name) != pid:
            case.notes.append(f"{name} was restarted during the idle window (pid {pid} -> {after.get(name)}): its "
                              "idle CPU is not meaningful")
    total = sum(value for name, value in case.figures.items() if name.startswith("cpu."))
    case.figures["cpu"] = total
    case.figures["cpu.%"] = 100 * total / wall
    case.figures["cpu.wall"] = wall


def timed_gets(url: str, count: int, timeout: float) -> list[float]:
    """Seconds of ``count`` sequential GETs; a GET that runs out ends the series with an :class:`Over`."""
    out: list[float] = []
    for _ in range(count):
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                reply.read()
        except (TimeoutError, urllib.error.URLError, OSError):
            out.append(Over(max(timeout, time.monotonic() - started)))
            break
        out.append(time.monotonic() - started)
    return out


def monitor_requests(suite: Suite, case: Case, count: int, timeout: float) -> None:
    for path, key in (("/", "page"), ("/metrics", "metrics")):
        times = timed_gets(f"http://127.0.0.1:{suite.settings.monitor_port}{path}", count, timeout)
        case.figures[f"{key}.p50"] = percentile(times, 50)
        case.figures[f"{key}.p99"] = percentile(times, 99)
        if len(times) < count:
            case.notes.append(f"GET {path}: request {len(times)} of {count} got no answer within {timeout:.0f} s; "
                              "the series stopped there")


def timed_runs(command: list[str], env: dict[str, str], runs: int, timeout: float,
               before: Callable[[], None] | None = None) -> tuple[list[float], list[int | None]]:
    """Wall seconds and exit statuses of ``runs`` runs of ``command``; a run that runs out is an :class:`Over`."""
    times: list[float] = []
    codes: list[int | None] = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.monotonic()
        try:
            done = subprocess.run(command, env=env, capture_output=True, timeout=timeout)
            times.append(time.monotonic() - started)
            codes.append(done.returncode)
        except subprocess.TimeoutExpired:
            times.append(Over(timeout))
            codes.append(None)
    return times, codes


def status_runs(suite: Suite, case: Case, timeout: float) -> None:
    for args, key in ((["status"], "status"), (["status", "--quick"], "status.quick")):
        times, codes = timed_runs([str(BIN / "avoviirscollector"), *args], suite.env, 3, timeout)
        case.figures[key] = median(times)
        case.notes.append(f"avoviirscollector {' '.join(args)}: exit status {codes}, times "
                          + ", ".join(f"{t:.2f} s" for t in times))


def forget_full_listing(state: Path, satellite: str) -> None:
    """Make the next mirror_gina run list ``satellite``'s whole backfill window (it lists in full when its entry in
    state/mirror_gina.listings.json is missing)."""
    path = state / MIRROR_LISTINGS
    try:
        times = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    kept = {key: value for key, value in times.items() if key.split("/", 1)[0] != satellite}
    tmp = path.with_name(path.name + ".bench")
    tmp.write_text(json.dumps(kept))
    os.replace(tmp, path)


def mirror_runs(suite: Suite, double: GinaDouble, case: Case, timeout: float) -> None:
    requests = len(double.listing_requests)
    times, codes = timed_runs([str(BIN / "mirror_gina"), "--once", "--queue", MIRROR_QUEUE], suite.env, 3, timeout,
                              before=lambda: forget_full_listing(suite.settings.state_dir, NEW_SATELLITE))
    case.figures["mirror"] = median(times)
    spans = sorted({(q.get("start_date", ["?"])[0], q.get("end_date", ["?"])[0])
                    for q in double.listing_requests[requests:]})
    listed = len(double.listing({"satellites[]": [NEW_SATELLITE]}))
    case.notes.append(f"mirror_gina --queue {MIRROR_QUEUE}: exit status {codes}, times "
                      + ", ".join(f"{t:.2f} s" for t in times)
                      + f"; listings asked for {spans}; the double lists {listed} {NEW_SATELLITE} files")


def new_granule(suite: Suite, double: GinaDouble, watcher: TaskWatcher, orbit: int, wait: float,
                timeout: float) -> tuple[float, float, int | None]:
    """Seconds from the double listing a new granule to its first task and to all five at the worker, and
    mirror_gina's exit status."""
    start = utcnow() - dt.timedelta(minutes=3)
    start = start.replace(microsecond=start.microsecond // 100000 * 100000)
    double.add_granule(NEW_PLATFORM, orbit, start, created=utcnow())
    listed = time.monotonic()
    with open(suite.base.parent / "bench-mirror.out", "ab") as out:
        proc = subprocess.Popen([str(BIN / "mirror_gina"), "--once", *(a for q in NEW_QUEUES for a in ("--queue", q))],
                                env=suite.env, stdout=out, stderr=subprocess.STDOUT)
    got = watcher.wait_for(PLATFORMS[NEW_PLATFORM][0], orbit, listed + wait)
    try:
        code = proc.wait(max(1.0, listed + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    first = min(got.values()) - listed if got else Over(wait)
    every = max(got.values()) - listed if len(got) == len(PRODUCTS) else Over(wait)
    return first, every, code


def granule_part(suite: Suite, double: GinaDouble, case: Case, key: str, orbits: list[int], wait: float,
                 timeout: float) -> None:
    """Part 5 for ``orbits`` (one new granule each, one after the other)."""
    watcher = TaskWatcher(suite.settings.task_port)
    watcher.start()
    before = recovered_lines(suite)
    results = []
    try:
        watcher.drain(quiet=1.0, timeout=wait)  # tasks queued before (wait_flowing's probes)
        for orbit in orbits:
            first, every, code = new_granule(suite, double, watcher, orbit, wait, timeout)
            results.append((first, every))
            print(f"    orbit {orbit}: first task {show(first, 's')}, all five {show(every, 's')}, mirror_gina "
                  f"exit status {code}", flush=True)
            if code != 0:
                case.notes.append(f"{key}: mirror_gina for orbit {orbit} exited with {code} (see bench-mirror.out)")
        time.sleep(1.0)
    finally:
        watcher.stop()
        case.figures[f"{key}.recovered"] = recovered_lines(suite) - before
        case.latencies[key] = results
        case.figures[f"{key}.first"] = median([first for first, _ in results])
        case.figures[f"{key}.all"] = median([every for _, every in results])
        if watcher.unanswered:
            case.notes.append(f"{key}: {watcher.unanswered} worker requests got no answer within 5 s")


def stop_cron(suite: Suite, timeout: float = 90) -> None:
    """``supervisorctl stop cron``, waiting for it to be stopped (it gives a running mirror_gina up to 30 s)."""
    try:
        suite.supervisorctl("stop", "cron", check=False)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while suite.programs().get("cron", ("STOPPED",))[0] not in ("STOPPED", "EXITED", "FATAL"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"cron not stopped after {timeout:.0f} s")
        time.sleep(0.5)


def first_start(suite: Suite, double: GinaDouble, case: Case, args: argparse.Namespace) -> None:
    """Parts 7, 1, 2, 3, 4, 5 (later granules) and 6 in the first start of the suite in this VIIRS_BASE."""
    case.part("first start", lambda: start_suite(suite, case, "startup", args.wait))
    case.part("bus flowing", lambda: wait_flowing(suite, case, args.flow_wait))
    watcher = TaskWatcher(suite.settings.task_port)  # wait_flowing's probe tasks, taken before the idle window
    watcher.start()
    watcher.drain(quiet=2.0, timeout=args.wait)
    watcher.stop()
    case.part(f"settle {args.settle:.0f} s", lambda: time.sleep(args.settle))
    case.part(f"idle CPU over {args.idle:.0f} s", lambda: idle_cpu(suite, case, args.idle))
    rss_idle = rss_of(suite)
    stop_cron(suite)
    case.part("monitor requests", lambda: monitor_requests(suite, case, args.requests, args.timeout))
    case.part("status", lambda: status_runs(suite, case, args.timeout))
    case.part("mirror_gina over the listing", lambda: mirror_runs(suite, double, case, args.timeout))
    orbits = [NEW_ORBIT + 10 + i for i in range(args.granules)]
    case.part(f"{args.granules} new granules",
              lambda: granule_part(suite, double, case, "later", orbits, args.wait, args.timeout))
    rss = {**rss_idle, **rss_of(suite)}
    for name, (mb, peak) in rss.items():
        case.figures[f"rss.{name}"] = mb
        case.figures[f"peak.{name}"] = peak
    case.figures["rss"] = sum(mb for mb, _ in rss.values())


def restart(suite: Suite, double: GinaDouble, case: Case, args: argparse.Namespace) -> None:
    """Part 7 again, and part 5 for the first granule after the start."""
    case.part("restart", lambda: start_suite(suite, case, "restart", args.wait))
    running_at = time.monotonic()
    stop_cron(suite)
    time.sleep(max(0.0, running_at + args.first_after - time.monotonic()))
    case.part("first granule after the restart",
              lambda: granule_part(suite, double, case, "first", [NEW_ORBIT], args.wait, args.timeout))


def run_case(case: Case, root: Path, args: argparse.Namespace) -> None:
    """One VIIRS_BASE under ``root``: its files, then the first start and the restart of the suite on it."""
    root.mkdir(parents=True)
    double = GinaDouble(root / "gina").start()
    try:
        suite = Suite(root, extra_env={"GINA_URL": double.url})
        sdr = suite.settings.sdr_dir
        sdr.mkdir(parents=True)
        now = utcnow()
        started = time.monotonic()
        window = make_window(sdr, double, now)
        print(f"  [{case.name}] window: {window} files in sdr/ and listed by the double "
              f"({time.monotonic() - started:.1f} s)", flush=True)
        case.figures["files"] = window
        if case.name == "archive":
            made, seconds, oldest, newest = make_archive(sdr, now, args.files)
            case.figures["files"] = window + made
            case.notes.append(f"archive: {made} empty files created in {seconds:.1f} s, granules from "
                              f"{oldest:%Y-%m-%d %H:%M} to {newest:%Y-%m-%d %H:%M} UTC")
            print(f"  [{case.name}] {case.notes[-1]}", flush=True)
        for part in (first_start, restart):
            try:
                part(suite, double, case, args)
            finally:
                suite.stop()
    finally:
        double.stop()


# -- the report ------------------------------------------------------------------------------------------------------
def show(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    scale, digits = {"s": (1, 2), "ms": (1000, 1), "%": (1, 2), "MB": (1, 1), "n": (1, 0)}[unit]
    text = f"{value * scale:.{digits}f}"
    suffix = "" if unit == "n" else f" {unit}" if unit != "%" else "%"
    return f"> {text}{suffix}" if isinstance(value, Over) else f"{text}{suffix}"


def ratio(empty: float | None, archive: float | None) -> float | None:
    if empty is None or archive is None or isinstance(empty, Over) or not empty > 0 or math.isnan(archive):
        return None
    return Over(archive / empty) if isinstance(archive, Over) else archive / empty


def show_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"> {value:.2f}x" if isinstance(value, Over) else f"{value:.2f}x"


def rows(cases: dict[str, Case], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(key, label, unit) of the table, in order."""
    programs = sorted({key[4:] for case in cases.values() for key in case.figures if key.startswith("cpu.")}
                      - {"%", "wall"})
    out = [("files", "files in sdr/", "n"),
           ("startup", "7. start-up: first start -> task_broker answers", "s"),
           ("startup.running", "   (every program RUNNING)", "s"),
           ("restart", "7. start-up: restart -> task_broker answers", "s"),
           ("restart.running", "   (every program RUNNING)", "s"),
           ("flowing", "   bus flowing after the first start", "s"),
           ("cpu", f"1. idle CPU over {args.idle:.0f} s, all programs", "s"),
           ("cpu.%", "   % of one core", "%")]
    out += [(f"cpu.{name}", f"   {name}", "s") for name in programs]
    out += [("page.p50", "2. monitor GET / p50", "ms"), ("page.p99", "   GET / p99", "ms"),
            ("metrics.p50", "   GET /metrics p50", "ms"), ("metrics.p99", "   GET /metrics p99", "ms"),
            ("status", "3. avoviirscollector status (median of 3)", "s"),
            ("status.quick", "   status --quick (median of 3)", "s"),
            ("mirror", f"4. mirror_gina --queue {MIRROR_QUEUE}, all placed", "s"),
            ("first.first", "5. first granule after a start: first task", "s"),
            ("first.all", "   all five tasks", "s"),
            ("first.recovered", "   recovered granule lines", "n"),
            ("later.first", f"5. {args.granules} later granules: first task, median", "s"),
            ("later.all", "   all five tasks, median", "s"),
            ("later.recovered", "   recovered granule lines", "n"),
            ("rss", "6. RSS, all programs", "MB")]
    out += [(f"rss.{name}", f"   {name} (peak of its main process)", "MB") for name in programs]
    return out


def print_table(cases: dict[str, Case], args: argparse.Namespace) -> None:
    empty, archive = cases.get("empty", Case("empty")), cases.get("archive", Case("archive"))
    print(f"\n{'figure':52} {'empty':>20} {'archive':>20} {'archive/empty':>14}")
    for key, label, unit in rows(cases, args):
        a, b = empty.figures.get(key), archive.figures.get(key)
        cells = [show(a, unit), show(b, unit)]
        if key.startswith("rss."):
            name = key[4:]
            cells = [f"{show(case.figures.get(key), unit)} ({show(case.figures.get('peak.' + name), 'MB')})"
                     for case in (empty, archive)]
        print(f"{label:52} {cells[0]:>20} {cells[1]:>20} {show_ratio(ratio(a, b)):>14}")
    for case in (empty, archive):
        for label, items in case.latencies.items():
            if items:
                print(f"{case.name} {label} granule latencies (first task / all five): "
                      + ", ".join(f"{show(f, 's')} / {show(e, 's')}" for f, e in items))


def goals(cases: dict[str, Case]) -> list[tuple[str, bool, str]]:
    """(goal, met, figures) for each of the seven goals."""
    e, a = cases.get("empty", Case("empty")).figures, cases.get("archive", Case("archive")).figures

    def within(key: str, factor: float = 1.2) -> bool:
        r = ratio(e.get(key), a.get(key))
        return r is not None and not isinstance(r, Over) and r <= factor

    def below(key: str, limit: float) -> bool:
        return all(f.get(key) is not None and not isinstance(f.get(key), Over) and f[key] < limit for f in (e, a))

    programs = sorted({k[4:] for k in a if k.startswith("rss.")} | {k[4:] for k in e if k.startswith("rss.")})
    rss_bad = [name for name in programs
               if e.get(f"rss.{name}") is None or a.get(f"rss.{name}") is None
               or a[f"rss.{name}"] > 1.2 * e[f"rss.{name}"] + 50]
    recovered = sum(f.get(k) or 0 for f in (e, a) for k in ("first.recovered", "later.recovered"))
    startup = a.get("startup"), a.get("restart")
    return [
        ("1. idle CPU: archive <= 1.2x empty, < 3% of a core", within("cpu") and below("cpu.%", 3.0),
         f"{show_ratio(ratio(e.get('cpu'), a.get('cpu')))}, {show(e.get('cpu.%'), '%')} / {show(a.get('cpu.%'), '%')}"),
        ("2. monitor p99 < 200 ms", below("page.p99", 0.2) and below("metrics.p99", 0.2),
         f"/ {show(a.get('page.p99'), 'ms')}, /metrics {show(a.get('metrics.p99'), 'ms')} with the archive"),
        ("3. status, status --quick < 1 s", below("status", 1.0) and below("status.quick", 1.0),
         f"{show(a.get('status'), 's')}, {show(a.get('status.quick'), 's')} with the archive"),
        ("4. mirror_gina run: archive <= 1.2x empty", within("mirror"),
         show_ratio(ratio(e.get("mirror"), a.get("mirror")))),
        ("5. listing -> task: archive <= 1.2x empty (medians), 0 recovered",
         within("first.all") and within("later.all") and within("first.first") and within("later.first")
         and recovered == 0,
         f"first granule {show_ratio(ratio(e.get('first.all'), a.get('first.all')))}, later "
         f"{show_ratio(ratio(e.get('later.all'), a.get('later.all')))} (all five tasks); {recovered:.0f} recovered"),
        ("6. RSS: archive <= 1.2x empty + 50 MB per program", bool(programs) and not rss_bad,
         "exceeded by " + ", ".join(rss_bad) if rss_bad else "every program within"),
        ("7. start-up with the archive <= 10 s",
         all(s is not None and not isinstance(s, Over) and s <= 10 for s in startup),
         f"first start {show(startup[0], 's')}, restart {show(startup[1], 's')}"),
    ]


def report(cases: dict[str, Case], args: argparse.Namespace) -> None:
    print_table(cases, args)
    for case in cases.values():
        print(f"\n{case.name}:")
        for note in case.notes:
            print(f"  {note}")
        for label, before, after in case.loads:
            print(f"  load average {label}: start {before}, end {after}")
    print()
    results = goals(cases)
    for goal, met, figures in results:
        print(f"{'met    ' if met else 'NOT met'}  {goal}: {figures}")
    missed = [goal.split(".", 1)[0] for goal, met, _ in results if not met]
    print(f"goals: {len(results) - len(missed)} of {len(results)} met"
          + (f"; NOT met: {', '.join(missed)}" if missed else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=600_000, help="older files of the archive; default %(default)s")
    parser.add_argument("--idle", type=float, default=120, help="seconds of the idle window; default %(default)s")
    parser.add_argument("--settle", type=float, default=60,
                        help="seconds after the bus flows before the idle window; default %(default)s")
    parser.add_argument("--requests", type=int, default=30, help="GETs of / and of /metrics; default %(default)s")
    parser.add_argument("--granules", type=int, default=5, help="later new granules; default %(default)s")
    parser.add_argument("--first-after", type=float, default=10,
                        help="seconds from the restart's programs RUNNING to the first granule; default %(default)s")
    parser.add_argument("--timeout", type=float, default=60,
                        help="limit of one request or command; default %(default)s")
    parser.add_argument("--wait", type=float, default=300,
                        help="limit of a wait (bus flowing, a granule's tasks, start-up); default %(default)s")
    parser.add_argument("--flow-wait", type=float, default=1800,
                        help="limit of the wait for the bus to flow after the first start; default %(default)s")
    parser.add_argument("--cases", default=",".join(CASES), help="which cases, in order; default %(default)s")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (logs, state) at the end")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    if not names or set(names) - set(CASES):
        parser.error(f"--cases: a list of {', '.join(CASES)}")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty")
    print(f"bench_scale: {args.files} archive files, idle {args.idle:.0f} s after {args.settle:.0f} s, "
          f"{args.requests} requests, {args.granules} granules; load average {load()}", flush=True)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench_scale."))
    workdir.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}
    try:
        for name in names:
            print(f"case {name}", flush=True)
            cases[name] = Case(name)
            try:
                run_case(cases[name], workdir / name, args)
            except Exception as err:  # a case that breaks leaves its figures missing; the other case still runs
                cases[name].notes.append(f"the case stopped: {type(err).__name__}: {err}")
                print(f"  [{name}] stopped: {type(err).__name__}: {err}", flush=True)
    finally:
        if args.keep is None:
            started = time.monotonic()
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"removed {workdir} ({time.monotonic() - started:.1f} s)", flush=True)
    report(cases, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
