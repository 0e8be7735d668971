"""A pair of hosts made of network namespaces, for the tests of keepalived and the pair's role (test_pair_e2e.py).

Everything lives in network namespaces made here, under the test's own (loopback-only) one, which it never
changes: each namespace is held by a ``sleep`` that dies with the test (``setpriv --pdeathsig KILL``: with the thread
that started it, so start hosts and their processes from the main thread), and
commands run inside with ``nsenter --net``. Addresses are in 192.0.2.0/24 (TEST-NET-1), nothing is routed out.

    lan      br0  192.0.2.1/24  the site's switch; its own address is the witness (the gateway, PAIR_WITNESS)
             br1  (no address)  a second switch, empty: what is moved onto it is cut off from br0
    host a   eth0 192.0.2.11    keepalived priority 100   (veth eth0 <-> va in lan, on br0)
    host b   eth0 192.0.2.12    keepalived priority 90    (veth eth0 <-> vb)
    w1, w2   eth0 192.0.2.21/22 workers: they ask the virtual address 192.0.2.10 who answers (PROBE_PORT)

Faults: keepalived killed (SIGKILL to its process group), a host's link down (its switch port ``va`` down: carrier
lost), a host deleted (every process in its namespace SIGKILLed: the namespace and its veth go with the last one,
as a host that lost power; :meth:`PairLab.add_host` makes it again, its ``VIIRS_BASE`` kept like a disk). Two
partitions: ``split`` (bridge port isolation on ``va`` and ``vb``: the hosts lose each other but both still reach
the witness and the workers) and ``cut_off`` (a host and chosen workers moved to br1, links up: they see each other
only). Each host answers on PROBE_PORT of every address with its name, so a worker sees who serves the address.

:meth:`PairLab.close` (the context manager's exit) kills every process it started and every process left in its
namespaces, and checks that no namespace it made is left, also when the test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.broker_support import DeployedWorker
from tests.support import wait_until

NET = "192.0.2"
WITNESS = f"{NET}.1"
ADDRESS = f"{NET}.10"
PREFIX = 24
ROUTER_ID = 51
PROBE_PORT = 19091
HOSTS = {"a": (f"{NET}.11", 100), "b": (f"{NET}.12", 90)}
WORKERS = {"w1": f"{NET}.21", "w2": f"{NET}.22"}
END = object()  # a mark that is no answer
BIN = Path(sys.executable).parent
TOOLS = ("ip", "bridge", "nsenter", "unshare", "setpriv", "keepalived", "ping")

# Each host answers every connection on PROBE_PORT with its name: a worker connecting to ADDRESS learns who holds it
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(64)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[1].encode())
    c.close()
"""


# The first status a subscriber of 127.0.0.1:PORT hears within 3 s, as one JSON line
STATUS = """
import sys, zmq
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.SUBSCRIBE, b"")
sock.setsockopt(zmq.LINGER, 0)
sock.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
if sock.poll(3000):
    print(sock.recv().decode())
"""


def missing_tools() -> list[str]:
    """The programs the lab needs that are not installed (scripts/test-tools installs keepalived and ping)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pids_in(inode: int) -> list[int]:
    """Every process whose network namespace is ``inode``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and netns_inode(int(entry)) == inode:
            found.append(int(entry))
    return found


