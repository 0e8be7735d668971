"""The download journal as mirror_gina's memory (issue 9, item 3): a file placed once is not fetched again after
cleanup removed it, while GINA still lists it; the journal keeps records for the longer of the listing window and
RECOVERY_HOURS, and drops older ones."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

from avoviirscollector.mirror.place import Journal
from avoviirscollector.ondisk.state import read_placed
from avoviirscollector.viirs import format_name
from tests.mirror_support import add_pass
from tests.test_mirror_cli import MIRROR, _env


def _run(args, env):
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_cleanup_then_next_run_fetches_nothing_again(tmp_path, double):
    served = add_pass(double, granules=1, segments=("GITCO", "SVI05", "SVI04"))
    base = tmp_path / "viirs"
    env = _env(base, double, VIIRS_RETENTION=1, GINA_BACKFILL_DAYS=2)
    status, out = _run(MIRROR + ["--queue", "snpp-imagery"], env)
    assert status == 0, out
    assert sorted(os.listdir(base / "sdr")) == sorted(s.name for s in served)
    old = time.time() - 2 * 86400  # retention (1 day) shorter than the backfill window (2 days)
    for name in os.listdir(base / "sdr"):
        os.utime(base / "sdr" / name, (old, old))
    status, out = _run([sys.executable, "-m", "avoviirscollector.cleanup"], env)
    assert status == 0, out
    assert os.listdir(base / "sdr") == []

    requests = len(double.file_requests)
    status, out = _run(MIRROR + ["--queue", "snpp-imagery"], env)
    assert status == 0, out
    assert len(double.file_requests) == requests, out
    assert "nothing new: 3 wanted files listed for 1 queue(s), all placed before" in out
    assert os.listdir(base / "sdr") == []


def _record(name, placed):
    return {"time": placed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "name": name, "bytes": 1, "md5": "0" * 32,
            "seconds": 1.0, "connections": 1}


def test_journal_keeps_the_longer_of_listing_window_and_recovery_hours_and_drops_the_rest(tmp_path):
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    naive = now.replace(tzinfo=None)

    def name(start):
        return format_name("SVM16", "npp", start, start + dt.timedelta(seconds=85), 70000, start)

    ages = {"fresh": dt.timedelta(hours=1), "two_days": dt.timedelta(days=2, hours=20),
            "four_days": dt.timedelta(days=4), "late_copy": dt.timedelta(days=5)}
    names = {label: name(naive - age) for label, age in ages.items()}
    journal = Journal(tmp_path)
    lines = [json.dumps(_record(names[label], naive - ages[label])) for label in ("four_days", "two_days", "fresh")]
    # an old granule placed recently (a late backfill): remembered from its placement
    lines.append(json.dumps(_record(names["late_copy"], naive - dt.timedelta(hours=2))))
    lines.append('{"torn":')
    journal.path.write_text("\n".join(lines) + "\n")

    keep = dt.timedelta(days=3)  # backfill 2 days + 1
    remembered = journal.remembered(keep, now)
    assert remembered == {names["fresh"], names["two_days"], names["late_copy"]}
    assert sorted(placed.name for _, placed in read_placed(journal.path)) == sorted(remembered)  # compacted
    assert journal.remembered(dt.timedelta(hours=168), now) == remembered
    # RECOVERY_HOURS longer than the listing window: it decides
    journal.path.write_text(json.dumps(_record(names["four_days"], naive - ages["four_days"])) + "\n")
    assert journal.remembered(dt.timedelta(hours=120), now) == {names["four_days"]}
