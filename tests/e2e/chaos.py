"""No granule lost (SPEC section 10), measured: a scripted stream of granule files, a killer of programs, workers
that drain like the deployed ones, and the accounting of complete granules against the tasks handed out.

Written against the behaviour, not the broker's code: granules are (product, platform, start time) from the file
names (``viirs.parse_name``, ``viirs.PRODUCTS``); a granule is complete when every segment of its product has a
file in ``sdr/``; a task handed out is a ``dataset`` message a worker received on ``TASK_PORT``, and the granules
it holds are its ``dataset`` uids grouped by (product from the subject, platform, start time). The broker's own
words are read only for figures and for the one allowed repetition: a hand-out logged ``in doubt``.

Used by ``tests/e2e/test_no_granule_lost.py``, ``tests/e2e/test_chaos.py`` and ``bench/bench_chaos.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from posttroll.message import Message

from avoviirscollector.granules import GranuleMap
from avoviirscollector.viirs import (
    PLATFORMS,
    PRODUCTS,
    NotASdrName,
    format_name,
    parse_name,
    start_key,
    start_key_of,
)
from tests.broker_support import DeployedWorker, Status
from tests.legacy import legacy_available, legacy_decode, legacy_rule_violations
from tests.support import percentile

#: granules follow each other every 85.4 s (VIIRS SDR granule length)
GRANULE = dt.timedelta(seconds=85.4)
#: one orbit of the JPSS satellites, and the three satellites' phasing (a quarter orbit apart)
ORBIT = dt.timedelta(minutes=101.4)
SATELLITES = ("npp", "j01", "j02")
#: wait_flowing's probe granules are of 2001: never part of the accounting
PROBE_BEFORE = dt.datetime(2002, 1, 1)
#: the order a satellite-granule's files come in: geolocation first, then bands (as mirror_gina fetches them)
GEOLOCATION = ("GMTCO", "GITCO", "GDNBO")
BANDS = ("SVM15", "SVM16", "SVI05", "SVI04", "SVM03", "SVM04", "SVM05", "SVI01", "SVDNB")
ALL_SEGMENTS = GEOLOCATION + BANDS
assert sorted(ALL_SEGMENTS) == sorted({s for segs in PRODUCTS.values() for s in segs})
#: the programs the killer picks from (supervisord restarts each)
KILLABLE = ("nameserver", "trollstalker", *(f"segment_gatherer-{p}" for p in PRODUCTS), "task_broker", "msg_publisher")

GranuleKey = tuple[str, str, dt.datetime]  # product, platform_name, start time (naive UTC)


# -- the stream ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    at: float  # seconds after the stream's start
    name: str
    late: bool = False  # held back beyond the gatherers' slot timeout


#: how a satellite-granule came from the receiving stations (the second station's copy starts 0.1 s later and was
#: made 3.5 minutes later): from one station; split (geolocation from one, the bands from the other); from one
#: station, with the other station's copy of one band placed too (files put into sdr/ by anyone count)
STATIONS = ("one", "split", "both copies of a band")
COPY_OFFSET = dt.timedelta(seconds=0.1)
COPY_DELAY = dt.timedelta(minutes=3.5)


def satellite_granule_names(platform: str, orbit: int, start: dt.datetime, stations: str = "one",
                            rng: random.Random | None = None) -> list[str]:
    """The files of every product for one satellite-granule, in the order they arrive (geolocation first), from the
    receiving stations as ``stations`` (one of :data:`STATIONS`) says."""
    end = start + GRANULE
    created = start + dt.timedelta(minutes=9, microseconds=123456)

    def other(segment: str) -> str:
        return format_name(segment, platform, start + COPY_OFFSET, end, orbit, created + COPY_DELAY)

    names = [format_name(segment, platform, start, end, orbit, created) for segment in ALL_SEGMENTS]
    if stations == "split":
        names = names[:len(GEOLOCATION)] + [other(segment) for segment in BANDS]
    elif stations == "both copies of a band":
        names.append(other((rng or random.Random(4)).choice(BANDS)))
    return names


def passes(first: dt.datetime, per_satellite: int, rng: random.Random | None = None,
           granules: tuple[int, int] = (4, 8)) -> list[tuple[str, int, dt.datetime, int]]:
    """(platform, orbit, first granule start, granule count) for ``per_satellite`` consecutive passes over Alaska
    of each satellite from ``first``: one orbit apart (about 14 a day), the satellites a quarter orbit apart, each
    pass ``granules`` consecutive granules long (85.4 s apart). Sorted by time."""
    rng = rng or random.Random(1)
    out = []
    first_orbit = {"npp": 67001, "j01": 33001, "j02": 9001}
    for index, platform in enumerate(SATELLITES):
        for number in range(per_satellite):
            start = first + ORBIT * number + ORBIT * index / 4 + dt.timedelta(seconds=rng.uniform(-60, 60))
            # granule starts are on the 0.1 s grid of the file names
            start = start.replace(microsecond=(start.microsecond // 100000) * 100000)
            out.append((platform, first_orbit[platform] + number, start, rng.randint(*granules)))
    return sorted(out, key=lambda item: item[2])


def schedule(plan: list[tuple[str, int, dt.datetime, int]], granule_every: float = 0.7, late_share: float = 0.05,
             late_after: float = 25.0, rng: random.Random | None = None) -> list[Placement]:
    """Placements for ``plan`` accelerated: one satellite-granule's files every ``granule_every`` seconds (its
    files spread over that time, geolocation first); a share ``late_share`` of satellite-granules have one band
    file arriving ``late_after`` seconds later (beyond the slot timeout)."""
    rng = rng or random.Random(2)
    out: list[Placement] = []
    at = 0.0
    total = granule_every * sum(count for *_, count in plan)
    for platform, orbit, first, count in plan:
        for number in range(count):
            names = satellite_granule_names(platform, orbit, first + GRANULE * number, rng.choice(STATIONS), rng)
            # late files only where the stream goes on meanwhile (a late file at the very end would lengthen it)
            chance = late_share if at + late_after < total else 0.0
            late = rng.randrange(len(GEOLOCATION), len(names)) if rng.random() < chance else None
            step = granule_every / len(names)
            for position, name in enumerate(names):
                if position == late:
                    out.append(Placement(at + late_after, name, late=True))
                else:
                    out.append(Placement(at, name))
                at += step
    return sorted(out, key=lambda p: p.at)


class Placer(threading.Thread):
    """Places the scheduled files (into tmp/, renamed into sdr/: ``Suite.place``) on time."""

    def __init__(self, suite, placements: list[Placement]) -> None:
        super().__init__(daemon=True)
        self.suite, self.placements = suite, placements
        self.placed: list[str] = []
        self.last_placed = time.monotonic()
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        begin = time.monotonic()
        for placement in self.placements:
            wait = begin + placement.at - time.monotonic()
            if wait > 0 and self.stopping.wait(wait):
                return
            self.place(placement.name)

    def place(self, name: str) -> None:
        """One file, now (``pair_chaos.PairPlacer`` places it on every host instead)."""
        try:
            self.suite.place(name)
            self.placed.append(name)
            self.last_placed = time.monotonic()
        except OSError as err:
            self.errors.append(f"{name}: {err}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


# -- the killer ------------------------------------------------------------------------------------------------------
class Killer(threading.Thread):
    """kill -9 a random program every ``low``..``high`` seconds (supervisord restarts it); each program once in a
    random order before any again. ``lock`` is held around
    each kill: hold it to restart the whole suite without a kill in the middle."""

    def __init__(self, suite, low: float = 3.0, high: float = 6.0, programs: Iterable[str] = KILLABLE,
                 rng: random.Random | None = None) -> None:
        super().__init__(daemon=True)
        self.suite, self.low, self.high, self.programs = suite, low, high, list(programs)
        self.rng = rng or random.Random(3)
        self.lock = threading.Lock()
        self.kills: list[tuple[float, str, int]] = []
        self.skipped = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        cycle: list[str] = []
        wait = self.rng.uniform(self.low, self.high)
        while not self.stopping.wait(wait):
            if not cycle:  # every program once, in a random order, before any of them again
                cycle = self.rng.sample(self.programs, len(self.programs))
            program = cycle.pop()
            with self.lock:
                if self.stopping.is_set():
                    return
                try:
                    kill = self.kill(program)
                except (RuntimeError, KeyError, OSError, TimeoutError, ValueError):
                    kill = None  # not running right now (starting, backoff, suite restarting)
                if kill is None:
                    self.skipped += 1
                    wait = 0.5  # the next program soon: a busy host must not make the run a quiet one
                else:
                    self.kills.append(kill)
                    wait = self.rng.uniform(self.low, self.high)

    def kill(self, program: str) -> tuple | None:
        """SIGKILL ``program`` now; what :attr:`kills` records of it (``pair_chaos.PairKiller`` picks a host
        first), None when there was nothing to kill."""
        pid = self.suite.pid(program)
        os.kill(pid, signal.SIGKILL)
        return time.time(), program, pid

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


# -- the workers -----------------------------------------------------------------------------------------------------
class DrainingWorker(DeployedWorker):
    """A worker like the deployed one (SUB on the status stream, ask while ``queue length > 0``), with a receive
    timeout and reconnect (lazy pirate: close the REQ socket, open a new one) so a killed broker cannot hang it.
    Every request whose reply never came is counted."""

    def __init__(self, task_port: int, update_port: int, products: Iterable[str] = tuple(PRODUCTS),
                 timeout: float = 5.0) -> None:
        super().__init__(task_port, update_port, list(products))
        self.timeout = timeout
        self.requests = 0
        self.unanswered = 0

    def run(self) -> None:
        context = zmq.Context()
        updates = context.socket(zmq.SUB)
        updates.setsockopt(zmq.SUBSCRIBE, b"")
        updates.setsockopt(zmq.LINGER, 0)
        updates.connect(f"tcp://127.0.0.1:{self.update_port}")
        body = json.dumps({"desired products": self.products, "just testing": False}).encode()
        client = None
        waiting, seen = False, 0.0
        try:
            while not self.stopping.is_set():
                while updates.poll(0):
                    waiting, seen = json.loads(updates.recv())["queue length"] > 0, time.monotonic()
                if not waiting or time.monotonic() - seen > 5:  # no status for 5 s: the broker is down
                    time.sleep(0.1)  # the deployed worker's pace while there is nothing to ask for
                    continue
                if client is None:
                    client = context.socket(zmq.REQ)
                    client.setsockopt(zmq.LINGER, 0)
                    client.connect(f"tcp://127.0.0.1:{self.task_port}")
                client.send(body)
                self.requests += 1
                if not client.poll(int(self.timeout * 1000)):
                    self.unanswered += 1
                    client.close(linger=0)
                    client = None
                    waiting = False
                    continue
                self.take(client.recv())
        finally:
            updates.close(linger=0)
            if client is not None:
                client.close(linger=0)
            context.term()

    def stop(self) -> None:
        self.stopping.set()
        self.join(self.timeout + 10)


# -- accounting ------------------------------------------------------------------------------------------------------
def granules_of(segments_by_granule: dict[tuple[str, dt.datetime], set[str]]) -> set[GranuleKey]:
    """The complete product granules among satellite-granules given as {(platform_name, start): segments}."""
    return {(product, platform, start) for (platform, start), segments in segments_by_granule.items()
            for product, needed in PRODUCTS.items() if set(needed) <= segments}


def complete_on_disk(sdr: Path, older_than: float = 0.0, include_probes: bool = False,
                     since: dt.datetime | None = None) -> set[GranuleKey]:
    """Every product granule complete in ``sdr`` (the last of its files placed over ``older_than`` s ago; with
    ``since``, of the granules that start at or after it only: an archive behind them is left out unparsed)."""
    segments = GranuleMap()  # (platform name, start; two stations' copies 0.1 s apart are one) -> segments
    newest = GranuleMap()  # the same -> segment -> its first placement
    earliest = GranuleMap()  # the same -> the earliest start of its files
    now = time.time()
    first = None if since is None else start_key_of(since)
    for entry in os.scandir(sdr):
        if first is not None and (start_key(entry.name) or "") < first:
            continue
        try:
            name = parse_name(entry.name)
        except NotASdrName:
            continue
        if name.start_time < PROBE_BEFORE and not include_probes:
            continue
        key = (name.platform_name, name.start_time)
        segments.setdefault(key, set()).add(name.segment)
        earliest[key] = min(name.start_time, earliest.get(key, name.start_time))
        placed = entry.stat().st_ctime
        first_placed = newest.setdefault(key, {})
        first_placed[name.segment] = min(placed, first_placed.get(name.segment, placed))
    out = set()
    for product, platform, start in granules_of(dict(segments.items())):
        completed = max(newest[(platform, start)][segment] for segment in PRODUCTS[product])
        if now - completed > older_than:
            out.add((product, platform, earliest[(platform, start)]))  # the first station's start, whatever order
    return out


@dataclass
class Task:
    """One task handed out, as the worker saw it."""

    raw: bytes
    product: str
    platform_name: str
    orbit: int
    granules: GranuleMap  # granule -> segments in this task (starts within the tolerance are one granule)
    start: str = ""  # the task's start and end time as the broker logs them (whole seconds)
    end: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def signature(self) -> tuple:
        """What identifies this hand-out in the broker's log lines."""
        return (self.product, self.platform_name, self.orbit, self.start, self.end)


