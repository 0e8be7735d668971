"""Is the suite ready, not only RUNNING? The verdict of ``avoviirscollector status --wait-ready`` and of avo_cron.

supervisord's RUNNING only says that a program stayed up for ``startsecs``. Ready means that a file placed in
``sdr/`` now goes all the way: every gatherer hears trollstalker, task_broker and msg_publisher hear every
publisher, our programs have bound their ports and installed their signal handlers. The suite is ready when:

- supervisord answers and every program it runs is RUNNING (a stopped program is a reason, naming it);
- our programs (task_broker, msg_publisher, monitor, cron) have written their ready marker (ready.py), with the
  pid supervisord reports (a marker of an earlier run's pid is not ready);
- the posttroll nameserver answers;
- trollstalker and every segment_gatherer (unmodified pytroll programs, observed from outside) have registered
  their publisher with the nameserver (services ``trollstalker_viirs`` and ``segment_gatherer_<product>``), on a
  port their current pid listens on (a registration left by a killed run is not theirs). A gatherer registers its
  publisher only after it created its listener (``segments.py`` ``_setup_messaging``), but the listener connects
  in a thread of its own: so the connection is checked too;
- the bus connections are made: every segment_gatherer -> trollstalker's publisher; task_broker and msg_publisher
  -> trollstalker's and every gatherer's. A connection is an ESTABLISHED TCP socket of the
  subscriber's pid (``/proc/<pid>/fd`` socket inodes, looked up in ``/proc/<pid>/net/tcp`` and ``tcp6``) whose
  remote port is the publisher's advertised port. It counts once seen on two reads at least 0.25 s apart
  (:data:`STEADY_SECONDS`): the ZMTP handshake and the subscription follow the TCP connect within milliseconds, and
  a connection that lives a quarter of a second is not one being refused. monitor follows no posttroll bus (only
  task_broker's status stream), so it has no connection to check.

:class:`Judge` is the pure part: observations in (supervisord's programs and pids, the markers, the nameserver's
registrations, each pid's listening ports and connections, the time of the read), the reasons the suite is not
ready out (none: ready). :func:`wait_ready` asks again every 0.2 s until ready or a timeout. :class:`Collector` is
the thin I/O: supervisord through supervisor_client.py, the nameserver through posttroll (bus.py), sockets from
/proc. Read-only; it needs to run as the suite's user (``/proc/<pid>/fd`` of its processes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from avoviirscollector.config import Settings
from avoviirscollector.gatherers import PROGRAM_PREFIX
from avoviirscollector.ready import read_markers
from avoviirscollector.supervisor_client import ERRORS, socket_path, supervisor_programs

#: our programs that say when they are ready (ready.py)
MARKED = ("task_broker", "msg_publisher", "monitor", "cron")
TROLLSTALKER = "trollstalker"
#: trollstalker's publisher's service: ``trollstalker_`` and its ini section (``-C viirs`` in supervisord.conf)
TROLLSTALKER_SERVICE = "trollstalker_viirs"
#: the gatherers' program names start so (gatherers.py); each one's service is ``segment_gatherer_<product>``
GATHERER_PREFIX = PROGRAM_PREFIX
#: a connection counts when seen on two reads at least this far apart
STEADY_SECONDS = 0.25
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"


def service_of(program: str) -> str | None:
    """The nameserver service of a pytroll publisher program of the suite, None for the others."""
    if program == TROLLSTALKER:
        return TROLLSTALKER_SERVICE
    if program.startswith(GATHERER_PREFIX):
        return "segment_gatherer_" + program[len(GATHERER_PREFIX):]
    return None


def required_links(programs: Iterable[str]) -> list[tuple[str, str]]:
    """(subscriber, publisher) program pairs whose bus connection must be made, among ``programs``."""
    names = set(programs)
    gatherers = sorted(name for name in names if name.startswith(GATHERER_PREFIX))
    stalker = [TROLLSTALKER] if TROLLSTALKER in names else []
    links = [(gatherer, TROLLSTALKER) for gatherer in gatherers if stalker]
    if "task_broker" in names:  # the datasets, and trollstalker's file messages (how far the live path has come)
        links += [("task_broker", publisher) for publisher in stalker + gatherers]
    if "msg_publisher" in names:
        links += [("msg_publisher", publisher) for publisher in stalker + gatherers]
    return links


def watched(programs: Iterable[str]) -> set[str]:
    """The programs whose sockets the judge needs: publishers and subscribers of the bus."""
    names = set(programs)
    return {name for link in required_links(names) for name in link} | {n for n in names if service_of(n)}


# ----------------------------------------------------------------------------------------------- observations
@dataclass(frozen=True)
class Program:
    name: str  # supervisord's name without its group
    state: str
    pid: int


@dataclass(frozen=True)
class Registration:
    services: tuple[str, ...]
    uri: str
    port: int | None


@dataclass(frozen=True)
class Sockets:
    """One pid's TCP sockets: the ports it listens on, the remote ports of its established connections."""

    listening: frozenset[int] = frozenset()
    remote: frozenset[int] = frozenset()
    error: str | None = None