class Netns:
    """A network namespace held by a sleeping process; commands run in it with nsenter."""

    def __init__(self, name: str) -> None:
        self.name = name
        own = netns_inode(os.getpid())
        self.holder = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "unshare", "--net", "--", "sleep",
                                        "infinity"])
        wait_until(lambda: netns_inode(self.holder.pid) not in (None, own), 5, f"namespace {name}")
        self.inode = netns_inode(self.holder.pid)
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.started: list[subprocess.Popen] = []
        self.sh("ip", "link", "set", "lo", "up")

    def command(self, *args: str) -> list[str]:
        return ["nsenter", f"--net={self.path}", *args]

    def enter_here(self) -> None:
        """Move the calling thread into this namespace (setns is a thread's: the sockets it makes from now on are
        made in here; the process's other threads stay where they are)."""
        with open(self.path) as fd:
            os.setns(fd.fileno(), os.CLONE_NEWNET)

    def sh(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=20, env=env)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(args)}: {result.stderr.strip()}")
        return result

    def start(self, *args: str, output: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A long-running process in the namespace, in a process group of its own, killed if the test dies."""
        out = open(output, "ab") if output else subprocess.DEVNULL  # noqa: SIM115 (closed by the child's end)
        try:
            proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", *self.command(*args)], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
        finally:
            if output:
                out.close()
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        """SIGKILL every process in the namespace (the holder last): the namespace is gone with them."""
        for _ in range(50):
            others = [pid for pid in pids_in(self.inode) if pid != self.holder.pid]
            if not others:
                break
            for pid in others:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.holder.kill()
        for proc in [*self.started, self.holder]:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@dataclass
class Host:
    """One host of the pair: its namespace, its ``VIIRS_BASE`` (kept when the namespace goes) and its keepalived."""

    name: str
    address: str
    priority: int
    base: Path
    ns: Netns | None = None
    keepalived: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base / "keepalived.out"

    @property
    def peer(self) -> str:
        return next(address for name, (address, _) in HOSTS.items() if name != self.name)

    def env(self) -> dict[str, str]:
        """The host's settings as the pair's deployment gives them (PAIR_* and VIIRS_BASE)."""
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "VIIRS_BASE": str(self.base),
                "PAIR_PEER": self.peer, "PAIR_ADDRESS": f"{ADDRESS}/{PREFIX}", "PAIR_INTERFACE": "eth0",
                "PAIR_ROUTER_ID": str(ROUTER_ID), "PAIR_WITNESS": WITNESS, "PAIR_PRIORITY": str(self.priority)}


@dataclass
class Sample:
    """What the lab sees at one moment: which hosts hold ADDRESS, and each host's role file."""

    at: float
    holders: frozenset[str]
    roles: dict[str, str | None]


class Watcher:
    """Who answers worker ``worker`` at ADDRESS:PROBE_PORT, asked every 50 ms by a thread inside the worker's
    namespace (a connection that gets no answer within 0.2 s is None); keeps every change with its time."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.changes: list[tuple[float, str | None]] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.ns.enter_here()
        last: object = object()
        while self.running:
            try:
                with socket.create_connection((ADDRESS, PROBE_PORT), timeout=0.2) as conn:
                    got = conn.recv(16).decode() or None
            except OSError:
                got = None
            if got != last:
                self.changes.append((time.monotonic(), got))
                last = got
            time.sleep(0.05)

    def now(self) -> str | None:
        return self.changes[-1][1] if self.changes else None

    def first(self, answer: str | None, after: float) -> float | None:
        """The first moment after ``after`` at which ``answer`` answered (or was answering already)."""
        before = [got for at, got in self.changes if at <= after]
        if before and before[-1] == answer:
            return after
        return next((at for at, got in self.changes if at > after and got == answer), None)

    def seen(self, after: float, until: float | None = None) -> set[str | None]:
        """Every answer between ``after`` and ``until`` (now when None), the one answering at ``after`` included."""
        until = time.monotonic() if until is None else until
        before = [got for at, got in self.changes if at <= after]
        return set(before[-1:]) | {got for at, got in self.changes if after < at <= until}

    def longest(self, answer: str | None, after: float) -> float:
        """The longest stretch after ``after`` during which ``answer`` answered (0 when it never did)."""
        before = [got for at, got in self.changes if at <= after]
        marks: list[tuple[float, object]] = [(after, before[-1])] if before else []
        marks += [(at, got) for at, got in self.changes if at > after]
        marks.append((time.monotonic(), END))
        longest, start = 0.0, None
        for at, got in marks:
            if start is not None and got != answer:
                longest, start = max(longest, at - start), None
            if start is None and got == answer:
                start = at
        return longest

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=5)


class PairLab:
    """The two hosts, the switch (with the witness) and the workers; see the module's docstring."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts = {name: Host(name, address, priority, tmp / name) for name, (address, priority) in HOSTS.items()}
        self.lan: Netns | None = None
        self.workers: dict[str, Netns] = {}
        self.made: list[Netns] = []
        self.watchers: dict[str, Watcher] = {}

    def __enter__(self) -> PairLab:
        try:
            self.lan = self._netns("lan")
            for number, bridge in enumerate(("br0", "br1")):
                # a MAC of its own: a bridge takes its lowest port's otherwise, and the witness's MAC would change
                # under the hosts' ARP caches as hosts come and go (a real gateway keeps its MAC)
                self.lan.sh("ip", "link", "add", bridge, "address", f"02:00:00:00:00:0{number + 1}", "type", "bridge")
                self.lan.sh("ip", "link", "set", bridge, "up")
            self.lan.sh("ip", "addr", "add", f"{WITNESS}/{PREFIX}", "dev", "br0")
            for name, address in WORKERS.items():
                self.workers[name] = self._plug(name, address)
                self.watchers[name] = Watcher(self.workers[name])
            for host in self.hosts.values():
                host.base.mkdir(parents=True, exist_ok=True)
                self.add_host(host.name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, name: str) -> Netns:
        ns = Netns(name)
        self.made.append(ns)
        return ns

    def _plug(self, name: str, address: str) -> Netns:
        """A new namespace with eth0 (``address``/24) joined to br0 by the veth port ``v<name>``. eth0's MAC is made
        from the address, so a host made again has the MAC it had, as a real host's NIC keeps its own (a random one
        would leave the other host's ARP entry naming a MAC gone until it fails over, seconds of a catch-up)."""
        ns = self._netns(name)
        mac = "02:00:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))
        self.lan.sh("ip", "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "address", mac, "netns",
                    ns.path)
        self.lan.sh("ip", "link", "set", f"v{name}", "master", "br0", "up")
        ns.sh("ip", "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
        ns.sh("ip", "link", "set", "eth0", "up")
        return ns

    def add_host(self, name: str) -> None:
        """(Re)make host ``name``: namespace, link, address and the probe server (not keepalived)."""
        host = self.hosts[name]
        host.ns = self._plug(name, host.address)
        host.ns.start(sys.executable, "-c", SERVER, name, str(PROBE_PORT))
        wait_until(lambda: WITNESS in host.ns.sh("ping", "-c", "1", "-W", "1", WITNESS, check=False).stdout, 10,
                   f"host {name} reaching the witness")

    def start_keepalived(self, name: str) -> None:
        """keepalived on host ``name`` as production starts it: ``avoviirscollector pair keepalived``."""
        host = self.hosts[name]
        host.keepalived = host.ns.start(str(BIN / "avoviirscollector"), "pair", "keepalived", "--dir",
                                        str(host.base / "keepalived"), output=host.log, env=host.env())

    def start_broker(self, name: str, extra: dict[str, str]) -> subprocess.Popen:
        """task_broker on host ``name`` with the host's settings and ``extra`` (ports, HEARTBEAT_TTL...); its log in
        ``VIIRS_BASE/log``. No nameserver runs on the host: its queue is what its journal holds and what its view of
        sdr/ recovers, and the other host's hand-outs."""
        host = self.hosts[name]
        (host.base / "log").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **host.env(), **extra}
        return host.ns.start(str(BIN / "task_broker"), output=host.base / "log" / "task_broker.out", env=env)

    def status(self, name: str, port: int) -> dict | None:
        """The status task_broker on host ``name`` publishes on ``port`` (asked from inside the host), or None."""
        result = self.hosts[name].ns.sh(sys.executable, "-c", STATUS, str(port), check=False)
        return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else None

    def kill_keepalived(self, name: str) -> None:
        """SIGKILL keepalived's processes (its process group: the parent and its VRRP child)."""
        proc = self.hosts[name].keepalived
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)

    def link(self, name: str, up: bool) -> None:
        """Host ``name``'s switch port up or down (down: its eth0 loses carrier, as a pulled cable)."""
        self.lan.sh("ip", "link", "set", f"v{name}", "up" if up else "down")

    def delete_host(self, name: str) -> None:
        """Host ``name`` vanishes: every process in its namespace SIGKILLed, then its port deleted from the switch
        (the namespace goes with it).

        The port is deleted at once, not left to go with the namespace: the kernel frees a namespace without
        processes in a work queue of its own, later on a busy host (over 15 s was seen), and until then the dead
        host's kernel still answers ARP for its addresses, the service address included. A worker's ARP entry then
        went back to the dead host after the new active's gratuitous ARP, and its connection attempts backed off
        beyond 30 s (bench_pair, 3 runs of 5). A host that lost its power answers nothing."""
        host = self.hosts[name]
        ns = host.ns
        ns.kill_all()
        self.made.remove(ns)
        host.ns, host.keepalived = None, None
        assert pids_in(ns.inode) == [], f"processes left in host {name}: {pids_in(ns.inode)}"
        self.lan.sh("ip", "link", "del", f"v{name}", check=False)
        wait_until(lambda: self.lan.sh("ip", "link", "show", f"v{name}", check=False).returncode != 0, 5,
                   f"host {name}'s port deleted from the switch")

    def split(self, on: bool) -> None:
        """The hosts lose each other (bridge port isolation on va and vb); both still reach the witness and workers."""
        for name in self.hosts:
            self.lan.sh("bridge", "link", "set", "dev", f"v{name}", "isolated", "on" if on else "off")

    def cut_off(self, names: list[str], on: bool) -> None:
        """Move the ports of ``names`` (hosts or workers) to br1 (``on``) or back to br0: their links stay up, they
        see only each other."""
        for name in names:
            self.lan.sh("ip", "link", "set", f"v{name}", "master", "br1" if on else "br0")

    def holders(self) -> frozenset[str]:
        """The hosts that have ADDRESS as a local address now (their namespace's routing table of local addresses,
        read from /proc: no process started, so the lab can look every 30 ms without loading the machine)."""
        entry = f"|-- {ADDRESS}\n"
        held = set()
        for name, host in self.hosts.items():
            try:
                trie = Path(f"/proc/{host.ns.holder.pid}/net/fib_trie").read_text() if host.ns else ""
            except OSError:
                continue
            at = trie.find(entry)
            if at >= 0 and "host LOCAL" in trie[at + len(entry):].split("\n", 1)[0]:
                held.add(name)
        return frozenset(held)

    def role(self, name: str) -> str | None:
        from avoviirscollector.pair.role import read_role

        role = read_role(self.hosts[name].base)
        return None if role is None else role.role

    def sample(self) -> Sample:
        """Holders and roles now (about 20-40 ms: an ``ip`` in each host's namespace)."""
        return Sample(time.monotonic(), self.holders(), {name: self.role(name) for name in self.hosts})

    def close(self) -> None:
        """Kill every process started here and left in the namespaces made here; check that none is left."""
        for watcher in self.watchers.values():
            watcher.stop()
        for ns in reversed(self.made):
            ns.kill_all()
        left = [ns.name for ns in self.made if pids_in(ns.inode)]
        self.made.clear()
        assert not left, f"processes left in the namespaces of {left}"


