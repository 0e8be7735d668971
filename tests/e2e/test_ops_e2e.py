"""Operations against the running supervised suite: the status command in both forms, cleanup beside live programs."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time

import pytest

from tests.e2e.harness import BIN, Suite
from tests.gina_double import GinaDouble
from tests.support import wait_until

pytestmark = pytest.mark.e2e


def run(suite, *cmd: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], env=dict(suite.env, **env), capture_output=True,
                          text=True, timeout=60)


def test_status_of_the_running_suite_in_both_forms(suite):
    suite.wait_flowing()
    journal = suite.settings.state_dir / "mirror_gina.journal"
    with open(journal, "a") as out:  # the line mirror_gina appends for each file it places
        out.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                              "name": "SVM16_npp_d20261123_t1000000_e1001255_b12345_c1_cspp_dev.h5",
                              "bytes": 40_000_000, "md5": "0" * 32, "seconds": 4.0, "connections": 4}) + "\n")
    programs = suite.programs()

    text = run(suite, "avoviirscollector", "status", "--wait", "1.5")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "HEALTHY" in text.stdout
    for name in programs:
        line = next(line for line in text.stdout.splitlines() if name in line)
        assert "RUNNING" in line
    assert "10.00 MB/s" in text.stdout

    as_json = run(suite, "avo_status", "--json", "--wait", "1.5")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["healthy"] is True and report["problems"] == []
    assert {p["name"].split(":")[-1]: p["state"] for p in report["programs"]} == {
        name: state for name, (state, _) in programs.items()}
    disk = report["disk"]
    assert disk["total"] > 0 and 0 < disk["used"] <= disk["total"]  # the filesystem's figures (statvfs)
    assert "sdr" not in disk["folders"] and disk["folders"]["state"]["files"] >= 1  # sdr/ is not walked
    assert report["last_files"][0]["mb_per_s"] == 10.0

    suite.supervisorctl("stop", "msg_publisher")
    down = run(suite, "avo_status", "--json", "--quick", "--wait", "0.5")
    assert down.returncode == 1
    assert any(p.startswith("msg_publisher is STOPPED") for p in json.loads(down.stdout)["problems"])


def test_cleanup_beside_the_running_suite_spares_what_is_in_use(suite):
    old = time.time() - 30 * 86400
    placed = suite.place("SVM16_npp_d20010101_t0000000_e0001255_b00001_c20010101001500000000_cspp_dev.h5")
    logs = sorted(suite.settings.log_dir.glob("*.log"))
    assert logs
    for path in [placed, *logs, suite.settings.viirs_base / "run" / "supervisord.pid"]:
        os.utime(path, (old, old))
    result = run(suite, "cleanup", VIIRS_RETENTION="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not placed.exists()
    assert all(path.exists() for path in logs), "a log supervisord writes was removed"
    assert (suite.settings.viirs_base / "run" / "supervisor.sock").exists()
    assert (suite.settings.viirs_base / "run" / "supervisord.pid").exists()
    assert "removed 1 files" in result.stdout
    # logs written since they were aged count as kept; the others are spared because supervisord has them open
    assert int(re.search(r"(\d+) in use", result.stdout).group(1)) >= 1
    suite.wait_ready(timeout=30)  # the suite did not notice


def processes_of(base) -> list[str]:
    """Command lines of the processes whose environment has ``VIIRS_BASE=base``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if f"VIIRS_BASE={base}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except OSError:
            continue
    return found


def test_stopping_cron_stops_the_mirror_gina_run_it_started(tmp_path):
    # a run lists every MIRROR_POLL_SECONDS until the next minute's is due: a stop of cron must reach it and wait for
    # it, not leave it running with its queues' locks (the next start's runs, or an operator's, would skip them)
    with GinaDouble(tmp_path / "gina") as double:
        suite = Suite(tmp_path, extra_env={"GINA_URL": double.url, "MIRROR_POLL_SECONDS": "5"})
        try:
            suite.start()
            cron_log = suite.settings.log_dir / "cron.log"

            def cron_text() -> str:
                return cron_log.read_text(errors="replace") if cron_log.exists() else ""

            def a_run_listed() -> bool:
                run = cron_text().split("starting job: mirror_gina")
                return len(run) > 1 and "mirror_gina INFO" in run[-1]  # a run started and has listed

            # cron starts mirror_gina at the next minute
            wait_until(a_run_listed, 75, lambda: f"a mirror_gina run listed; cron.log:\n{cron_text()}", 0.2)
            assert any(cmd.endswith("/mirror_gina") for cmd in processes_of(suite.base)), processes_of(suite.base)
            suite.supervisorctl("stop", "cron")
            assert suite.programs()["cron"][0] == "STOPPED"
            assert not [cmd for cmd in processes_of(suite.base) if "mirror_gina" in cmd], "left running after stop"
            locks = sorted(suite.settings.state_dir.glob("mirror_gina.*.lock"))
            assert locks, "the run took no queue lock"
            for lock in locks:
                with open(lock) as f:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no run holds it
            tail = cron_log.read_text(errors="replace").split("starting job: mirror_gina")[-1]
            assert "job finished with exit status 0: mirror_gina" in tail, tail
        finally:
            suite.stop()