def read_task(raw: bytes) -> Task:
    """A reply from TASK_PORT as a :class:`Task`, with what is wrong in it (mixed platforms, orbits or start
    times inside one granule, a file of another platform than the task's, a segment the product does not use)."""
    msg = Message.decode(raw.decode("utf-8"))
    product = msg.subject.rsplit("/", 1)[-1]
    platform_name = msg.data["platform_name"]
    start, end = (msg.data[k] for k in ("start_time", "end_time"))
    task = Task(raw, product, platform_name, msg.data["orbit_number"], GranuleMap(),
                start.strftime("%Y-%m-%dT%H:%M:%S") if isinstance(start, dt.datetime) else str(start)[:19],
                end.strftime("%H:%M:%S") if isinstance(end, dt.datetime) else str(end)[11:19])
    orbits = GranuleMap()
    copies: Counter[tuple] = Counter()
    platforms_by_start: dict[dt.datetime, set[str]] = defaultdict(set)
    for item in msg.data.get("dataset", []):
        try:
            name = parse_name(item["uid"])
        except NotASdrName:
            task.problems.append(f"not a VIIRS SDR name in the dataset: {item['uid']!r}")
            continue
        if os.path.basename(item["uri"]) != item["uid"]:
            task.problems.append(f"uri {item['uri']} is not uid {item['uid']}")
        if name.segment not in PRODUCTS.get(product, ()):
            task.problems.append(f"{name.segment} is not a segment of {product}: {item['uid']}")
        key = (product, name.platform_name, name.start_time)
        task.granules.setdefault(key, set()).add(name.segment)
        orbits.setdefault(key, set()).add(name.orbit_number)
        copies[(task.granules.held(key), name.segment)] += 1
        platforms_by_start[name.start_time].add(name.platform_name)
        if name.platform_name != platform_name:
            task.problems.append(f"{item['uid']} in a task of {platform_name}")
    for key, found in orbits.items():
        if len(found) > 1:
            task.problems.append(f"granule {describe(key)} with orbits {sorted(found)}")
    for (key, segment), count in copies.items():
        if count > 1:
            task.problems.append(f"granule {describe(key)} holds {count} copies of {segment}")
    for start, found in platforms_by_start.items():
        if len(found) > 1:
            task.problems.append(f"start {start} mixes platforms {sorted(found)}")
    return task


