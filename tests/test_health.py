"""The health verdict (health.py): the reasons, in order and in words, from the facts a program holds."""

from __future__ import annotations

import datetime as dt

from avoviirscollector.health import Facts, assess
from avoviirscollector.status import Report, render_text

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC).timestamp()


def _iso(seconds_ago: float) -> str:
    return dt.datetime.fromtimestamp(NOW - seconds_ago, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_problems():
    facts = Facts(viirs_base="/viirs", disk={"percent_used": 99.0},
                  programs=[{"name": "nameserver", "state": "RUNNING"},
                            {"name": "task_broker", "state": "BACKOFF", "description": "Exited too quickly"}],
                  queue_error="no status message on port 19191 within 3 s")
    verdict = assess(facts, NOW, 15, 3)
    assert verdict.problems == ["task_broker is BACKOFF (Exited too quickly)",
                                "task_broker status not heard: no status message on port 19191 within 3 s",
                                "filesystem of /viirs is 99% full"]
    assert not verdict.healthy and verdict.mirror_problems == []
    report = Report(time="t", viirs_base="/viirs", problems=verdict.problems)
    assert "UNHEALTHY" in render_text(report)
    fine = Facts(viirs_base="/viirs", programs=[{"name": "nameserver", "state": "RUNNING"}],
                 queue_error="no broker configured here", disk={"percent_used": 40.0})
    assert assess(fine, NOW, 15, 3).problems == [] and assess(fine, NOW, 15, 3).healthy
    heard = Facts(viirs_base="/viirs", programs=[{"name": "task_broker", "state": "RUNNING"}],
                  queue={"queue length": 0, "products waiting": []}, disk={"percent_used": 97.9})
    assert assess(heard, NOW, 15, 3).healthy


def test_supervisord_silent_and_the_mirrors_reasons_last():
    silent = Facts(viirs_base="/viirs", supervisor_error="FileNotFoundError: [Errno 2] No such file or directory",
                   mirror_health={"last_success": _iso(40 * 60), "last_run": _iso(0), "last_run_summary": "failed 3"})
    verdict = assess(silent, NOW, 15, 3)
    assert verdict.problems[0] == "supervisord: FileNotFoundError: [Errno 2] No such file or directory"
    assert verdict.problems[1:] == verdict.mirror_problems
    assert verdict.mirror_problems[0].startswith("mirror_gina: no run has succeeded for 40 min "
                                                 "(limit MIRROR_STALE_MINUTES=15)")


def test_no_successful_run_counts_from_crons_start():
    def cron(started_ago: float, state: str = "RUNNING") -> Facts:
        return Facts(viirs_base="/viirs", programs=[{"name": "cron", "state": state, "start": NOW - started_ago}])

    assert assess(cron(5 * 60), NOW, 15, 3).healthy
    (line,) = assess(cron(20 * 60), NOW, 15, 3).problems
    assert "mirror_gina: no run has succeeded since the suite started 20 min ago" in line
    assert assess(cron(20 * 60, "STARTING"), NOW, 15, 3).mirror_problems == []  # cron not running: no start known
