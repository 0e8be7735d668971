"""No granule lost on a pair: the whole suite on both hosts of the lab (pair.py), a stream of granule files into
both, programs SIGKILLed on random hosts, the active host deleted now and then, two workers written like the
deployed ones on the service address, and the accounting of chaos.py across the pair.

- **The hosts.** Each runs the suite as production does: ``avoviirscollector supervise`` with the repo's
  supervisord.conf in the host's namespace (``Suite(enter=...)``), its ``PAIR_*`` settings, and keepalived beside it
  (``avoviirscollector pair keepalived``, as its own service). The three service ports are the same on both; the
  workers know only the service address.
- **The stream** (:class:`PairPlacer`) stands for both hosts' mirror_gina: each file is placed (into tmp/, renamed
  into sdr/) on every host that is up and ready; a host that is down misses it, and is given every file it missed
  once it is back and ready, as its own mirror_gina would fetch what GINA still lists.
- **The chaos**: every ``low``..``high`` seconds a random program (``chaos.KILLABLE``) of a random host that is up
  is SIGKILLed (:class:`PairKiller`; its supervisord restarts it); at each of ``delete_at`` (seconds after the
  start) the active host is deleted (:func:`host_fault`: every process SIGKILLed, its namespace gone, a host that
  lost its power), stays away ``down`` seconds, and comes back with its disk: its suite and keepalived start
  again, it is the standby, and the run goes on once the pair is whole (a host not yet caught up must not be the
  next to serve).
- **The accounting** (``chaos.account``): every product granule complete on a host's disk for ``due_after``
  seconds is in exactly one task that a worker received, beyond the hand-outs a broker logged in doubt (either
  host's log: its own restarts, or the other host's hand-outs at a promotion).

Used by ``tests/e2e/test_pair_chaos.py`` and ``bench/bench_pair_chaos.py``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from avoviirscollector.viirs import PRODUCTS
from tests.e2e import chaos
from tests.e2e.harness import Suite
from tests.e2e.pair import PairLab, PairWorker, drained, worker_states
from tests.support import WaitTimeout, wait_until

#: the service ports, the same on both hosts (the workers' settings name one); heartbeats as the README advises
#: for a pair (HEARTBEAT_TTL 8 or less, for tasks again within 15 s of a failover)
PORTS = {"TASK_PORT": "19094", "UPDATE_PORT": "19194", "PUBLISH_PORT": "29094", "HEARTBEAT_TTL": "4"}


class PairSuites:
    """The suite on each host of ``lab``, with ``extra`` settings (the gatherers' etc, RECOVERY_HOURS...)."""

    def __init__(self, lab: PairLab, tmp: Path, extra: dict[str, str]) -> None:
        self.lab, self.tmp, self.extra = lab, tmp, extra
        self.suites: dict[str, Suite] = {}
        self.ready: set[str] = set()  # hosts up with their suite ready (the placer places there, the killer kills)
        self.lock = threading.Lock()
        self.port = int(PORTS["UPDATE_PORT"])

    def start(self, names: list[str] | None = None, timeout: float = 120) -> None:
        """The suites of ``names`` (default: both) started at once, then each waited for; then keepalived on each."""
        names = names or list(self.lab.hosts)
        for name in names:
            host = self.lab.hosts[name]
            suite = Suite(self.tmp / f"{name}-run", extra_env={**host.env(), **PORTS, **self.extra},
                          enter=host.ns.command(), base=host.base)
            suite.output.parent.mkdir(parents=True, exist_ok=True)
            self.suites[name] = suite
            suite.start(wait=False)
        for name in names:
            self.suites[name].wait_ready(timeout)
        for name in names:
            self.lab.start_keepalived(name)

    def status(self, name: str) -> dict:
        """Host ``name``'s broker status ({} while the host is away or its broker does not publish)."""
        return (self.lab.status(name, self.port) or {}) if self.lab.hosts[name].ns else {}

    def summary(self) -> str:
        """Each host's role, whether it serves, its link and its real count of tasks queued ("away": no status)."""
        parts = []
        for name in self.lab.hosts:
            status = self.status(name)
            pair = status.get("pair")
            queued = status.get("queued", status.get("queue length"))
            parts.append(f"{name} {pair.get('role')} (serving {pair.get('serving')}, link {pair.get('link')}, "
                         f"{queued} queued)" if pair else f"{name} away")
        return ", ".join(parts)

    def active(self) -> str | None:
        """The host whose broker serves (None: none does now)."""
        return next((name for name in self.lab.hosts if self.status(name).get("pair", {}).get("serving")), None)

    def whole(self) -> bool:
        """Both brokers up, one serving, and its link to the other whole."""
        statuses = {name: self.status(name).get("pair", {}) for name in self.lab.hosts}
        serving = [pair for pair in statuses.values() if pair.get("serving")]
        return len(serving) == 1 and serving[0].get("link") == "whole" and all(statuses.values())

    def delete(self, name: str) -> None:
        """Host ``name`` vanishes with every process (``PairLab.delete_host``); its disk stays."""
        with self.lock:
            self.ready.discard(name)
        self.lab.delete_host(name)
        self.suites[name].stop(timeout=5)

    def bring_back(self, name: str, timeout: float = 120) -> None:
        """Host ``name`` made again with its disk, its suite and keepalived started; ready for the placer."""
        self.lab.add_host(name)
        self.start([name], timeout)
        with self.lock:
            self.ready.add(name)

    def stop(self) -> None:
        for suite in self.suites.values():
            suite.stop(timeout=10)


class PairPlacer(chaos.Placer):
    """Places the scheduled files on time on every host that is ready (``chaos.Placer``'s clock); a host that is not
    keeps a backlog, placed by :meth:`catch_up` when it is back."""

    def __init__(self, suites: PairSuites, placements: list[chaos.Placement]) -> None:
        super().__init__(suites, placements)
        self.suites = suites
        self.backlog: dict[str, list[str]] = {name: [] for name in suites.lab.hosts}

    def _place(self, name: str, file: str) -> None:
        try:
            self.suites.suites[name].place(file)
        except OSError as err:
            self.errors.append(f"{name}: {file}: {err}")

    def place(self, name: str) -> None:
        with self.suites.lock:
            for host in self.suites.lab.hosts:
                if host in self.suites.ready:
                    self._place(host, name)
                else:
                    self.backlog[host].append(name)
        self.placed.append(name)
        self.last_placed = time.monotonic()

    def catch_up(self, name: str) -> int:
        """Place on host ``name`` every file it missed (its mirror_gina's first run after its return). How many."""
        with self.suites.lock:
            missed, self.backlog[name] = self.backlog[name], []
            for file in missed:
                self._place(name, file)
        self.last_placed = time.monotonic()
        return len(missed)


@dataclass
class HostFault:
    host: str
    deleted: float  # seconds after the start
    back: float  # the host's suite ready again
    whole: float  # the pair whole again
    missed: int  # files it was given when back


class PairKiller(chaos.Killer):
    """``chaos.Killer`` on the pair: each program of ``chaos.KILLABLE`` once, in a random order, before any again,
    every ``low``..``high`` s, each time on a random host that is ready. Its :attr:`kills` are (time, host,
    program, pid)."""

    def __init__(self, suites: PairSuites, low: float, high: float, rng: random.Random) -> None:
        super().__init__(suites, low, high, chaos.KILLABLE, rng)
        self.suites = suites
        self.lock = suites.lock  # the placer's lock too: a host is not deleted or made again in the middle

    def kill(self, program: str) -> tuple | None:
        ready = sorted(self.suites.ready)
        if not ready:
            return None
        name = self.rng.choice(ready)
        pid = self.suites.suites[name].pid(program)
        os.kill(pid, signal.SIGKILL)
        return time.time(), name, program, pid


def host_fault(suites: PairSuites, placer: PairPlacer, down: float, began: float) -> HostFault:
    """The active host deleted, ``down`` s away, back with its disk and given the files it missed; returns once the
    pair is whole again (a host not yet caught up must not be the next to serve).

    Called from the main thread: the lab's processes die with the thread that started them (``setpriv
    --pdeathsig`` is a thread's, not a process's), so a host brought back from a thread that then ends loses its
    keepalived and its namespace's holder."""
    active = wait_until(suites.active, 30, "a host serving before a host is deleted")
    deleted = time.monotonic() - began
    suites.delete(active)
    time.sleep(down)  # a window: the host is away this long
    suites.bring_back(active)
    back = time.monotonic() - began
    missed = placer.catch_up(active)
    wait_until(suites.whole, 60, f"the pair whole again after {active} came back")
    return HostFault(active, deleted, back, time.monotonic() - began, missed)


@dataclass
class PairReport:
    placed_files: int
    result: chaos.Account
    in_doubt_lines: int
    kills: list[tuple[float, str, str, int]]
    faults: list[HostFault]
    twice_counted: dict[str, int]
    in_doubt_counted: dict[str, int]
    hung: list[str]
    seconds: float
    errors: list[str] = field(default_factory=list)

    def figures(self) -> str:
        r = self.result
        kinds: dict[str, int] = {}
        for _, host, program, _ in self.kills:
            kinds[f"{host}:{program}"] = kinds.get(f"{host}:{program}", 0) + 1
        faults = "; ".join(f"{f.host} deleted at {f.deleted:.0f} s, back and ready at {f.back:.0f} s ({f.missed} "
                           f"files missed, placed then), pair whole at {f.whole:.0f} s" for f in self.faults)
        return "\n".join([
            f"files placed: {self.placed_files}; complete product granules: {len(r.complete)}; tasks handed out: "
            f"{len(r.tasks)}",
            f"lost: {len(r.lost)}   twice: {len(r.twice)}   repeated in doubt: {len(r.in_doubt_repeats)} (broker "
            f"lines in doubt: {self.in_doubt_lines})   partial: {len(r.partial)}   problems: {len(r.problems)}",
            f"counted by the brokers: handed out twice {self.twice_counted}, in doubt {self.in_doubt_counted}",
            f"kills: {len(self.kills)} {kinds}",
            f"hosts deleted: {faults or 'none'}",
            f"workers that waited for ever: {self.hung or 'none'}; run {self.seconds:.0f} s",
            *([f"errors: {self.errors[:5]}"] if self.errors else []),
            r.summary(),
        ])


def run(lab: PairLab, tmp: Path, placements: list[chaos.Placement], extra: dict[str, str],
        kill_every: tuple[float, float], delete_at: list[float], down: float, due_after: float = 60.0,
        drain_timeout: float = 90.0, seed: int = 5, progress=None) -> PairReport:
    """Start both suites and keepalived, run the stream and the chaos, let every host drain, account."""
    suites = PairSuites(lab, tmp, extra)
    began = time.monotonic()
    errors: list[str] = []
    statuses: dict[str, dict] = {}
    workers = {name: PairWorker(lab, name, int(PORTS["TASK_PORT"]), suites.port, 0.05, tuple(PRODUCTS))
               for name in lab.workers}
    placer = PairPlacer(suites, placements)
    killer = PairKiller(suites, *kill_every, random.Random(seed))
    faults: list[HostFault] = []
    pending = sorted(delete_at)
    try:
        suites.start()
        wait_until(suites.whole, 60, "the pair whole at the start")
        with suites.lock:
            suites.ready.update(lab.hosts)
        for worker in workers.values():
            worker.start()
        placer.start()
        killer.start()
        last_note = 0.0
        while placer.is_alive() or pending:
            if pending and time.monotonic() - began >= pending[0]:
                pending.pop(0)
                faults.append(host_fault(suites, placer, down, began))
            if progress and time.monotonic() - last_note >= 10:
                last_note = time.monotonic()
                progress(f"{last_note - began:.0f} s: {len(placer.placed)}/{len(placements)} files, "
                         f"{sum(len(w.received) for w in workers.values())} tasks, {len(killer.kills)} kills, "
                         f"{len(faults)} hosts deleted; {suites.summary()}; workers {worker_states(workers)}")
            placer.join(0.5)
        killer.stop()
        errors += placer.errors
        errors += settle(suites, placer, due_after, drain_timeout)
        statuses = {name: suites.status(name) for name in lab.hosts}  # before the suites stop
    finally:
        placer.stop()
        killer.stop()
        for worker in workers.values():
            worker.stop()
        suites.stop()
    logs = [chaos.BrokerLog.read(host.base / "log" / "task_broker.log") for host in lab.hosts.values()]
    in_doubt = set().union(*(log.in_doubt_tasks for log in logs))
    due = set().union(*(chaos.complete_on_disk(host.base / "sdr", older_than=due_after) for host in lab.hosts.values()))
    result = chaos.account(due, [raw for worker in workers.values() for raw in worker.received], in_doubt)
    return PairReport(
        placed_files=len(placer.placed), result=result, in_doubt_lines=sum(len(log.in_doubt) for log in logs),
        kills=killer.kills, faults=faults,
        twice_counted={name: status.get("handed out twice (24 h)", -1) for name, status in statuses.items()},
        in_doubt_counted={name: status.get("in doubt (24 h)", -1) for name, status in statuses.items()},
        hung=[name for name, worker in workers.items() if worker.hung],
        seconds=time.monotonic() - began, errors=errors)


def settle(suites: PairSuites, placer: PairPlacer, due_after: float, drain_timeout: float) -> list[str]:
    """The pair whole, then ``chaos.settled`` on the serving host's queue. What went wrong."""
    try:
        wait_until(suites.whole, drain_timeout, "the pair whole")
    except WaitTimeout as err:
        return [str(err)]

    def empty(timeout: float) -> bool:
        try:
            wait_until(lambda: pair_drained(suites), timeout, "the queue drained")
            return True
        except WaitTimeout:
            return False

    return chaos.settled(empty, placer, 0.0, drain_timeout, due_after)


def pair_drained(suites: PairSuites) -> bool:
    """The serving host's status says no task is queued."""
    active = suites.active()
    return active is not None and drained(suites.status(active))
