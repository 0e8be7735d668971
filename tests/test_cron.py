"""The crontab runner used where supercronic is not installed, and the repo's crontab itself."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avoviirscollector.cron import CronLine, CrontabError, parse_crontab

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
T = dt.datetime(2026, 11, 23, 10, 0, 0)  # a Monday


@pytest.mark.parametrize("line,due,not_due", [
    ("* * * * * job", [T, T.replace(minute=59)], [T.replace(second=1)]),
    ("*/5 * * * * job", [T.replace(minute=55)], [T.replace(minute=56)]),
    ("17 * * * * job", [T.replace(minute=17)], [T.replace(minute=18)]),
    ("@hourly job", [T], [T.replace(minute=1)]),
    ("@daily job", [T.replace(hour=0)], [T]),
    ("0 3 * * 1-5 job", [T.replace(hour=3)], [T.replace(hour=3, day=22)]),
    ("0 3 * * 7 job", [T.replace(hour=3, day=22)], [T.replace(hour=3)]),
    ("0 0 1 * 1 job", [T.replace(hour=0, day=1), T.replace(hour=0)], [T.replace(hour=0, day=24)]),
    ("*/2 * * * * * * job", [T, T.replace(second=58)], [T.replace(second=1)]),
    ("10,20-22 * * * * job", [T.replace(minute=21)], [T.replace(minute=23)]),
])
def test_schedule(line, due, not_due):
    parsed = CronLine.parse(line)
    assert parsed.command == "job"
    assert all(parsed.is_due(when) for when in due)
    assert not any(parsed.is_due(when) for when in not_due)


def test_command_keeps_its_words():
    assert CronLine.parse("@hourly tle_refresh --quiet  x").command == "tle_refresh --quiet  x"
    assert CronLine.parse("0 2 * * * cleanup --dry-run").command == "cleanup --dry-run"


@pytest.mark.parametrize("text", ["* * * * *", "61 * * * * job", "* * * 13 * job", "a b c d e job",
                                  "FOO=bar", "*/0 * * * * job"])
def test_bad_lines_are_refused_with_their_number(text):
    with pytest.raises(CrontabError, match="line 2"):
        parse_crontab("# comment\n" + text + "\n")


def test_repo_crontab_parses():
    result = subprocess.run([str(BIN / "avo_cron"), "--check", str(REPO / "crontab")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout


def test_runner_runs_due_jobs_without_overlap_and_stops_on_sigterm(tmp_path):
    marks = tmp_path / "marks"
    crontab = tmp_path / "crontab"
    # every second: append a line, then stay busy for 2.5 s, so most starts must be skipped as overlaps
    crontab.write_text(f"* * * * * * * echo run >> {marks}; sleep 2.5\n")
    proc = subprocess.Popen([str(BIN / "avo_cron"), "--runner", "builtin", str(crontab)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PATH": f"{BIN}:/usr/bin:/bin"})
    try:
        time.sleep(5.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    runs = marks.read_text().splitlines()
    assert 2 <= len(runs) <= 3, out
    assert "is still going" in out and "starting job" in out
