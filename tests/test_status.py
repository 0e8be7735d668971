"""avo_status: parsing of what it reads, and the command against a real supervisord on a unix socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avoviirscollector.bus import encode_legacy, new_message
from avoviirscollector.status import (
    Report,
    find_problems,
    parse_error_lines,
    parse_journal,
    parse_queue_status,
    render_text,
    tail_lines,
)

BIN = Path(sys.executable).parent
NOW = time.time()


def iso(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - seconds_ago))


def test_queue_status_from_json_or_posttroll():
    expected = {"queue length": 3, "products waiting": ["dnb", "tir"], "tasks by product": {"tir": 2, "dnb": 1}}
    plain = json.dumps(expected).encode()
    assert parse_queue_status([plain]) == expected
    assert parse_queue_status([b"status", plain]) == expected
    wrapped = encode_legacy(new_message("/AVO/viirs/queue", "info", {"queue length": 0, "products waiting": []}))
    assert parse_queue_status([wrapped.encode()]) == {"queue length": 0, "products waiting": [],
                                                      "tasks by product": {}}
    report = Report(time="t", viirs_base="/viirs", queue=expected)
    assert "queue: 3 tasks waiting; by product: dnb 1, tir 2" in render_text(report)
    stopping = json.dumps({"queue length": 0, "products waiting": [], "stopping": True, "queued": 3}).encode()
    assert parse_queue_status([stopping]) is None  # the broker's last word before a stop is not its queue
    for junk in (b"", b"\xff\xfe", b"[1, 2]", b'{"queue length": "3"}', b"pytroll://broken"):
        assert parse_queue_status([junk]) is None


def test_journal_is_read_tolerantly_with_rates_and_the_last_hour():
    lines = [
        json.dumps({"name": "GITCO_old.h5", "bytes": 50_000_000, "seconds": 10.0, "md5": "x",
                    "time": iso(7200)}),
        "not json at all",
        json.dumps(["a", "list"]),
        json.dumps({"bytes": 1}),  # no name: skipped
        json.dumps({"time": iso(600), "name": "SVM16_a.h5", "bytes": 20_000_000, "md5": "0", "seconds": 4.0,
                    "connections": 4}),  # mirror_gina's journal line
        json.dumps({"name": "SVM15_b.h5", "bytes": 10_000_000, "seconds": 0, "time": iso(60)}),
        '{"name": "cut',
        json.dumps({"name": "SVI05_c.h5", "time": "yesterday-ish"}),
        " " * 40,  # a record blanked after its rename failed (full disk)
    ]
    last, hour = parse_journal(lines, NOW, 3)
    assert [e["name"] for e in last] == ["SVI05_c.h5", "SVM15_b.h5", "SVM16_a.h5"]
    assert last[2]["mb_per_s"] == 5.0 and last[1]["mb_per_s"] is None and last[0]["bytes"] is None
    assert hour == {"files": 2, "bytes": 30_000_000, "mb_per_s": 7.5}


def test_error_lines_from_the_suites_and_supervisords_formats():
    ours = parse_error_lines("mirror_gina", [
        "2026-11-23T10:00:00Z mirror_gina INFO placed x",
        "2026-11-23T10:00:01Z mirror_gina ERROR md5 mismatch for SVM16_npp.h5",
    ])
    sup = parse_error_lines("supervisord", ["2026-11-23 10:00:02,123 CRIT Server 'unix_http_server' running"])
    assert [e["time"] for e in ours + sup] == ["2026-11-23T10:00:01", "2026-11-23T10:00:02"]
    assert "md5 mismatch" in ours[0]["line"]


def test_tail_reads_only_complete_lines_of_the_end(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(100_000)))
    lines = tail_lines(path, 1000)
    assert lines[-1] == "line 99999" and all(line.startswith("line ") for line in lines)
    assert len(lines) < 110


def test_problems():
    report = Report(time="t", viirs_base="/viirs", disk={"percent_used": 99.0},
                    programs=[{"name": "nameserver", "state": "RUNNING"},
                              {"name": "task_broker", "state": "BACKOFF", "description": "Exited too quickly"}],
                    queue_error="no status message on port 19191 within 3 s")
    problems = find_problems(report)
    assert problems == ["task_broker is BACKOFF (Exited too quickly)",
                        "task_broker status not heard: no status message on port 19191 within 3 s",
                        "filesystem of /viirs is 99% full"]
    report.problems = problems
    assert "UNHEALTHY" in render_text(report)
    fine = Report(time="t", viirs_base="/viirs", programs=[{"name": "nameserver", "state": "RUNNING"}],
                  queue_error="no broker configured here", disk={"percent_used": 40.0})
    assert find_problems(fine) == []


SUPERVISORD_CONF = """
[supervisord]
nodaemon=true
logfile={base}/log/supervisord.log
pidfile={base}/run/supervisord.pid
[unix_http_server]
file={base}/run/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{base}/run/supervisor.sock
[program:sleeper]
command=sleep 300
startsecs=0
stdout_logfile={base}/log/sleeper.log
redirect_stderr=true
"""


@pytest.fixture
def supervised(tmp_path):
    base = tmp_path / "viirs"
    for sub in ("log", "run", "state", "sdr"):
        (base / sub).mkdir(parents=True)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(SUPERVISORD_CONF.format(base=base))
    proc = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), "status"], capture_output=True,
                                 text=True)
            if "RUNNING" in out.stdout:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"supervisord did not start sleeper: {out.stdout} {out.stderr}")
        yield base, conf, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def status(base: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VIIRS_BASE=str(base))
    return subprocess.run([sys.executable, "-m", "avoviirscollector.status", "--wait", "0.3", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_status_of_a_supervised_tree_in_both_forms(supervised):
    base, conf, proc = supervised
    (base / "state" / "mirror_gina.journal").write_text(
        json.dumps({"time": iso(30), "name": "SVM16_npp_d20261123_t1000000_e1001000_b12345_c1_cspp_dev.h5",
                    "bytes": 30_000_000, "md5": "ab", "seconds": 3.0, "connections": 4}) + "\n" + "garbage\n")
    (base / "log" / "mirror_gina.log").write_text(
        f"{iso(50)} mirror_gina INFO fine\n{iso(40)} mirror_gina ERROR GINA listing failed: HTTP 503\n")
    (base / "sdr" / "f.h5").write_bytes(b"x" * 8192)
    (base / "state" / "refused-task_broker.json").write_text(json.dumps(
        {"program": "task_broker", "total": 7, "since": iso(3600), "updated": iso(5),
         "peers": {"192.0.2.9": {"count": 6, "last": iso(5)}, "127.0.0.2": {"count": 1, "last": iso(60)}}}))

    text = status(base)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "HEALTHY" in text.stdout
    assert "sleeper" in text.stdout and "RUNNING" in text.stdout
    assert "SVM16_npp_d20261123" in text.stdout and "10.00 MB/s" in text.stdout
    assert "GINA listing failed: HTTP 503" in text.stdout
    assert "queue: unknown (no status message on port" in text.stdout
    assert "sdr/ not walked" in text.stdout and "sdr 8.2 KB" not in text.stdout  # months of files: statvfs only
    assert "refused connections (ALLOWED_CLIENTS): 7" in text.stdout and "192.0.2.9 6, 127.0.0.2 1" in text.stdout

    as_json = status(base, "--json")
    assert as_json.returncode == 0
    data = json.loads(as_json.stdout)
    assert data["healthy"] is True
    assert [(p["name"], p["state"]) for p in data["programs"]] == [("sleeper", "RUNNING")]
    assert data["programs"][0]["pid"] > 0
    assert data["last_files"][0]["mb_per_s"] == 10.0
    assert "mirror_gina" in [e["log"] for e in data["last_errors"]]
    assert "sdr" not in data["disk"]["folders"] and data["disk"]["folders"]["log"]["files"] == 3
    assert data["disk"]["total"] > 0
    assert [(r["program"], r["total"]) for r in data["refused"]] == [("task_broker", 7)]

    subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), "stop", "sleeper"], check=True,
                   capture_output=True)
    stopped = status(base, "--json", "--quick")
    assert stopped.returncode == 1
    data = json.loads(stopped.stdout)
    assert data["problems"] == ["sleeper is STOPPED (" + data["programs"][0]["description"] + ")"]
    assert "folders" not in data["disk"]

    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    down = status(base, "--quick")
    assert down.returncode == 1
    assert "supervisord does not answer" in down.stdout and "UNHEALTHY" in down.stdout


def test_bad_setting_exits_2(tmp_path):
    env = dict(os.environ, VIIRS_BASE=str(tmp_path), UPDATE_PORT="http")
    result = subprocess.run([sys.executable, "-m", "avoviirscollector.status"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "UPDATE_PORT" in result.stderr
