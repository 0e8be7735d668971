"""The pair's chaos run: the issue's six minutes, the long version of ``tests/e2e/test_pair_chaos.py``.

The whole suite on both hosts of the pair's lab (tests/e2e/pair.py: network namespaces on a bridge, real keepalived),
a stream of granules of three satellites and all five products placed into both hosts over ``--seconds``, a random
program of a random host SIGKILLed every ``--kill-every`` seconds (about), and ``--host-faults`` times the active
host deleted (every process killed, its namespace gone), away ``--down`` seconds and brought back with its disk;
two workers written like the deployed ones ask the service address only (``tests/e2e/pair_chaos.py``). Prints the
granules placed, tasks handed out, lost, twice, repeated in doubt, the brokers' own counts (handed out twice, in
doubt), the kills and the host faults with when each host was back and the pair whole. Goals: 0 lost, 0 twice
(hand-outs in doubt apart), no worker waiting for ever, no granule counted as handed out by both hosts.

Needs root, keepalived and ping. Run inside a loopback-only network namespace:
``scripts/loopback-netns .venv/bin/python bench/bench_pair_chaos.py [--seconds S] [--kill-every S] [--host-faults N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import chaos, pair_chaos  # noqa: E402
from tests.e2e.harness import short_slot_etc  # noqa: E402
from tests.e2e.pair import PairLab, missing_tools  # noqa: E402

SLOT_TIMEOUT = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=360, help="run time of the stream; default %(default)s")
    parser.add_argument("--kill-every", type=float, default=30, help="mean seconds between kills; default %(default)s")
    parser.add_argument("--host-faults", type=int, default=2, help="active hosts deleted; default %(default)s")
    parser.add_argument("--down", type=float, default=20, help="seconds a deleted host is away; default %(default)s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    missing = missing_tools()
    if os.geteuid() != 0 or missing:
        print(f"needs root and {', '.join(missing) or 'nothing else'}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    per_satellite = max(2, round(args.seconds / 60))  # about a pass of each satellite a minute
    plan = chaos.passes(now - dt.timedelta(hours=10), per_satellite, rng=rng)
    count = sum(n for *_, n in plan)
    placements = chaos.schedule(plan, granule_every=args.seconds / count, late_share=0.05,
                                late_after=SLOT_TIMEOUT + 2, rng=rng)
    stream = placements[-1].at
    delete_at = [stream * (i + 1) / (args.host_faults + 1) for i in range(args.host_faults)]
    kill_every = (args.kill_every * 0.5, args.kill_every * 1.5)
    print(f"{len(plan)} passes, {count} satellite-granules ({len(placements)} files) over {stream:.0f} s; a kill "
          f"every ~{args.kill_every:.0f} s, the active host deleted at {[round(t) for t in delete_at]} s for "
          f"{args.down:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp, PairLab(Path(tmp) / "lab") as lab:
        etc = short_slot_etc(Path(tmp) / "etc", SLOT_TIMEOUT)
        report = pair_chaos.run(lab, Path(tmp), placements, {"AVO_ETC": str(etc), "RECOVERY_HOURS": "12"},
                                kill_every=kill_every, delete_at=delete_at, down=args.down, seed=args.seed,
                                progress=lambda line: print(line, flush=True))
    print(report.figures())
    ok = (report.result.ok and not report.errors and not report.hung
          and set(report.twice_counted.values()) == {0})
    print(f"goal: 0 lost, 0 twice, no worker waiting for ever, none counted twice by the brokers: "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
