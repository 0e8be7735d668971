"""make demo: the whole suite against the GINA double, to watch it work in a minute without GINA.

``make demo`` (or ``.venv/bin/python -m tests.demo [--port 29093] [--dir var/demo]``) starts, inside a private
network namespace that has only loopback (``scripts/loopback-netns``: nothing leaves the machine, as in the tests):

- the GINA double (tests/gina_double.py) at two receiving stations, gilmore and uafgina: each satellite's latest
  granules at start, then each new one as the clock makes it due (a granule of each satellite every 85.4 s), each
  listed 12 minutes after its end (made 10 minutes after it, as GINA's own delay); most granules at both stations
  (uafgina's copy listed
  ``--station-lag`` seconds after gilmore's), some at one station only; small real HDF5 files;
- a TLE server for the hourly refresh (the test set, ``tests/data/weather.txt``);
- the suite itself: ``avoviirscollector supervise -c supervisord.conf``, every program, cron running mirror_gina
  every minute (``VIIRS_BASE`` in ``--dir``, default ``./var/demo``, emptied at start);
- a worker like the deployed viirsprocessor, taking every product's tasks.

The suite is started first and the demo waits until it is ready (``avoviirscollector status --wait-ready``: every
program ready, the bus connections made), and only then starts the GINA double, so that no granule is listed, and
none placed, before the gatherers and task_broker listen. The monitor serves on ``MONITOR_PORT`` inside the
namespace; the demo brings it out to this host's ``127.0.0.1:--port`` through a Unix socket (namespaces share the
filesystem, not the network) and prints the address once the suite is ready: open it in a browser, watch the passes
come in, complete, be tasked and handed out, with their latency per station. Ctrl-C stops everything.
``--screenshot FILE --after S`` saves the page as headless Chromium shows it after S seconds and stops (the README's
picture, ``docs/monitor.png``, is made so).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# -- the bridge: TCP on this host <-> a Unix socket <-> TCP inside the namespace -----------------------------------
def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (a, b):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _join(a: socket.socket, b: socket.socket) -> None:
    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
    threading.Thread(target=_pipe, args=(b, a), daemon=True).start()


def bridge(listener: socket.socket, connect, stopping: threading.Event) -> None:
    """Accept on ``listener`` until ``stopping``; join each connection with a new one from ``connect()``."""
    listener.settimeout(0.5)
    while not stopping.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        try:
            _join(client, connect())
        except OSError:
            client.close()


# -- inside the namespace ----------------------------------------------------------------------------------------
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, fmt: str, *args) -> None:  # the TLE refresh's requests are not the demo's news
        return



def fresh(folder: Path) -> tuple[Path, threading.Event]:
    """The demo's folder emptied, and an event SIGTERM and SIGINT set (inside the namespace)."""
    base = folder.resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    return base, stopping


def inside(args: argparse.Namespace) -> int:
    from avoviirscollector.viirs import PRODUCTS
    from tests.broker_support import DeployedWorker
    from tests.e2e.harness import CONF, Suite
    from tests.support import free_port

    base, stopping = fresh(args.dir)
    gina_port, tle_port = free_port(), free_port()
    tles = ThreadingHTTPServer(("127.0.0.1", tle_port), partial(_Quiet, directory=str(REPO / "tests" / "data")))
    threading.Thread(target=tles.serve_forever, daemon=True).start()
    suite = Suite(base, extra_env={
        "GINA_URL": f"http://127.0.0.1:{gina_port}", "TLE_URL": f"http://127.0.0.1:{tle_port}/weather.txt",
        "MONITOR_PORT": "29093", "TASK_PORT": "19091", "UPDATE_PORT": "19191", "PUBLISH_PORT": "29092"})
    worker = double = None
    unix = socket.socket(socket.AF_UNIX)
    try:
        began = time.monotonic()
        suite.start(timeout=90)  # ready, not only RUNNING: the double's feed starts once the gatherers listen
        double = _start_double(args, base, gina_port)
        worker = DeployedWorker(19091, 19191, list(PRODUCTS), hang_after=3600)
        worker.start()
        unix.bind(str(args.sock))
        unix.listen(64)
        threading.Thread(target=bridge, args=(unix, lambda: socket.create_connection(("127.0.0.1", 29093)),
                                               stopping), daemon=True).start()
        print(f"demo: the suite is ready ({time.monotonic() - began:.0f} s; {CONF.name} in {suite.base}) and the "
              f"GINA double lists two stations' passes: open http://127.0.0.1:{args.port}/", flush=True)
        began = time.monotonic()
        while not stopping.wait(1.0):
            if args.screenshot and time.monotonic() - began >= args.after:
                screenshot(args.screenshot, base)
                break
    finally:
        stopping.set()
        if worker is not None:
            worker.stopping.set()
            worker.join(5)
        suite.stop()
        if double is not None:
            double.terminate()
            double.wait(10)
        tles.shutdown()
        unix.close()
    return 0


