"""Health of the mirror (issue 9, item 5): mirror_gina records each run in state/mirror_gina.health.json and
avo_status (the HEALTHCHECK) says unhealthy, with the reason in one line, when no run succeeded for
MIRROR_STALE_MINUTES, when files GINA listed an hour ago are neither placed nor given up on, or when a satellite of
the queues had nothing new listed for SILENCE_HOURS."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys

from avoviirscollector.mirror.health import mirror_problems
from avoviirscollector.viirs import format_name
from tests.mirror_support import START, add_pass, run_mirror, settings_for
from tests.test_mirror_cli import _env

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_problems_are_one_line_per_reason():
    fresh = {"last_success": _iso(NOW - dt.timedelta(minutes=3)),
             "satellites": {"snpp": {"new_listed": _iso(NOW - dt.timedelta(hours=1))}},
             "pending": {"A.h5": _iso(NOW - dt.timedelta(minutes=30))}}
    assert mirror_problems(fresh, NOW, 15, 3) == []
    stale = {**fresh, "last_success": _iso(NOW - dt.timedelta(minutes=40)), "last_run": _iso(NOW),
             "last_run_summary": "placed 0, failed 3, waiting 3"}
    (line,) = mirror_problems(stale, NOW, 15, 3)
    assert line.startswith("mirror_gina: no run has succeeded for 40 min (limit MIRROR_STALE_MINUTES=15)")
    assert "failed 3" in line
    assert mirror_problems({}, NOW, 15, 3, running_since=NOW - dt.timedelta(minutes=5)) == []
    (line,) = mirror_problems({}, NOW, 15, 3, running_since=NOW - dt.timedelta(minutes=20))
    assert "no run has succeeded since the suite started 20 min ago" in line
    overdue = {**fresh, "pending": {"A.h5": _iso(NOW - dt.timedelta(minutes=61)), "B.h5": _iso(NOW)}}
    (line,) = mirror_problems(overdue, NOW, 15, 3)
    assert "1 file(s) listed by GINA for over an hour are neither placed nor given up on (oldest A.h5" in line
    quiet = {**fresh, "satellites": {"snpp": {"new_listed": _iso(NOW - dt.timedelta(hours=4))},
                                     "noaa20": {"new_listed": _iso(NOW)}}}
    (line,) = mirror_problems(quiet, NOW, 15, 3)
    assert line.startswith("mirror_gina: nothing new listed for snpp for 4.0 h (limit SILENCE_HOURS=3)")


def _status(base, double, **env):
    proc = subprocess.run([sys.executable, "-m", "avoviirscollector.status", "--quick", "--json", "--wait", "0.1"],
                          env=_env(base, double, **env), capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def _shift(path, **back):
    """Move the health record's times back, as if that much time had passed."""
    data = json.loads(path.read_text())
    for key, delta in back.items():
        if key == "pending":
            data["pending"] = {n: _iso(dt.datetime.now(dt.UTC) - delta) for n in data["pending"]}
        elif key == "satellites":
            for entry in data["satellites"].values():
                entry["new_listed"] = _iso(dt.datetime.now(dt.UTC) - delta)
        else:
            data[key] = _iso(dt.datetime.now(dt.UTC) - delta)
    path.write_text(json.dumps(data))


def test_runs_are_recorded_and_status_judges_them(tmp_path, double):
    add_pass(double, granules=1, segments=("GITCO", "SVI05"))
    settings = settings_for(tmp_path / "viirs", double)
    health = settings.state_dir / "mirror_gina.health.json"
    status, _ = run_mirror(settings, ["snpp-imagery"])
    assert status == 0
    data = json.loads(health.read_text())
    assert data["last_success"] == data["last_run"] and data["pending"] == {}
    assert data["satellites"]["snpp"]["newest"] == _iso(START)
    code, report = _status(settings.viirs_base, double)
    assert report["mirror_problems"] == []

    # GINA fails every minute: the runs are recorded, but none succeeds
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    dead = settings_for(tmp_path / "viirs", double, GINA_URL=f"http://127.0.0.1:{closed}")
    assert run_mirror(dead, ["snpp-imagery"])[0] == 1
    data = json.loads(health.read_text())
    assert data["last_run"] >= data["last_success"] and "a listing failed" in data["last_run_summary"]
    _shift(health, last_success=dt.timedelta(minutes=16))
    code, report = _status(settings.viirs_base, double)
    assert code == 1
    (line,) = report["mirror_problems"]
    assert "no run has succeeded for 16 min (limit MIRROR_STALE_MINUTES=15)" in line
    assert line in report["problems"]
    code, report = _status(settings.viirs_base, double, MIRROR_STALE_MINUTES=30)
    assert report["mirror_problems"] == []

    # nothing new listed for 4 hours: the upstream went quiet
    _shift(health, last_success=dt.timedelta(0), satellites=dt.timedelta(hours=4))
    code, report = _status(settings.viirs_base, double)
    (line,) = report["mirror_problems"]
    assert line.startswith("mirror_gina: nothing new listed for snpp for 4.0 h")


def test_file_listed_an_hour_ago_and_never_placed_is_unhealthy(tmp_path, double):
    add_pass(double, granules=1, segments=("GITCO",))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    stuck = format_name("SVI05", "npp", START, START + dt.timedelta(seconds=85), 70000, START)
    double.add_record({"url": f"http://127.0.0.1:{closed}/files/{stuck}", "md5sum": "0" * 32})  # never answers
    settings = settings_for(tmp_path / "viirs", double)
    status, log = run_mirror(settings, ["snpp-imagery"])
    assert status == 1
    health = settings.state_dir / "mirror_gina.health.json"
    data = json.loads(health.read_text())
    assert list(data["pending"]) == [stuck] and "last_success" not in data
    _shift(health, last_success=dt.timedelta(0), pending=dt.timedelta(minutes=61))
    code, report = _status(settings.viirs_base, double)
    (line,) = report["mirror_problems"]
    assert f"1 file(s) listed by GINA for over an hour are neither placed nor given up on (oldest {stuck}" in line