@dataclass(frozen=True)
class Observation:
    """One read of everything the judge looks at; ``time`` is monotonic seconds (when the sockets were read)."""

    time: float
    programs: tuple[Program, ...] | None  # None: supervisord did not answer
    supervisor_error: str | None = None
    markers: Mapping[str, int] = field(default_factory=dict)
    registrations: tuple[Registration, ...] | None = None  # None: the nameserver did not answer
    nameserver_error: str | None = None
    sockets: Mapping[int, Sockets] = field(default_factory=dict)


def parse_registrations(answer: Iterable[object]) -> tuple[Registration, ...]:
    """The nameserver's answer (``get_pub_address("")``: ``{"URI": "tcp://host:port", "service": [...]}``)."""
    found = []
    for entry in answer:
        if not isinstance(entry, dict) or not isinstance(entry.get("URI"), str):
            continue
        services = entry.get("service") or []
        services = (services,) if isinstance(services, str) else tuple(str(s) for s in services)
        port_text = entry["URI"].rpartition(":")[2]
        found.append(Registration(services, entry["URI"], int(port_text) if port_text.isdigit() else None))
    return tuple(found)


def parse_tcp_table(text: str) -> list[tuple[int, int, str, int]]:
    """Rows of ``/proc/<pid>/net/tcp`` or ``tcp6``: (local port, remote port, state in hex, socket inode)."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            local, remote = (int(addr.rpartition(":")[2], 16) for addr in fields[1:3])
            rows.append((local, remote, fields[3].upper(), int(fields[9])))
        except ValueError:
            continue
    return rows


def sockets_of(inodes: set[int], tables: Iterable[str]) -> Sockets:
    """The listening ports and established remote ports of the sockets ``inodes`` in the TCP ``tables``."""
    listening, remote = set(), set()
    for text in tables:
        for local_port, remote_port, state, inode in parse_tcp_table(text):
            if inode not in inodes:
                continue
            if state == TCP_LISTEN:
                listening.add(local_port)
            elif state == TCP_ESTABLISHED:
                remote.add(remote_port)
    return Sockets(frozenset(listening), frozenset(remote))


# ----------------------------------------------------------------------------------------------- the judge
class Judge:
    """The reasons an observation is not of a ready suite (see the module docstring); keeps, between reads, when
    each needed connection was first seen. ``exclude``: programs not judged (avo_cron leaves itself out)."""

    def __init__(self, exclude: Iterable[str] = (), steady: float = STEADY_SECONDS) -> None:
        self.exclude = frozenset(exclude)
        self.steady = steady
        self._since: dict[tuple[int, int], float] = {}
        #: when the youngest connection seen becomes steady (monotonic), or None: the read then may say ready
        self.due: float | None = None

    def reasons(self, seen: Observation) -> list[str]:
        if seen.programs is None:
            self._since, self.due = {}, None
            return [f"supervisord does not answer: {seen.supervisor_error}"]
        programs = {p.name: p for p in seen.programs if p.name not in self.exclude}
        running = {name: p for name, p in programs.items() if p.state == "RUNNING"}
        out = [f"{name} is {p.state}" for name, p in sorted(programs.items()) if p.state != "RUNNING"]
        out += self._markers(running, seen.markers)
        if seen.registrations is None:
            out.append(f"the posttroll nameserver does not answer ({seen.nameserver_error})")
        out += [f"cannot read the sockets of {name} (pid {p.pid}): {seen.sockets[p.pid].error}"
                for name, p in sorted(running.items()) if p.pid in seen.sockets and seen.sockets[p.pid].error]
        ports, why = self._publishers(running, seen)
        return out + why + self._links(programs, running, ports, seen)

    @staticmethod
    def _markers(running: Mapping[str, Program], markers: Mapping[str, int]) -> list[str]:
        out = []
        for name in MARKED:
            if name not in running:
                continue
            pid = markers.get(name)
            if pid is None:
                out.append(f"{name} has not said it is ready (no run/ready/{name}.json)")
            elif pid != running[name].pid:
                out.append(f"{name}'s ready marker is of pid {pid}, an earlier run's (now pid {running[name].pid})")
        return out

    @staticmethod
    def _publishers(running: Mapping[str, Program], seen: Observation) -> tuple[dict[str, int], list[str]]:
        """{publisher program: its registered port that its pid listens on}, and the reasons for the others."""
        ports, out = {}, []
        if seen.registrations is None:
            return ports, out
        for name, program in sorted(running.items()):
            service = service_of(name)
            if service is None:
                continue
            mine = [r for r in seen.registrations if service in r.services]
            listening = seen.sockets.get(program.pid, Sockets()).listening
            chosen = [r.port for r in mine if r.port in listening]
            if chosen:
                ports[name] = chosen[0]
            elif not mine:
                out.append(f"{name} has not registered its publisher ({service}) with the nameserver")
            else:
                out.append(f"{name}'s registered publisher ({', '.join(r.uri for r in mine)}) is not a port its "
                           f"pid {program.pid} listens on (an earlier run's)")
        return ports, out

    def _links(self, programs: Mapping[str, Program], running: Mapping[str, Program], ports: Mapping[str, int],
               seen: Observation) -> list[str]:
        out, since, self.due = [], {}, None
        for subscriber, publisher in required_links(programs):
            if subscriber not in running or publisher not in ports:
                continue  # said already: not RUNNING, or no publisher to connect to
            key = (running[subscriber].pid, ports[publisher])
            if key[1] not in seen.sockets.get(key[0], Sockets()).remote:
                out.append(f"{subscriber} is not connected to {publisher}'s publisher (port {key[1]})")
                continue
            since[key] = first = self._since.get(key, seen.time)
            if seen.time - first < self.steady:
                out.append(f"{subscriber}'s connection to {publisher}'s publisher (port {key[1]}) is new: seen "
                           f"for {seen.time - first:.2f} s of the {self.steady:g} s it needs")
                self.due = max(self.due or 0.0, first + self.steady)
        self._since = since
        return out


@dataclass(frozen=True)
class Outcome:
    ready: bool
    seconds: float
    reasons: list[str]
    stopped: bool = False


def wait_ready(observe: Callable[[], Observation], timeout: float, judge: Judge | None = None,
               every: float = 0.2, stopping: threading.Event | None = None,
               clock: Callable[[], float] = time.monotonic) -> Outcome:
    """Observe and judge every ``every`` seconds (sooner when a new connection becomes steady then) until ready,
    ``timeout`` seconds have passed, or ``stopping`` is set (``stopped``)."""
    judge = judge or Judge()
    stopping = stopping or threading.Event()
    began = clock()
    while True:
        reasons = judge.reasons(observe())
        now = clock()
        if not reasons or now - began >= timeout:
            return Outcome(not reasons, now - began, reasons)
        wait = min(every, began + timeout - now)
        if judge.due is not None:
            wait = min(wait, max(0.01, judge.due - now))
        if stopping.wait(wait):
            return Outcome(False, clock() - began, reasons, stopped=True)


# ----------------------------------------------------------------------------------------------- I/O
def net_tables(pid: int, proc: Path = Path("/proc")) -> list[str]:
    """The TCP tables (``tcp``, and ``tcp6`` where there is IPv6) of the network namespace of ``pid``."""
    tables = []
    for name in ("tcp", "tcp6"):
        try:
            tables.append((proc / str(pid) / "net" / name).read_text())
        except FileNotFoundError:  # no IPv6
            continue
    return tables


class NetTables:
    """:func:`net_tables` read once per network namespace (each read walks the kernel's whole table: ~5 ms)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._read: dict[str, list[str]] = {}

    def of(self, pid: int) -> list[str]:
        namespace = os.readlink(self.proc / str(pid) / "ns" / "net")
        if namespace not in self._read:
            self._read[namespace] = net_tables(pid, self.proc)
        return self._read[namespace]


def pid_sockets(pid: int, tables: NetTables) -> Sockets:
    """The TCP sockets of ``pid``: its socket inodes from ``/proc/<pid>/fd``, their rows in its ``net/tcp{,6}``."""
    inodes = set()
    try:
        with os.scandir(tables.proc / str(pid) / "fd") as entries:
            for entry in entries:
                try:
                    target = os.readlink(entry.path)
                except OSError:  # closed meanwhile
                    continue
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        return sockets_of(inodes, tables.of(pid))
    except OSError as err:
        return Sockets(error=f"{type(err).__name__}: {err}")


class Collector:
    """Reads an :class:`Observation` of the suite at ``settings.viirs_base``: supervisord (its socket, logged in
    as supervisorctl is), the ready markers, the nameserver (posttroll, on localhost), /proc. Each question waits
    ``timeout`` seconds at most."""

    def __init__(self, settings: Settings, timeout: float = 1.0, proc: Path = Path("/proc")) -> None:
        self.settings = settings
        self.timeout = timeout
        self.proc = proc

    def observe(self) -> Observation:
        from avoviirscollector.bus import registered_publishers

        try:
            infos = supervisor_programs(socket_path(self.settings.viirs_base), timeout=self.timeout)
        except ERRORS as err:
            return Observation(time.monotonic(), None, f"{type(err).__name__}: {err}")
        programs = tuple(Program(info["name"].rpartition(":")[2], info["state"], info["pid"]) for info in infos)
        markers = read_markers(self.settings.viirs_base)
        registrations, ns_error = None, None
        try:
            registrations = parse_registrations(registered_publishers(timeout=self.timeout))
        except Exception as err:  # noqa: BLE001 (a timeout or a ZeroMQ error: it does not answer)
            ns_error = f"{type(err).__name__}: {err}"
        names, tables = watched(p.name for p in programs), NetTables(self.proc)
        sockets = {p.pid: pid_sockets(p.pid, tables) for p in programs if p.name in names and p.pid}
        return Observation(time.monotonic(), programs, None, markers, registrations, ns_error, sockets)
