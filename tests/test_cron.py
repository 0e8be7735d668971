"""The crontab runner used where supercronic is not installed, and the repo's crontab itself."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from avoviirscollector.cron import CronLine, CrontabError, parse_crontab, shell_line, wait_for_the_suite
from tests.support import settings_for, wait_until

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


def job_env(base: Path) -> dict[str, str]:
    """avo_cron's environment: the console scripts on PATH, its ready marker under ``base``."""
    return {**os.environ, "PATH": f"{BIN}:/usr/bin:/bin", "VIIRS_BASE": str(base)}


def test_the_wait_for_the_suite_gives_up_with_a_warning_or_stops_at_once(tmp_path, caplog):
    stopping = threading.Event()
    with caplog.at_level(logging.INFO, logger="cron"):
        began = time.monotonic()
        wait_for_the_suite(settings_for(tmp_path), 0.5, stopping)  # no supervisord there: never ready
        assert 0.5 <= time.monotonic() - began < 2
        stopping.set()
        wait_for_the_suite(settings_for(tmp_path), 60, stopping)
    warning, stopped = caplog.records[-2:]
    assert warning.levelname == "WARNING" and "not ready after 0.5 s (supervisord does not answer" in warning.message
    assert "starting the jobs anyway" in warning.message
    assert stopped.message == "stopped while waiting for the rest of the suite to be ready: no job started"


def test_runner_runs_due_jobs_without_overlap_and_stops_on_sigterm(tmp_path):
    marks = tmp_path / "marks"
    crontab = tmp_path / "crontab"
    # every second: append a line, then stay busy for 2.5 s, so most starts must be skipped as overlaps
    crontab.write_text(f"* * * * * * * echo run >> {marks}; sleep 2.5\n")
    proc = subprocess.Popen([str(BIN / "avo_cron"), "--runner", "builtin", str(crontab)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=job_env(tmp_path))
    try:
        time.sleep(5.5)  # five and a half seconds of a job due every second
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    runs = marks.read_text().splitlines()
    assert 2 <= len(runs) <= 3, out
    assert "is still going" in out and "starting job" in out


JOB = """\
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
out.write_text("started\\n")
deadline = time.monotonic() + 20
while not stopped and time.monotonic() < deadline:
    time.sleep(0.05)  # the job's work: it goes on until told to stop
with out.open("a") as f:
    f.write("drained\\n" if stopped else "never told to stop\\n")
"""


def test_a_stop_reaches_the_running_job_itself_and_waits_for_its_drain(tmp_path):
    # mirror_gina polls until the next minute: a SIGTERM that stopped only a shell in between would leave it
    # running, holding its queues' locks, after cron is STOPPED
    job, marks, crontab = tmp_path / "job.py", tmp_path / "marks", tmp_path / "crontab"
    job.write_text(JOB)
    crontab.write_text(f"* * * * * * * {sys.executable} {job} {marks}\n")
    proc = subprocess.Popen([str(BIN / "avo_cron"), "--runner", "builtin", str(crontab)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=job_env(tmp_path))
    try:
        wait_until(lambda: marks.exists() and marks.read_text(), 10, "the job started")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert marks.read_text().splitlines() == ["started", "drained"], out  # the job drained before cron exited
    assert "job finished with exit status 0" in out, out


def test_only_a_simple_command_is_execd():
    assert shell_line("mirror_gina") == "exec mirror_gina"
    assert shell_line("cleanup --dry-run /viirs/x.h5") == "exec cleanup --dry-run /viirs/x.h5"
    for compound in ("echo run >> marks; sleep 2.5", "a && b", "a | b", "x=$(date) job", "job &"):
        assert shell_line(compound) == compound
