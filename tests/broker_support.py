"""Helpers for the task_broker tests: the real broker and nameserver as processes, the broker's shell in a thread of
the test process, a clock that moves when told (for the broker's core), granule messages and files, and a worker
loop written like the deployed viirsprocessor one. The processes and sockets are real; the in-process broker differs
from the daemon only in having no bus to follow (and no signal handlers)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import zmq

# free_port, request, wait_for_port and wait_until live in tests.support; imported here for the modules that import
# them from here
from tests.support import free_port, request, wait_for_port, wait_until  # noqa: F401

BIN = Path(sys.executable).parent
DATA = Path(__file__).parent / "data"
TLE_FILE = DATA / "weather.txt"
#: the test TLE set's epoch: every satellite is at its ascending node then
TLE_EPOCH = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
#: 10 minutes after the ascending node: going north; 60 minutes after (argument of latitude ~213 deg): going south
ASCENDING_TIME = TLE_EPOCH + dt.timedelta(minutes=10)
DESCENDING_TIME = TLE_EPOCH + dt.timedelta(minutes=60)
SHORT = {"Suomi-NPP": "npp", "NOAA-20": "j01", "NOAA-21": "j02"}


class FakeClock:
    """Wall and monotonic time (epoch seconds) that move only when told: the broker core's clock in tests."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def wall(self) -> float:
        return self.t

    def ticks(self) -> float:
        return self.t

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.t, dt.UTC)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def place(base: Path, product: str, short: str, start: dt.datetime, orbit: int = 70000) -> list[str]:
    """Place one granule's files in ``base/sdr`` as the suite does (written in tmp/, renamed in); their names."""
    from avoviirscollector.viirs import PRODUCTS, format_name

    names = [format_name(segment, short, start, start + dt.timedelta(seconds=85.4), orbit,
                         start + dt.timedelta(minutes=9)) for segment in PRODUCTS[product]]
    (base / "sdr").mkdir(parents=True, exist_ok=True)
    (base / "tmp").mkdir(parents=True, exist_ok=True)
    for name in names:
        (base / "tmp" / name).write_bytes(b"x")
        os.replace(base / "tmp" / name, base / "sdr" / name)
    return names


def granule_files(product: str, platform_name: str, orbit: int, start: dt.datetime, base: Path) -> list[dict]:
    from avoviirscollector.viirs import PRODUCTS, format_name

    short = SHORT[platform_name]
    naive = start.astimezone(dt.UTC).replace(tzinfo=None)
    end = naive + dt.timedelta(seconds=85.4)
    created = naive + dt.timedelta(minutes=10)
    names = [format_name(seg, short, naive, end, orbit, created) for seg in PRODUCTS[product]]
    return [{"uri": str(base / "sdr" / name), "uid": name} for name in names]


def granule_data(product: str, platform_name: str, orbit: int, start: dt.datetime, base: Path) -> dict:
    """Data like segment_gatherer 0.22's dataset message (aware UTC datetimes)."""
    end = start + dt.timedelta(seconds=85.4)
    return {
        "platform_shortname": SHORT[platform_name], "start_time": start, "end_time": end, "orbit_number": orbit,
        "proctime": start + dt.timedelta(minutes=10), "source": "cspp_dev", "platform_name": platform_name,
        "orig_platform_name": SHORT[platform_name], "sensor": ["viirs"],
        "dataset": granule_files(product, platform_name, orbit, start, base),
    }


def seed_queue(base: Path, products: list[str], orbit: int = 40000, files_of: str | None = None) -> list:
    """Write one queued task per entry of ``products`` as the broker's own state in ``base/state``: NOAA-20,
    orbits from ``orbit`` on, granules two minutes apart (each a granule of its own), all ascending; the files are
    those of ``files_of`` when given (for made-up product names), else of the task's product. The tasks, in order."""
    from avoviirscollector.broker.store import JournalStore
    from avoviirscollector.broker.taskqueue import TaskQueue, parse_granule, task_to_record
    from avoviirscollector.ondisk.journal import Put

    queue = TaskQueue()
    now = dt.datetime.now(dt.UTC)
    for index, product in enumerate(products):
        start = ASCENDING_TIME + dt.timedelta(minutes=2 * index)
        data = granule_data(files_of or product, "NOAA-20", orbit + index, start, base)
        queue.offer(parse_granule(f"/AVO/viirs/granule/{product}", "dataset", "gatherer@test", now, data), "ascending")
    store = JournalStore(base / "state")
    store.compact((Put(task_to_record(task)) for task in queue), store.header(queue.next_id, now))
    store.close()
    return list(queue)