def _start_double(args: argparse.Namespace, base: Path, port: int) -> subprocess.Popen:
    """The GINA double (two stations, a granule of each satellite every 85 s), serving once this returns."""
    from tests.support import wait_for_port

    double = subprocess.Popen(
        [sys.executable, "-m", "tests.gina_double", "--port", str(port), "--dir", str(base / "gina"),
         "--granules", str(args.granules), "--every", "2", "--scale", "0.004", "--latency", "12",
         "--stations", "gilmore,uafgina", "--station-lag", str(args.station_lag), "--one-station-every", "4"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 30)
    return double


def screenshot(path: Path, scratch: Path, url: str = "http://127.0.0.1:29093/", enter: list[str] | None = None) -> None:
    """The page at ``url`` as headless Chromium shows it, saved in ``path`` (``enter``: a command prefix that runs the
    browser elsewhere, e.g. ``nsenter --net=...``)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("demo: no chromium here (apt-get install chromium): no screenshot", flush=True)
        return
    with open(scratch / "chromium.log", "wb") as out:  # not pipes: chromium's helpers may outlive it holding them
        browser_run = subprocess.Popen(
            [*(enter or []), browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run",
             f"--user-data-dir={scratch / 'chromium'}", "--hide-scrollbars", f"--screenshot={path.resolve()}",
             "--window-size=1140,1500", url],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            browser_run.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(browser_run.pid, signal.SIGKILL)
            browser_run.wait()
    print(f"demo: screenshot {path}" if path.exists() else f"demo: no screenshot (see {scratch / 'chromium.log'})",
          flush=True)


# -- on this host --------------------------------------------------------------------------------------------------
def demo_parser(prog: str, description: str, folder: str) -> argparse.ArgumentParser:
    """The options both demos take (``--dir`` defaults to ``var/<folder>``; ``--inside`` and ``--sock`` are the
    namespace side's)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--port", type=int, default=29093, help="this host's port for the monitor (%(default)s)")
    parser.add_argument("--dir", type=Path, default=REPO / "var" / folder, help="the demo's files (%(default)s)")
    parser.add_argument("--granules", type=int, default=8, help="granules per satellite at start (%(default)s)")
    parser.add_argument("--screenshot", type=Path, help="save the page after --after seconds, then stop")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sock", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser("demo", __doc__.split("\n\n")[0], "demo")
    parser.add_argument("--station-lag", type=float, default=25.0,
                        help="uafgina lists its copies S seconds after gilmore (%(default)s)")
    parser.add_argument("--after", type=float, default=240.0, help="seconds before the screenshot (%(default)s)")
    args = parser.parse_args(argv)
    if args.inside:
        return inside(args)
    extra = ["--granules", str(args.granules), "--station-lag", str(args.station_lag), "--after", str(args.after)]
    return launch("tests.demo", args, extra, "demo: starting the suite (Ctrl-C stops); the address follows once it "
                                             "is ready")


def launch(module: str, args: argparse.Namespace, extra: list[str], hello: str) -> int:
    """Run ``module --inside`` in a loopback-only namespace and bring its page out to ``127.0.0.1:args.port``
    through a Unix socket beside ``args.dir``; Ctrl-C stops it (its exit status)."""
    args.dir.mkdir(parents=True, exist_ok=True)
    sock = args.dir.resolve().parent / f".{args.dir.name}.monitor.sock"
    sock.unlink(missing_ok=True)
    listener = socket.create_server(("127.0.0.1", args.port))
    command = [str(REPO / "scripts" / "loopback-netns"), sys.executable, "-m", module, "--inside",
               "--sock", str(sock), "--dir", str(args.dir), "--port", str(args.port), *extra]
    if args.screenshot:
        command += ["--screenshot", str(args.screenshot.resolve())]
    child = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    stopping = threading.Event()
    threading.Thread(target=bridge, args=(listener, lambda: _unix(sock), stopping), daemon=True).start()
    print(hello, flush=True)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        return child.wait(60)
    finally:
        stopping.set()
        listener.close()
        sock.unlink(missing_ok=True)


def _unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    return sock


if __name__ == "__main__":
    raise SystemExit(main())
