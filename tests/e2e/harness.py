"""The supervised suite for end-to-end tests and benchmarks: real supervisord with the repo's supervisord.conf.

:class:`Suite` starts ``avoviirscollector supervise`` in a temp ``VIIRS_BASE`` with free ports (the suite's three
and posttroll's nameserver ports), waits until the suite is ready (``avoviirscollector status --wait-ready``: every
program RUNNING and ready, the bus connections made; RUNNING alone says only that a program stayed up for
``startsecs``), and always stops everything. It must run
inside a loopback-only network namespace (``scripts/loopback-netns``, which ``make test`` uses): posttroll
publishers advertise the default route's address otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import zmq
from posttroll.message import Message

from avoviirscollector.config import PACKAGE_ETC, Settings, load_settings
from avoviirscollector.supervisor_client import ERRORS as SUPERVISOR_ERRORS
from avoviirscollector.supervisor_client import socket_path, supervisor_programs
from avoviirscollector.viirs import PRODUCTS, format_name
from tests.support import WaitTimeout, free_ports, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONF = REPO / "supervisord.conf"


def short_slot_etc(folder: Path, timeliness: int = 20) -> Path:
    """A copy of the package's etc/ in ``folder`` with the gatherers' slot timeout (``timeliness``) set to
    ``timeliness`` seconds; give it to the suite as ``AVO_ETC`` (production keeps the package's 600 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in PACKAGE_ETC.iterdir():
        if source.is_file():
            shutil.copy(source, folder / source.name)
    ini = folder / "segment_gatherer.ini"
    text, count = re.subn(r"(?m)^timeliness\s*=\s*\d+\s*$", f"timeliness = {timeliness}", ini.read_text())
    if count == 0:
        raise RuntimeError(f"no timeliness setting in {ini}")
    ini.write_text(text)
    return folder


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is lo."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


class Sub:
    """A plain ZeroMQ SUB on the suite's publish port, like the README's example subscriber."""

    def __init__(self, port: int, prefix: str = "pytroll://", context: zmq.Context | None = None,
                 host: str = "127.0.0.1"):
        self.context = context or zmq.Context.instance()
        self.sock = self.context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
        if ":" in host:  # IPv6
            self.sock.setsockopt(zmq.IPV6, 1)
            host = f"[{host}]"
        self.sock.connect(f"tcp://{host}:{port}")

    def recv_raw(self, timeout: float) -> str | None:
        if self.sock.poll(int(timeout * 1000)):
            return self.sock.recv().decode("utf-8")
        return None

    def recv(self, timeout: float) -> Message | None:
        raw = self.recv_raw(timeout)
        return None if raw is None else Message.decode(raw)

    def close(self) -> None:
        self.sock.close(linger=0)


class Suite:
    """One supervised suite in ``tmp_path/viirs``; see the module docstring."""

    def __init__(self, tmp_path: Path, extra_env: dict[str, str] | None = None, conf: Path | None = None,
                 nice: int = 0, enter: Sequence[str] = (), base: Path | None = None):
        if not only_loopback():
            raise RuntimeError("the suite must run in a loopback-only network namespace: use scripts/loopback-netns")
        self.base = base or tmp_path / "viirs"
        # a command prefix that runs the suite's programs elsewhere: a host of the pair's lab (``Netns.command()``)
        self.enter = list(enter)
        task, update, publish, ns, bcast, addr, dead, monitor = free_ports(8)
        self.env = dict(os.environ)
        self.env.update(
            VIIRS_BASE=str(self.base),
            TASK_PORT=str(task),
            UPDATE_PORT=str(update),
            PUBLISH_PORT=str(publish),
            MONITOR_PORT=str(monitor),
            POSTTROLL_NAMESERVER_PORT=str(ns),
            POSTTROLL_BROADCAST_PORT=str(bcast),
            POSTTROLL_ADDRESS_PUBLISH_PORT=str(addr),
            # cron jobs must never reach out: by default GINA and the TLE source are a closed local port
            GINA_URL=f"http://127.0.0.1:{dead}",
            TLE_URL=f"http://127.0.0.1:{dead}/weather.txt",
        )
        self.env.update(extra_env or {})
        self.settings: Settings = load_settings(self.env)
        self.conf = Path(conf or CONF)  # the repo's supervisord.conf unless a test gives a variant of it
        self.nice = nice  # added to the caller's niceness for the suite (a benchmark runs its clients above it)
        self.output = tmp_path / "supervisord.out"
        self.proc: subprocess.Popen | None = None
        self._probe = 0

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self, timeout: float = 90, wait: bool = True) -> None:
        """supervise started; with ``wait``, returns once the suite is ready (generous: a busy host is slow)."""
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.enter, "nice", "-n", str(self.nice), str(BIN / "avoviirscollector"), "supervise", "-c",
                 str(self.conf)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout)

    def programs(self) -> dict[str, tuple[str, int | None]]:
        """{name: (state, pid)} as supervisord reports them (group prefixes removed), asked through its socket (as
        ``status`` asks: fast on a busy host, where a supervisorctl process takes seconds); {} while it does not
        answer."""
        try:
            found = supervisor_programs(socket_path(self.base), timeout=10)
        except SUPERVISOR_ERRORS:
            return {}
        return {info["name"].split(":")[-1]: (info["state"], info["pid"] or None) for info in found}

    def wait_ready(self, timeout: float = 90, since: dict[str, int | None] | None = None) -> float:
        """Wait until ``avoviirscollector status --wait-ready`` says the suite is ready, and, given ``since``
        ({program: its pid before}), first until each of those programs has another pid (a program just killed is
        still RUNNING with its old pid until supervisord notices). The seconds it took; :class:`WaitTimeout` with
        the reasons when it is not ready in time."""
        began = time.monotonic()
        if since:
            self._wait_restarted(since, timeout)
        left = max(1.0, timeout - (time.monotonic() - began))
        status = subprocess.Popen(
            [*self.enter, str(BIN / "avoviirscollector"), "status", "--wait-ready", "--timeout", f"{left:.1f}"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while True:
            try:
                out, _ = status.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if not self._supervisord_alive(raising=False):
                    status.kill()
                    status.communicate()
                    self._supervisord_alive()
        if status.returncode != 0:
            raise WaitTimeout(f"the suite ready within {timeout:g} s: {out.strip()}")
        return time.monotonic() - began

    def _wait_restarted(self, since: dict[str, int | None], timeout: float) -> None:
        def restarted() -> dict | None:
            self._supervisord_alive()
            states = self.programs()
            new = all(states.get(name, (None, pid))[1] not in (pid, None) for name, pid in since.items())
            return states if new else None

        wait_until(restarted, timeout, lambda: f"new pids for {since} (now {self.programs()})", every=0.2)

    def _supervisord_alive(self, raising: bool = True) -> bool:
        """False (or RuntimeError with its output's tail) when the supervisord this suite started has exited."""
        if self.proc is None or self.proc.poll() is None:
            return True
        if raising:
            raise RuntimeError(f"supervisord exited ({self.proc.returncode}): {self.output.read_text()[-2000:]}")
        return False

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def restart(self, timeout: float = 90) -> None:
        """Stop the whole suite with SIGTERM to supervisord (as Ctrl-C of ``make run``), start it on the same base."""
        self.stop(timeout)
        self.start(timeout)

    def __enter__(self) -> Suite:
        """Started (stopped again, everything it started, when the start fails)."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------------------------
    def supervisorctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [*self.enter, str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            env=self.env, capture_output=True, text=True, timeout=30,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"supervisorctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def pid(self, program: str) -> int:
        state, pid = self.programs()[program]
        if pid is None:
            raise RuntimeError(f"{program} is {state}")
        return pid

    def place(self, name: str, data: bytes = b"not hdf5, the daemons only look at names") -> Path:
        """Write ``name`` into tmp/ and rename it into sdr/, as mirror_gina does."""
        tmp = self.settings.tmp_dir / name
        tmp.write_bytes(data)
        final = self.settings.sdr_dir / name
        os.replace(tmp, final)
        return final

    def subscriber(self, prefix: str = "pytroll://") -> Sub:
        return Sub(self.settings.publish_port, prefix)

    def wait_flowing(self, sub: Sub | None = None, timeout: float = 60) -> None:
        """Place probe granules until every product's `dataset` has come out on the publish port.

        PUB/SUB connections are made in the background after each program starts, so a file placed too early is
        missed by a gatherer that is not connected yet. Once each gatherer has published a granule assembled from
        trollstalker's messages, and that message reached the public port, the whole chain is connected. Probe
        granules use orbits 99001 and up and a day of their own (2001-01-01); messages received meanwhile are
        discarded. Without ``sub``, a subscriber of its own is used and closed.
        """
        if sub is None:
            own = self.subscriber()
            try:
                return self.wait_flowing(own, timeout)
            finally:
                own.close()
        missing = set(PRODUCTS)

        def probed() -> bool:
            """One probe granule of the products still missing, and 3 s to hear their ``dataset`` messages."""
            self._probe += 1
            start = dt.datetime(2001, 1, 1) + dt.timedelta(minutes=2 * self._probe)
            segments = sorted({segment for product in missing for segment in PRODUCTS[product]})
            for segment in segments:
                self.place(format_name(segment, "npp", start, start + dt.timedelta(seconds=85),
                                       99000 + self._probe, start))
            until = time.monotonic() + 3
            while missing and time.monotonic() < until:
                raw = sub.recv_raw(0.2)
                if raw is not None and " dataset " in raw[:80]:
                    missing.discard(raw.split(" ", 1)[0].rsplit("/", 1)[-1])
            return not missing

        wait_until(probed, timeout, lambda: f"a dataset message through the suite for {sorted(missing)}", every=0)