class Nameserver:
    """posttroll's nameserver without multicast, as a process."""

    def __init__(self, log_path: Path) -> None:
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([str(BIN / "nameserver"), "--no-multicast"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for_port(5557)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Broker:
    """The task_broker console script as a process, with its own VIIRS_BASE and ports."""

    def __init__(self, base: Path, task_port: int | None = None, update_port: int | None = None,
                 tle: bool = True) -> None:
        self.base = base
        self.task_port = task_port or free_port()
        self.update_port = update_port or free_port()
        (base / "elements").mkdir(parents=True, exist_ok=True)
        (base / "log").mkdir(parents=True, exist_ok=True)
        if tle:
            shutil.copy(TLE_FILE, base / "elements" / "weather.txt")
        self.env = dict(os.environ, VIIRS_BASE=str(base), TASK_PORT=str(self.task_port),
                        UPDATE_PORT=str(self.update_port), PUBLISH_PORT=str(free_port()))
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.base / "log" / "task_broker.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 15.0) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([str(BIN / "task_broker")], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        self.wait_status(timeout)

    def wait_status(self, timeout: float = 15.0) -> dict:
        """The next status message (proves the broker is up and publishing)."""
        with Status(self.update_port) as status:
            got = status.next(timeout)
        if got is None:
            raise AssertionError(f"no status from the broker in {timeout} s; log:\n{self.log_text()[-3000:]}")
        return got

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Status:
    """A SUB socket on the broker's status stream."""

    def __init__(self, port: int) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def __enter__(self) -> Status:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def next(self, timeout: float) -> dict | None:
        if self.sock.poll(int(timeout * 1000)):
            return json.loads(self.sock.recv())
        return None

    def wait_for(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            got = self.next(max(0.01, deadline - time.monotonic()))
            if got is not None:
                last = got
                if predicate(got):
                    return got
        raise AssertionError(f"status never matched in {timeout} s; last {last}")

    def close(self) -> None:
        self.sock.close()
        self.context.term()


@contextmanager
def no_bus(topics: list[str]):
    """A bus follower that never receives anything (the in-process broker's: its granules come from sdr/)."""

    class Silent:
        def recv(self, timeout: float):
            while True:
                time.sleep(timeout)
                yield None

    yield Silent()


class InProcessBroker:
    """task_broker's shell and core in a thread of this process: real sockets on free ports (TASK_PORT, UPDATE_PORT,
    the operators' ipc socket), the state in ``base/state``, the direction decided in-process from the test TLE set,
    sdr/ scanned every ``scan_seconds``; no bus. ``stop()`` is what SIGTERM does to the daemon."""

    def __init__(self, base: Path, scan_seconds: float = 0.2) -> None:
        from avoviirscollector.broker.core import BrokerCore
        from avoviirscollector.broker.direction import DirectionFinder
        from avoviirscollector.broker.reconcile import gatherer_timeouts
        from avoviirscollector.broker.server import TaskBroker
        from avoviirscollector.broker.store import JournalStore
        from avoviirscollector.config import load_settings

        class Finder(DirectionFinder):
            def close(self) -> None:
                pass

        self.base = base
        self.task_port, self.update_port = free_port(), free_port()
        (base / "elements").mkdir(parents=True, exist_ok=True)
        shutil.copy(TLE_FILE, base / "elements" / "weather.txt")
        self.env = {"VIIRS_BASE": str(base), "TASK_PORT": str(self.task_port), "UPDATE_PORT": str(self.update_port)}
        settings = load_settings(self.env)
        core = BrokerCore(JournalStore(settings.state_dir), settings.sdr_dir,
                          dt.timedelta(hours=settings.recovery_hours),
                          gatherer_timeouts(settings.etc_dir / "segment_gatherer.ini"))
        self.broker = TaskBroker(settings, core, Finder(settings.elements_dir), no_bus, scan_seconds)
        self.returned: int | None = None
        self.thread = threading.Thread(target=self._run, name="task_broker", daemon=True)

    def _run(self) -> None:
        self.returned = self.broker.run()

    def start(self, timeout: float = 15.0) -> None:
        self.thread.start()
        with Status(self.update_port) as status:
            if status.next(timeout) is None:
                raise AssertionError(f"no status from the in-process broker in {timeout} s")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop it as SIGTERM does; what ``run()`` returned."""
        self.broker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the broker did not stop within {timeout} s"
        return self.returned


class DeployedWorker(threading.Thread):
    """A worker loop written like the deployed viirsprocessor: SUB to the status stream, ask only while
    ``queue length > 0``, blocking REQ on the task port, empty reply = no job.

    The deployed loop blocks forever on its REQ; here a reply taking longer than ``hang_after`` seconds is recorded
    as a hang (and ends the loop) so a failing test reports it instead of hanging the suite. ``source`` binds the
    worker's connections to that local address (e.g. 127.0.0.2 to play a foreign host; ``host`` is the broker's
    address, IPv6 ones without brackets); ``heard`` counts the status
    messages received, ``latencies`` the seconds each request took to be answered and ``received_at`` when each
    task came. ``settled`` is true while the last status it read said no task waits and no request of its own is
    in flight: once the queue stays empty and every worker is settled, no worker asks again on a stale status."""

    def __init__(self, task_port: int, update_port: int, products: list[str], hang_after: float = 20.0,
                 source: str | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(daemon=True)
        self.task_port, self.update_port, self.products = task_port, update_port, products
        self.hang_after = hang_after
        self.source, self.host = source, host
        self.heard = 0
        self.latencies: list[float] = []
        self.received: list[bytes] = []
        self.received_at: list[float] = []  # when each task came (epoch seconds), in step with received
        self.empty = 0
        self.hung = False
        self.hung_since: float | None = None
        self.waiting = False  # what the last status read said: a task waits
        self.in_flight = False
        self.stopping = threading.Event()

    @property
    def settled(self) -> bool:
        return not self.waiting and not self.in_flight

    def run(self) -> None:
        context = zmq.Context()
        ipv6 = ":" in self.host
        bracket = (lambda address: f"[{address}]") if ipv6 else (lambda address: address)
        updates = context.socket(zmq.SUB)
        updates.setsockopt(zmq.SUBSCRIBE, b"")
        client = context.socket(zmq.REQ)
        via = f"{bracket(self.source)}:0;" if self.source else ""
        for sock, port in ((updates, self.update_port), (client, self.task_port)):
            sock.setsockopt(zmq.IPV6, int(ipv6))
            sock.connect(f"tcp://{via}{bracket(self.host)}:{port}")
        request_body = json.dumps({"desired products": self.products, "just testing": False}).encode()
        try:
            while not self.stopping.is_set():
                # the deployed worker's updater thread: the latest status decides whether a task is waiting
                while updates.poll(0):
                    self.waiting = json.loads(updates.recv())["queue length"] > 0
                    self.heard += 1
                if not self.waiting:
                    time.sleep(0.1)
                    continue
                self.in_flight = True
                sent = time.perf_counter()
                client.send(request_body)
                if not client.poll(int(self.hang_after * 1000)):
                    self.hung = True
                    self.hung_since = time.time() - self.hang_after  # when the unanswered request was sent
                    return
                reply = client.recv()
                self.latencies.append(time.perf_counter() - sent)
                self.take(reply)
        finally:
            updates.close(linger=0)
            client.close(linger=0)
            context.term()

    def take(self, reply: bytes) -> None:
        """A reply as the deployed worker takes it: a task is kept (and when it came), an empty one counted and
        followed by the worker's pause; the request is no longer in flight."""
        if reply:
            self.received_at.append(time.time())
            self.received.append(reply)
        self.in_flight = False
        if not reply:
            self.empty += 1
            time.sleep(0.1)  # the deployed worker's pace after an empty reply

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def run_until_drained(workers: list[DeployedWorker], update_port: int, timeout: float,
                      first: Callable[[], object] | None = None) -> list[bytes]:
    """Start ``workers``, wait for ``first()`` (if given), for an empty queue in the status stream and for every
    worker to have heard it (workers keep asking on stale statuses: late duplicates would come by then); stop them,
    check none hung, and return every reply they got."""
    for worker in workers:
        worker.start()
    try:
        if first is not None:
            first()
        with Status(update_port) as status:
            status.wait_for(lambda st: st["queue length"] == 0, timeout)
        wait_until(lambda: all(worker.settled for worker in workers), 10, "the workers heard the queue is empty")
    finally:
        for worker in workers:
            worker.stop()
    assert not any(worker.hung for worker in workers)
    return [raw for worker in workers for raw in worker.received]