def describe(key: GranuleKey) -> str:
    product, platform, start = key
    return f"{product} {platform} {start:%Y-%m-%dT%H:%M:%S.%f}"[:-5]


def decode_problems(raws: list[bytes]) -> list[str]:
    """What a posttroll 1.5 worker would not accept in these replies (decoded by posttroll 1.5 itself where
    ``.venv-legacy`` exists, checked against its rules in any case)."""
    problems = [p for raw in raws for p in legacy_rule_violations(raw.decode("utf-8"))]
    if raws and legacy_available():
        try:
            decoded = legacy_decode([raw.decode("utf-8") for raw in raws])["messages"]
        except Exception as err:  # noqa: BLE001 - any failure to decode is the finding
            return [*problems, f"posttroll 1.5 could not decode: {err}"]
        problems += [f"posttroll 1.5 decoded {m['subject']} without a dataset" for m in decoded
                     if not isinstance(m["data"].get("dataset"), list)]
    return problems


IN_DOUBT = re.compile(r"in doubt.*?task (\S+)|task (\S+).*?in doubt")
#: a task as the broker describes it: id, product, platform, orbit, direction, start..end (whole seconds)
DESCRIBED = re.compile(r"task (\S+) (\w+) (.+?) orbit (\d+) \S+ (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\.(\d\d:\d\d:\d\d)")
HANDED = re.compile(r"handed out " + DESCRIBED.pattern)
RECOVERED = re.compile(r"recovered granule (\w+) (.+?) (\d{4}-\d\d-\d\dT[\d:.]+) \(([^)]*)\): complete in sdr/ for "
                       r"([\d.]+) s")


