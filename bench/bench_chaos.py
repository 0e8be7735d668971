"""No granule lost over a simulated day, under chaos: the long version of ``tests/e2e/test_chaos.py``.

Starts the real suite (supervisord with the repo's supervisord.conf, gatherers' slot timeout 20 s) in a temp
VIIRS_BASE and places a day of passes over Alaska accelerated into ``--seconds``: three satellites (npp, j01, j02)
a quarter orbit apart, about 14 passes each a day, each pass 4-8 consecutive granules 85.4 s apart, every product's
files (geolocation first), now and then one file arriving after the slot timeout. Meanwhile a random program is
SIGKILLed every ``--kill-every`` seconds (supervisord restarts it) and the whole suite is restarted ``--restarts``
times; four workers drain like the deployed ones (with a receive timeout and reconnect). Then the queue drains, one
more reconciliation period passes, and every complete granule is looked for in the tasks handed out.

Prints granules placed, tasks handed out, lost, duplicated, in doubt, requests unanswered, the broker's time to
recovery p50/p99 (its ``recovered granule`` lines), and the RSS of every supervised program (with its children)
at the start and at the end. Goals: 0 lost, 0 duplicated (hand-outs in doubt apart), no program's RSS more than
10% higher at the end (a program restarted meanwhile is marked: its end figure is of a fresh process).

Run inside a loopback-only network namespace:
``scripts/loopback-netns .venv/bin/python bench/bench_chaos.py [--seconds S] [--kill-every S] [--restarts N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import chaos  # noqa: E402
from tests.e2e.harness import Suite, short_slot_etc  # noqa: E402

SLOT_TIMEOUT = 20
PASSES_PER_DAY = 14


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="run time of the stream; default %(default)s")
    parser.add_argument("--kill-every", type=float, default=15,
                        help="mean seconds between kills (0: none); default %(default)s")
    parser.add_argument("--restarts", type=int, default=1, help="whole-suite restarts; default %(default)s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    plan = chaos.passes(now - dt.timedelta(hours=26), PASSES_PER_DAY, rng=rng)
    count = sum(n for *_, n in plan)
    placements = chaos.schedule(plan, granule_every=args.seconds / count, late_share=0.05,
                                late_after=SLOT_TIMEOUT + 10, rng=rng)
    stream = placements[-1].at
    kill_every = (args.kill_every * 0.5, args.kill_every * 1.5) if args.kill_every > 0 else None
    restart_at = [stream * (i + 1) / (args.restarts + 1) for i in range(args.restarts)]
    print(f"{len(plan)} passes, {count} satellite-granules ({len(placements)} files) over {stream:.0f} s; "
          f"kill every ~{args.kill_every:.0f} s, {args.restarts} whole-suite restarts", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        etc = short_slot_etc(Path(tmp) / "etc", SLOT_TIMEOUT)
        suite = Suite(Path(tmp), extra_env={"AVO_ETC": str(etc), "RECOVERY_HOURS": "30"})
        try:
            suite.start()
            suite.wait_flowing()
            time.sleep(5)
            rss_start = chaos.rss_by_program(suite)
            report = chaos.run(suite, placements, workers=4, kill_every=kill_every, restart_at=restart_at,
                               settle=25.0, drain_timeout=120.0, rng_seed=args.seed,
                               progress=lambda line: print(line, flush=True))
            rss_end = chaos.rss_by_program(suite)
        finally:
            suite.stop()
    print(report.figures())
    print(f"{'program':24} {'RSS start':>10} {'RSS end':>10} {'growth':>8}")
    worst = 0.0
    for name in sorted(set(rss_start) | set(rss_end)):
        (pid0, kib0), (pid1, kib1) = rss_start.get(name, (None, 0)), rss_end.get(name, (None, 0))
        growth = (kib1 - kib0) / kib0 * 100 if kib0 else float("nan")
        worst = max(worst, growth) if kib0 else worst
        note = "" if pid0 == pid1 else "  (restarted meanwhile)"
        print(f"{name:24} {kib0 / 1024:8.1f} MB {kib1 / 1024:8.1f} MB {growth:+7.1f}%{note}")
    ok = report.result.ok and not report.errors
    print(f"goal: 0 lost, 0 duplicated, RSS growth <= 10%: {'met' if ok and worst <= 10 else 'NOT met'} "
          f"(largest growth {worst:+.1f}%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