class PairWorker(DeployedWorker):
    """The deployed worker's loop (``broker_support.DeployedWorker``) in a worker's namespace (its sockets are made
    there), asking the service address ADDRESS and taking ``pace`` seconds over each task (the deployed one: 10)."""

    def __init__(self, lab: PairLab, name: str, task_port: int, update_port: int, pace: float,
                 products: tuple[str, ...] = ("tir",)) -> None:
        super().__init__(task_port, update_port, list(products), hang_after=30.0, host=ADDRESS)
        self.ns = lab.workers[name]
        self.netns = self.ns.path
        self.pace = pace

    def run(self) -> None:
        self.ns.enter_here()
        super().run()

    def take(self, reply: bytes) -> None:
        super().take(reply)
        if reply:
            time.sleep(self.pace)


def drained(status: dict | None) -> bool:
    """The status says no task is queued: ``queue length`` 0 and, when the broker says 0 for a moment only (a hold
    while it answers silent workers, a standby), its real count ``queued`` 0 too."""
    return status is not None and status.get("queue length") == 0 and status.get("queued", 0) == 0


def worker_states(workers: dict[str, PairWorker]) -> dict[str, str]:
    """Each worker's tasks and statuses heard, and what its last status said (w: a task waits; f: a request in
    flight), for progress lines and failure messages."""
    return {name: f"{len(w.received)}/{w.heard}{'w' if w.waiting else ''}{'f' if w.in_flight else ''}"
            for name, w in workers.items()}