@dataclass
class BrokerLog:
    """What the broker's log says about recovery and hand-outs in doubt."""

    recovered: list[tuple[str, float]]  # (case, seconds complete before queued)
    in_doubt: list[str]  # the lines
    in_doubt_tasks: set[tuple]  # Task.signature of the hand-outs in doubt

    @classmethod
    def read(cls, path: Path) -> BrokerLog:
        texts = [p.read_text(errors="replace") for p in sorted(path.parent.glob(path.name + "*")) if p.is_file()]
        text = "\n".join(texts)
        recovered = [(m[4], float(m[5])) for m in RECOVERED.finditer(text)]
        handed = {m[1].rstrip(":,"): (m[2], m[3], int(m[4]), m[5], m[6]) for m in HANDED.finditer(text)}
        lines = [line for line in text.splitlines() if "in doubt" in line and "WARNING" in line]
        tasks = set()
        for line in lines:
            match = IN_DOUBT.search(line)
            ident = (match[1] or match[2]).rstrip(":,") if match else None
            if ident in handed:
                tasks.add(handed[ident])
            described = DESCRIBED.search(line)
            if described:
                tasks.add((described[2], described[3], int(described[4]), described[5], described[6]))
        return cls(recovered, lines, tasks)


@dataclass
class Account:
    """Complete granules against tasks handed out."""

    complete: set[GranuleKey]
    tasks: list[Task]
    lost: set[GranuleKey]
    twice: dict[GranuleKey, int]  # granule -> tasks it was in, beyond what hand-outs in doubt explain
    in_doubt_repeats: dict[GranuleKey, int]
    partial: dict[GranuleKey, set[str]]  # complete granules handed out without all their files
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.twice or self.partial or self.problems)

    def summary(self) -> str:
        lines = [
            f"complete granules {len(self.complete)}, tasks handed out {len(self.tasks)}, lost {len(self.lost)}, "
            f"twice {len(self.twice)}, repeated in doubt {len(self.in_doubt_repeats)}, "
            f"handed out partial {len(self.partial)}, problems {len(self.problems)}",
        ]
        for key in sorted(self.lost)[:10]:
            lines.append(f"  lost {describe(key)}")
        for key, times in sorted(self.twice.items())[:10]:
            lines.append(f"  {times} times {describe(key)}")
        for key, segments in sorted(self.partial.items())[:10]:
            lines.append(f"  partial {describe(key)}: {sorted(segments)}")
        lines += [f"  {p}" for p in self.problems[:10]]
        return "\n".join(lines)


