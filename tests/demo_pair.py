"""make demo PAIR=1: two hosts, one collector, to watch a failover in a few minutes without GINA or a second machine.

Needs root (network namespaces), keepalived and ping (``scripts/test-tools`` installs them). ``make demo PAIR=1`` (or
``.venv/bin/python -m tests.demo_pair [--port 29093] [--fail-after 150] [--down 40]``) makes, inside a private
network namespace that has only loopback (``scripts/loopback-netns``: nothing leaves the machine), the pair's lab of
``tests/e2e/pair.py``: hosts a and b on one switch, the service address 192.0.2.10, and

- the GINA double and a TLE server on the switch's own address (192.0.2.1, also the pair's witness): two stations'
  passes, each new granule as the clock makes it due (as in ``make demo``);
- on each host the whole suite (``avoviirscollector supervise``: cron runs mirror_gina every minute against the
  double, so both hosts collect everything) and keepalived beside it (``avoviirscollector pair keepalived``);
- a worker like the deployed viirsprocessor in a namespace of its own, asking the service address only.

The monitor page of whichever host holds the service address is brought out to this host's ``127.0.0.1:--port``
(through a Unix socket: namespaces share the filesystem, not the network): watch the passes come in and be handed
out, and the pair line (this host's role, its link to the other). ``--fail-after`` seconds after the pair is
whole, the active host is deleted (every process killed, its namespace gone: a host that lost its power); the page
that answers from then on is the new active's, which says it serves alone, and the worker goes on being served.
``--down`` seconds later the deleted host comes back with its disk, as the standby, is caught up, and the pair is
whole again. A line every 30 s tells the roles, the links and the worker's tasks. Ctrl-C stops everything.
``--screenshot FILE`` saves the page (headless Chromium, as the worker's namespace sees the service address)
``--after`` seconds after the failover, and stops.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

from tests.demo import REPO, bridge, demo_parser, fresh, launch, screenshot

GINA_PORT, TLE_PORT, MONITOR_PORT = 8080, 8081, 29093


def inside(args: argparse.Namespace) -> int:
    from avoviirscollector.viirs import PRODUCTS
    from tests.e2e.pair import ADDRESS, WITNESS, PairLab, PairWorker, missing_tools
    from tests.e2e.pair_chaos import PORTS, PairSuites
    from tests.support import wait_until

    if os.geteuid() != 0 or missing_tools():
        print(f"demo: needs root and {', '.join(missing_tools()) or 'nothing else'}", flush=True)
        return 2
    base, stopping = fresh(args.dir)
    unix = socket.socket(socket.AF_UNIX)
    with PairLab(base / "lab") as lab:
        suites = PairSuites(lab, base, {"GINA_URL": f"http://{WITNESS}:{GINA_PORT}", "MONITOR_PORT": str(MONITOR_PORT),
                                        "TLE_URL": f"http://{WITNESS}:{TLE_PORT}/weather.txt"})
        worker = PairWorker(lab, "w1", int(PORTS["TASK_PORT"]), int(PORTS["UPDATE_PORT"]), 2.0, tuple(PRODUCTS))
        try:
            began = time.monotonic()
            suites.start()
            wait_until(suites.whole, 60, "the pair whole")
            _start_servers(lab, args, base)  # after the suites: no granule is listed before the gatherers listen
            worker.start()
            unix.bind(str(args.sock))
            unix.listen(64)
            threading.Thread(target=_page_bridge, args=(lab, unix, ADDRESS, stopping), daemon=True).start()
            print(f"demo: the pair is whole ({time.monotonic() - began:.0f} s; {suites.active()} is the active) and "
                  f"the GINA double lists two stations' passes: open http://127.0.0.1:{args.port}/ (the active's "
                  f"page); the active is deleted in {args.fail_after:.0f} s", flush=True)
            _watch(args, lab, suites, worker, stopping)
        finally:
            stopping.set()
            worker.stopping.set()
            worker.join(5)
            suites.stop()
            unix.close()
    return 0


def _start_servers(lab, args: argparse.Namespace, base: Path) -> None:
    """The GINA double and the TLE server on the switch's address (in the lab's ``lan`` namespace)."""
    from tests.e2e.pair import WITNESS

    env = dict(os.environ, PYTHONPATH=str(REPO))
    lab.lan.start(sys.executable, "-m", "tests.gina_double", "--host", WITNESS, "--port", str(GINA_PORT), "--dir",
                  str(base / "gina"), "--granules", str(args.granules), "--every", "2", "--scale", "0.004",
                  "--latency", "12", "--stations", "gilmore,uafgina", "--station-lag", "25", "--one-station-every", "4",
                  env=env)
    lab.lan.start(sys.executable, "-m", "http.server", "--bind", WITNESS, "--directory", str(REPO / "tests" / "data"),
                  str(TLE_PORT), env=env)


def _page_bridge(lab, unix: socket.socket, address: str, stopping: threading.Event) -> None:
    """Join each connection to the Unix socket with one to the service address's monitor, made from worker w2's
    namespace (this thread enters it: a thread's sockets are made in its own network namespace)."""
    lab.workers["w2"].enter_here()
    bridge(unix, lambda: socket.create_connection((address, MONITOR_PORT), timeout=5), stopping)


def _watch(args: argparse.Namespace, lab, suites, worker, stopping: threading.Event) -> None:
    """The failover and the return on their times, a line every 30 s, the screenshot."""
    from tests.e2e.pair import ADDRESS

    ready = time.monotonic()
    failed_at = back_at = None
    deleted = None
    last_note = ready
    while not stopping.wait(1.0):
        now = time.monotonic()
        if failed_at is None and now - ready >= args.fail_after:
            deleted = suites.active()
            handed = len(worker.received)
            print(f"demo: deleting the active host {deleted} (every process killed, its namespace gone); the worker "
                  f"has had {handed} tasks", flush=True)
            suites.delete(deleted)
            failed_at = time.monotonic()
        elif failed_at is not None and back_at is None and now - failed_at >= args.down:
            print(f"demo: {deleted} comes back with its disk", flush=True)
            suites.bring_back(deleted)
            back_at = time.monotonic()
            print(f"demo: {deleted} is back ({back_at - failed_at:.0f} s after it went) as the standby", flush=True)
        if now - last_note >= 30:
            last_note = now
            print(f"demo: {suites.summary()}; the worker has had {len(worker.received)} tasks"
                  f"{' (it waited for ever!)' if worker.hung else ''}", flush=True)
        if args.screenshot and failed_at is not None and now - failed_at >= args.after:
            screenshot(args.screenshot, args.dir.resolve(), url=f"http://{ADDRESS}:{MONITOR_PORT}/",
                       enter=lab.workers["w2"].command())
            return


# -- on this host --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = demo_parser("demo_pair", __doc__.split("\n\n")[0], "demo-pair")
    parser.add_argument("--fail-after", type=float, default=150.0,
                        help="seconds after the pair is whole until the active is deleted (%(default)s)")
    parser.add_argument("--down", type=float, default=40.0, help="seconds the deleted host is away (%(default)s)")
    parser.add_argument("--after", type=float, default=30.0, help="seconds after the failover (%(default)s)")
    args = parser.parse_args(argv)
    if args.inside:
        return inside(args)
    return launch("tests.demo_pair", args, ["--granules", str(args.granules), "--fail-after", str(args.fail_after),
                                             "--down", str(args.down), "--after", str(args.after)],
                  "demo: starting two hosts (Ctrl-C stops); the address follows once the pair is whole")


if __name__ == "__main__":
    raise SystemExit(main())
