"""No granule lost under chaos (SPEC section 10): a scripted stream of granules of three satellites and all five
products, in passes, placed accelerated (one satellite-granule's files every 0.65 s, geolocation first, now and
then one file arriving after the gatherers' slot timeout), while a random program is SIGKILLed every few seconds
(supervisord restarts it) and the whole suite is restarted once; four workers drain like the deployed ones, with a
receive timeout and reconnect. At the end every complete granule is in exactly one task handed out.

The long version is ``bench/bench_chaos.py``; the stream, the killer, the workers and the accounting are in
``tests/e2e/chaos.py``.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from tests.e2e import chaos
from tests.e2e.harness import Suite, short_slot_etc

pytestmark = pytest.mark.e2e

SLOT_TIMEOUT = 20


def test_every_complete_granule_in_exactly_one_task_while_programs_are_killed(tmp_path):
    etc = short_slot_etc(tmp_path / "etc", SLOT_TIMEOUT)
    suite = Suite(tmp_path, extra_env={"AVO_ETC": str(etc), "RECOVERY_HOURS": "12"})
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    plan = chaos.passes(now - dt.timedelta(hours=8), per_satellite=2, rng=random.Random(11))
    placements = chaos.schedule(plan, granule_every=0.65, late_share=0.3, late_after=SLOT_TIMEOUT + 2,
                                rng=random.Random(12))
    stream = placements[-1].at
    try:
        suite.start()
        suite.wait_flowing()
        report = chaos.run(suite, placements, workers=4, kill_every=(2.0, 4.0), restart_at=[stream / 2],
                           settle=25.0, drain_timeout=40.0)
    finally:
        suite.stop()
    print(f"\nchaos: {report.figures()}")
    tails = chaos.log_tails(suite, ["task_broker"], lines=40)
    assert not report.errors, f"{report.figures()}\n{tails}"
    assert report.restarts == 1 and len(report.kills) >= 3, report.figures()
    assert report.result.complete, report.figures()
    assert not report.result.lost, f"{report.figures()}\n{tails}"
    assert not report.result.twice, f"{report.figures()}\n{tails}"
    assert not report.result.partial and not report.result.problems, report.figures()