def account(complete: set[GranuleKey], raws: list[bytes], in_doubt_tasks: set[tuple] = frozenset(),
            include_probes: bool = False) -> Account:
    tasks = [read_task(raw) for raw in raws]
    counts = GranuleMap()  # granule (two stations' starts are one) -> tasks it is in
    doubtful = GranuleMap()
    segments = GranuleMap()
    problems = decode_problems(raws)
    for task in tasks:
        problems += task.problems
        for key, segs in task.granules.items():
            if key[2] < PROBE_BEFORE and not include_probes:
                continue
            counts[key] = counts.get(key, 0) + 1
            segments[key] = segments.get(key, set()) | segs
            if task.signature in in_doubt_tasks:
                doubtful[key] = doubtful.get(key, 0) + 1
    lost = {key for key in complete if counts.get(key, 0) == 0}
    twice, repeats = {}, {}
    for key, times in counts.items():
        if times > 1:
            # a repetition is allowed when the broker logged one of those hand-outs in doubt
            if times - 1 <= doubtful.get(key, 0):
                repeats[key] = times
            else:
                twice[key] = times
    partial = {key: segments[key] for key in complete
               if counts.get(key, 0) and set(PRODUCTS[key[0]]) - segments[key]}
    return Account(complete, tasks, lost, twice, repeats, partial, problems)


