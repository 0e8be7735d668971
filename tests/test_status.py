"""avo_status: parsing of what it reads, and the command against a real supervisord on a unix socket."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avoviirscollector.ondisk.log_errors import parse_error_lines
from avoviirscollector.ondisk.state import tail_lines
from avoviirscollector.ondisk.usage import disk_use
from avoviirscollector.queue_status import parse_queue_status
from avoviirscollector.status import (
    Report,
    recent_placements,
    render_text,
    station_summary,
)
from avoviirscollector.viirs import format_name

BIN = Path(sys.executable).parent
NOW = time.time()


def iso(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - seconds_ago))


def test_queue_status_from_json():
    expected = {"queue length": 3, "products waiting": ["dnb", "tir"], "tasks by product": {"tir": 2, "dnb": 1}}
    plain = json.dumps(expected).encode()
    assert parse_queue_status([plain]) == expected
    assert parse_queue_status([b"status", plain]) == expected
    assert parse_queue_status([json.dumps({"queue length": 0, "products waiting": []}).encode()]) == {
        "queue length": 0, "products waiting": [], "tasks by product": {}}
    assert parse_queue_status([plain, b"junk"]) == expected
    report = Report(time="t", viirs_base="/viirs", queue=expected)
    assert "queue: 3 tasks waiting; by product: dnb 1, tir 2" in render_text(report)
    stopping = json.dumps({"queue length": 0, "products waiting": [], "stopping": True, "queued": 3}).encode()
    assert parse_queue_status([stopping]) is None  # the broker's last word before a stop is not its queue
    for junk in (b"", b"\xff\xfe", b"[1, 2]", b'{"queue length": "3"}', b"pytroll://broken"):
        assert parse_queue_status([junk]) is None


def test_a_pair_host_shows_its_role_and_link_and_a_standby_its_own_queue():
    """A standby publishes no task waiting (its workers would ask the wrong host): status shows what it queues, its
    role and the link; an active alone says since when its hand-outs are not on the other host."""
    pair = {"role": "BACKUP", "serving": False, "peer": "192.0.2.11", "link": "whole", "alone since": None,
            "unanswered": 0, "lag seconds": 0.0, "received": 12, "last promotion": None}
    standby = {"queue length": 0, "products waiting": [], "tasks by product": {}, "standby": True, "queued": 7,
               "handed out twice (24 h)": 0, "pair": pair}
    parsed = parse_queue_status([json.dumps(standby).encode()])
    assert parsed["standby"] is True and parsed["queued"] == 7 and parsed["pair"] == pair
    text = render_text(Report(time="t", viirs_base="/viirs", queue=parsed))
    assert "queue: 7 tasks queued here; this host is the standby: the other host hands out" in text
    assert "pair: this host BACKUP, hands out nothing; the other host 192.0.2.11: link whole" in text
    alone = {**pair, "role": "MASTER", "serving": True, "link": "alone", "alone since": "2026-12-04T03:09:47Z",
             "last promotion": "2026-12-04T03:09:46Z"}
    active = parse_queue_status([json.dumps({"queue length": 2, "products waiting": ["tir"], "pair": alone}).encode()])
    text = render_text(Report(time="t", viirs_base="/viirs", queue=active))
    assert "queue: 2 tasks waiting" in text
    assert ("pair: this host MASTER, serving; the other host 192.0.2.11: link alone since 2026-12-04T03:09:47Z (its "
            "hand-outs are not on the other host); active since 2026-12-04T03:09:46Z") in text


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
    last, hour = recent_placements(lines, NOW, 3)
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


def test_disk_use_walks_the_top_folders_but_sdr_within_its_time_limit(tmp_path):
    for folder, count in (("log", 3), ("sdr", 5), ("state", 1)):
        (tmp_path / folder / "deeper").mkdir(parents=True)
        for i in range(count):
            (tmp_path / folder / ("deeper" if i % 2 else ".") / f"f{i}").write_bytes(b"x" * 5000)
    (tmp_path / "log" / "link").symlink_to(tmp_path / "state" / "f0")
    quick = disk_use(tmp_path, None)
    assert set(quick) == {"total", "used", "free", "percent_used"} and quick["total"] > 0
    walked = disk_use(tmp_path, 10.0)
    assert walked["complete"] is True
    assert {name: v["files"] for name, v in walked["folders"].items()} == {"log": 3, "state": 1}
    assert walked["folders"]["log"]["bytes"] >= 3 * 5000
    stopped = disk_use(tmp_path, -1.0)  # the time limit is past after the first folder read
    assert stopped["complete"] is False and stopped["folders"]["state"] == {"bytes": 0, "files": 0}
    assert disk_use(tmp_path / "missing", None).keys() == {"error"}


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


# -- stations (last 24 h) -------------------------------------------------------------------------------------------
def granule_name(segment: str, platform: str, start: dt.datetime, orbit: int) -> str:
    return format_name(segment, platform, start, start + dt.timedelta(seconds=85), orbit,
                       start + dt.timedelta(minutes=5))


START = dt.datetime(2026, 11, 23, 10, 0, 0, 300000)
UAFGINA = [granule_name(s, "j01", START + dt.timedelta(seconds=0.1), 1000) for s in ("GITCO", "SVI05")]
GILMORE_COPY = granule_name("GITCO", "j01", START, 1000)
ALONE = granule_name("GDNBO", "npp", START, 2000)  # a pass seen at gilmore only


def station_files(state: Path) -> None:
    """A journal (one record older than a day) and copies.json: gilmore's copy of uafgina's GITCO, listed 210 s
    later; a copy noted two days ago (not of the day)."""
    records = [{"time": iso(90_000), "name": granule_name("SVM15", "j01", START, 900), "station": "uafgina"}]
    records += [{"time": iso(600 - i), "name": n, "bytes": 1, "listed": iso(700 - i), "station": "uafgina"}
                for i, n in enumerate(UAFGINA)]
    records.append({"time": iso(300), "name": ALONE, "bytes": 1, "listed": iso(320), "station": "gilmore"})
    (state / "mirror_gina.journal").write_text("".join(json.dumps(r) + "\n" for r in records))
    (state / "mirror_gina.copies.json").write_text(json.dumps({
        GILMORE_COPY: {"station": "gilmore", "listed": iso(490), "of": UAFGINA[0], "of_station": "uafgina",
                       "of_listed": None, "noted": iso(480)},
        granule_name("SVM16", "j01", START, 900): {"station": "barrow", "listed": None, "of": "x",
                                                   "of_station": "gilmore", "of_listed": None,
                                                   "noted": iso(2 * 86400)}}))


def test_stations_of_the_day_from_the_journal_tail_and_copies(tmp_path):
    station_files(tmp_path)
    lines = (tmp_path / "mirror_gina.journal").read_text().splitlines()
    copies = json.loads((tmp_path / "mirror_gina.copies.json").read_text())
    summary = station_summary(lines, copies, NOW)
    assert summary["partial"] is False
    assert summary["by_station"] == [
        {"station": "gilmore", "files": 1, "copies": 1, "lead_median": None, "leads": 0, "one_station_passes": 1},
        {"station": "uafgina", "files": 2, "copies": 0, "lead_median": 210.0, "leads": 1,
         "one_station_passes": 0}]  # its pass has gilmore's copy; the lead from the journal's listed of UAFGINA[0]
    cut = station_summary(lines[2:], copies, NOW, cut=True)  # a tail of the last 10 minutes
    assert cut["partial"] is True and cut["since"] == iso(599)[:-1] + ".000000Z"
    assert [row["files"] for row in cut["by_station"]] == [1, 1]
    text = render_text(Report(time="t", viirs_base="/viirs", stations=summary))
    assert re.search(r"stations \(last 24 h\) +files +copies left alone +came first by \(median\) +passes seen", text)
    assert re.search(r"\n  uafgina +2 +0 +3\.5 min \(1\) +0\n", text)
    assert re.search(r"\n  gilmore +1 +1 +- +1\n", text)
    assert "(files placed since 2026" not in text
    assert f"(files placed since {cut['since']}: the journal's tail" in render_text(
        Report(time="t", viirs_base="/viirs", stations=cut))
    assert "no files placed" in render_text(Report(time="t", viirs_base="/viirs",
                                                   stations=station_summary([], {}, NOW)))


def test_stations_cost_little_with_a_day_of_copies():
    lines = [json.dumps({"time": iso(i * 20), "name": granule_name("SVM15", "j01", START + dt.timedelta(
        seconds=86 * i), 1000 + i // 12), "bytes": 1, "listed": iso(i * 20 + 30), "station": "uafgina"})
        for i in range(4000)]  # about the 1 MB of the journal status reads
    copies = {granule_name("SVM16", "npp", START + dt.timedelta(seconds=i), 2000 + i // 100): {
        "station": "gilmore", "listed": iso(i), "of": "x", "of_station": "uafgina", "of_listed": iso(i + 60),
        "noted": iso(i)} for i in range(30_000)}  # three days of copies at four stations
    started = time.process_time()  # CPU time: the test machine may be busy with others
    summary = station_summary(lines, copies, NOW)
    assert time.process_time() - started < 1.0
    assert {row["station"]: row["copies"] for row in summary["by_station"]}["gilmore"] == 30_000


def test_status_shows_the_stations_in_both_forms(tmp_path):
    base = tmp_path / "viirs"
    for sub in ("log", "run", "state", "sdr"):
        (base / sub).mkdir(parents=True)
    station_files(base / "state")
    text = status(base, "--quick")
    assert text.returncode == 1  # no supervisord here
    assert "stations (last 24 h)" in text.stdout
    assert re.search(r"\n  uafgina +2 +0 +3\.5 min \(1\) +0\n", text.stdout)
    data = json.loads(status(base, "--json", "--quick").stdout)
    assert data["stations"]["partial"] is False
    assert [(r["station"], r["files"], r["copies"], r["lead_median"]) for r in data["stations"]["by_station"]] == [
        ("gilmore", 1, 1, None), ("uafgina", 2, 0, 210.0)]
