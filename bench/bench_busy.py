"""The suite on a busy host: a soak of the real suite with two busy loops beside it, against the same run on a quiet
machine.

In the field the collector shares its cores with processing (satpy resampling is CPU-bound for minutes), backups
and the odd runaway job. Each run: the real suite (supervisord, cron running mirror_gina every minute with
``MIRROR_POLL_SECONDS`` rounds, the GINA double at two stations, small real HDF5 files, no TLEs) and a worker like
the deployed one taking every product's tasks, while ``--granules`` new Suomi-NPP granules are listed at random
moments 8 to 25 s apart (bench_stations' listing model). Measured: the seconds from a granule's first listing to its
task handed out, per product granule (p50, p99, max), and the accounting of every complete product granule in
``sdr/``: handed out in exactly one task, none twice, none lost, and how many the broker recovered (a catch-up or
a slow start that the live path carries must count none).

The busy run: two ``sh -c 'while :; do :; done'`` loops (one per core of this 2-core machine) at the suite's own
priority, the whole time; the GINA double and the worker (this process's threads) at a higher priority (nice -5,
when allowed), since in the field they are other hosts. Goal: busy p50 within 2x of quiet; nothing lost or twice.

Run inside a loopback-only network namespace, on an otherwise quiet machine:
``scripts/loopback-netns .venv/bin/python bench/bench_busy.py [--granules N] [--loops N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_stations import handed_out_after, list_new_granules  # noqa: E402

from avoviirscollector.viirs import PRODUCTS  # noqa: E402
from tests.broker_support import DeployedWorker  # noqa: E402
from tests.e2e.chaos import account, complete_on_disk  # noqa: E402
from tests.e2e.harness import Suite  # noqa: E402
from tests.gina_double import GinaDouble  # noqa: E402
from tests.support import percentile  # noqa: E402

CLIENT_NICE = -5  # the double and the worker: other hosts in the field


@contextlib.contextmanager
def busy_loops(count: int, nice: int):
    """``count`` shell busy loops at niceness ``nice`` (absolute), killed on exit."""
    loops = [subprocess.Popen(["nice", "-n", str(nice - os.nice(0)), "sh", "-c", "while :; do :; done"])
             for _ in range(count)]
    try:
        yield loops
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def soak(tmp: Path, granules: int, rng: random.Random, suite_nice: int) -> dict:
    """One run (see the module docstring); its figures."""
    with GinaDouble(tmp / "gina") as double:
        suite = Suite(tmp, extra_env={"GINA_URL": double.url, "MIRROR_POLL_SECONDS": "15"}, nice=suite_nice)
        try:
            began = time.monotonic()
            suite.start(timeout=120)
            suite.wait_flowing(timeout=120)
            ready = time.monotonic() - began
            worker = DeployedWorker(suite.settings.task_port, suite.settings.update_port, list(PRODUCTS),
                                    hang_after=120)
            worker.start()
            time.sleep(rng.uniform(0, 60))  # start anywhere in a cron minute
            listed = list_new_granules(double, granules, rng)
            waits = handed_out_after(worker, listed, time.monotonic() + 180)
            time.sleep(15)  # a further reconciliation period: nothing may come twice
            worker.stopping.set()
            worker.join(5)
            recovered = (suite.base / "log" / "task_broker.log").read_text().count("recovered granule")
        finally:
            suite.stop()
        due = {key for key in complete_on_disk(suite.settings.sdr_dir)}
        result = account(due, list(worker.received))
    return {"waits": sorted(waits.values()), "listed": len(listed), "ready": ready, "result": result,
            "recovered": recovered, "hung": worker.hung}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--granules", type=int, default=20, help="granules listed per run (%(default)s)")
    parser.add_argument("--loops", type=int, default=2, help="busy loops in the busy run (%(default)s)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    try:
        os.nice(CLIENT_NICE - os.nice(0))  # before any thread: the double's and the worker's threads inherit it
    except PermissionError:
        print("(not allowed to raise this process's priority: the double and worker share the suite's)")
    suite_nice = -os.nice(0)  # the suite at niceness 0, beside the busy loops
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-busy-quiet-") as tmp:
        rows.append(("quiet", soak(Path(tmp), args.granules, rng, suite_nice)))
    with tempfile.TemporaryDirectory(prefix="bench-busy-loaded-") as tmp, busy_loops(args.loops, 0):
        rows.append((f"{args.loops} busy loops", soak(Path(tmp), args.granules, rng, suite_nice)))
    report(rows)
    quiet, busy = rows[0][1], rows[1][1]
    ratio = percentile(busy["waits"], 50) / percentile(quiet["waits"], 50)
    goals = [("busy p50 <= 2x quiet", ratio <= 2.0),
             ("nothing lost or twice", all(r["result"].ok and not r["result"].twice for _, r in rows)),
             ("no worker waited for ever", not any(r["hung"] for _, r in rows))]
    print(f"\nlisting -> task p50 busy/quiet: {ratio:.2f}x")
    print("goals: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in goals))
    return 0


def report(rows: list[tuple[str, dict]]) -> None:
    print(f"\n{'run':16s} {'ready s':>8s} {'n':>4s} {'p50 s':>7s} {'p99 s':>7s} {'max s':>7s} {'complete':>9s} "
          f"{'lost':>5s} {'twice':>6s} {'recovered':>10s}")
    for label, r in rows:
        waits, result = r["waits"], r["result"]
        print(f"{label:16s} {r['ready']:8.1f} {len(waits):4d} {percentile(waits, 50) or 0:7.1f} "
              f"{percentile(waits, 99) or 0:7.1f} {max(waits or [0]):7.1f} {len(result.complete):9d} "
              f"{len(result.lost):5d} {len(result.twice):6d} {r['recovered']:10d}")


if __name__ == "__main__":
    raise SystemExit(main())