# -- the suite's processes -----------------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants (KiB)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status)[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        except (OSError, TypeError):
            continue
    return total


def rss_by_program(suite) -> dict[str, tuple[int, int]]:
    """{program: (pid, RSS KiB of it and its children)} for every running program of the suite."""
    return {name: (pid, rss_kib(pid)) for name, (state, pid) in suite.programs().items()
            if state == "RUNNING" and pid}


def log_tails(suite, names: Iterable[str] = ("task_broker", "segment_gatherer-btd", "trollstalker", "supervisord"),
              lines: int = 25) -> str:
    out = []
    for name in names:
        path = suite.base / "log" / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        out.append(f"--- {path.name} (last {lines} lines)\n" + "\n".join(text))
    return "\n".join(out)


def platform_short(platform_name: str) -> str:
    return next(short for short, (name, _) in PLATFORMS.items() if name == platform_name)


# -- one run ---------------------------------------------------------------------------------------------------------
@dataclass
class Report:
    placed_files: int
    satellite_granules: int
    result: Account
    broker: BrokerLog
    pending: set[GranuleKey]  # complete for less than 60 s at the end and in no task (not counted as lost)
    requests: int
    unanswered: int
    kills: list[tuple[float, str, int]]
    restarts: int
    seconds: float
    errors: list[str]

    @property
    def recovery_p50(self) -> float | None:
        return percentile([s for _, s in self.broker.recovered], 50)

    @property
    def recovery_p99(self) -> float | None:
        return percentile([s for _, s in self.broker.recovered], 99)

    def figures(self) -> str:
        def seconds(value):
            return "n/a" if value is None else f"{value:.1f} s"

        kinds = Counter(program for _, program, _ in self.kills)
        cases = Counter(case for case, _ in self.broker.recovered)
        r = self.result
        return "\n".join([
            f"granules placed: {self.satellite_granules} satellite-granules ({self.placed_files} files), "
            f"{len(r.complete)} complete product granules",
            f"tasks handed out: {len(r.tasks)}",
            f"lost: {len(r.lost)}   twice: {len(r.twice)}   repeated in doubt: {len(r.in_doubt_repeats)} "
            f"(broker lines in doubt: {len(self.broker.in_doubt)})   handed out partial: {len(r.partial)}   "
            f"problems: {len(r.problems)}   not yet due (complete < 60 s): {len(self.pending)}",
            f"requests: {self.requests}, unanswered: {self.unanswered}",
            f"recovered by the broker: {len(self.broker.recovered)} {dict(cases)}; time to recovery "
            f"p50 {seconds(self.recovery_p50)}, p99 {seconds(self.recovery_p99)}",
            f"kills: {len(self.kills)} {dict(kinds)}; whole-suite restarts: {self.restarts}; run {self.seconds:.0f} s",
            *([f"errors: {self.errors[:5]}"] if self.errors else []),
            r.summary(),
        ])


def queue_empty(suite, timeout: float) -> bool:
    with Status(suite.settings.update_port) as status:
        try:
            status.wait_for(lambda st: st["queue length"] == 0, timeout)
            return True
        except AssertionError:
            return False


def _while_placing(suite, placer: Placer, killer: Killer | None, pool: list[DrainingWorker],
                   restart_at: list[float], began: float, progress=None) -> int:
    """Until the placer is done: the whole suite restarted at each of ``restart_at`` (seconds after ``began``),
    progress told every 30 s. The number of restarts."""
    restarts, last_note = 0, 0.0
    while placer.is_alive():
        elapsed = time.monotonic() - began
        if restart_at and elapsed >= restart_at[0]:
            restart_at.pop(0)
            with killer.lock if killer else threading.Lock():
                suite.restart(timeout=60)
            restarts += 1
        if progress and elapsed - last_note >= 30:
            last_note = elapsed
            progress(f"{elapsed:.0f} s: {len(placer.placed)}/{len(placer.placements)} files placed, "
                     f"{sum(len(w.received) for w in pool)} tasks, {len(killer.kills) if killer else 0} kills, "
                     f"{restarts} restarts")
        placer.join(0.5)
    return restarts


def settled(empty: Callable[[float], bool], placer: Placer, settle: float, drain_timeout: float,
            due_after: float) -> list[str]:
    """The queue drained (``empty(timeout)``: whether it was within that long), one more reconciliation period,
    every granule complete for ``due_after`` s, the queue drained again and a moment for late duplicates. What went
    wrong."""
    errors = []
    if not empty(drain_timeout):
        errors.append(f"the queue did not drain in {drain_timeout} s")
    # one more reconciliation period (what it finds comes now), and every granule complete for due_after s
    time.sleep(max(settle, placer.last_placed + due_after + 1 - time.monotonic()))
    if not empty(drain_timeout):
        errors.append(f"the queue did not drain in {drain_timeout} s after the last reconciliation")
    time.sleep(2.0)  # workers ask again on stale statuses: a task handed out twice would come now
    return errors


def run(suite, placements: list[Placement], workers: int = 4, kill_every: tuple[float, float] | None = (3.0, 6.0),
        restart_at: Iterable[float] = (), settle: float = 25.0, drain_timeout: float = 60.0,
        due_after: float = 60.0, rng_seed: int = 4, progress=None) -> Report:
    """Place ``placements`` on the running ``suite`` while killing a random program every ``kill_every`` seconds
    and restarting the whole suite at each of ``restart_at`` (seconds after the stream's start), with ``workers``
    draining workers; then stop killing, let the queue drain and one more reconciliation period pass (``settle``),
    and at least ``due_after`` seconds since the last file (a granule counts as lost once complete that long), and
    account. The suite is left running."""
    began = time.monotonic()
    s = suite.settings
    pool = [DrainingWorker(s.task_port, s.update_port) for _ in range(workers)]
    # and one as deployed: no timeout, no reconnect (watched with a deadline only: a reply over 60 s is a hang)
    deployed = DeployedWorker(s.task_port, s.update_port, list(PRODUCTS), hang_after=60)
    placer = Placer(suite, placements)
    killer = Killer(suite, *kill_every, rng=random.Random(rng_seed)) if kill_every else None
    restarts, errors = 0, []
    try:
        for worker in pool:
            worker.start()
        deployed.start()
        placer.start()
        if killer:
            killer.start()
        restarts = _while_placing(suite, placer, killer, pool, sorted(restart_at), began, progress)
        if killer:
            killer.stop()
        suite.wait_ready(timeout=90)
        errors += settled(lambda timeout: queue_empty(suite, timeout), placer, settle, drain_timeout, due_after)
    finally:
        placer.stop()
        if killer:
            killer.stop()
        for worker in pool:
            worker.stop()
        deployed.stop()
    errors += placer.errors
    if deployed.hung:
        errors.append("the deployed-style worker (no timeout) waited over 60 s for a reply")
    broker = BrokerLog.read(suite.base / "log" / "task_broker.log")
    raws = [raw for worker in pool for raw in worker.received] + list(deployed.received)
    due = complete_on_disk(s.sdr_dir, older_than=due_after)
    complete = complete_on_disk(s.sdr_dir)
    result = account(due, raws, broker.in_doubt_tasks)
    handed = {key for task in result.tasks for key in task.granules}
    return Report(
        placed_files=len(placer.placed),
        satellite_granules=len({name.split("_b")[0].split("_", 1)[1] for name in placer.placed}),
        result=result, broker=broker, pending=(complete - due) - handed,
        requests=sum(w.requests for w in pool), unanswered=sum(w.unanswered for w in pool),
        kills=killer.kills if killer else [], restarts=restarts, seconds=time.monotonic() - began, errors=errors,
    )
