"""pair/: keepalived's configuration from the PAIR_* settings, the role file, the notify reader's lines, and
``avoviirscollector pair`` (real keepalived on two hosts: tests/e2e/test_pair_e2e.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from avoviirscollector.config import load_settings
from avoviirscollector.pair import cli as pair_cli
from avoviirscollector.pair.keepalived import KeepalivedFiles, keepalived_argv, keepalived_config, notify_command
from avoviirscollector.pair.role import (
    HEARTBEAT_SECONDS,
    STALE_SECONDS,
    Role,
    RoleWatch,
    parse_fifo_line,
    read_role,
    role_path,
    write_role,
)
from tests.support import wait_until

PAIR = {"PAIR_PEER": "192.0.2.12", "PAIR_ADDRESS": "192.0.2.10/24", "PAIR_INTERFACE": "eth0", "PAIR_ROUTER_ID": "51",
        "PAIR_WITNESS": "192.0.2.1", "PAIR_PRIORITY": "90"}
BIN = Path(sys.executable).parent


def config_text(tmp_path: Path) -> str:
    pair = load_settings(PAIR).pair
    files = KeepalivedFiles(tmp_path / "ka")
    return keepalived_config(pair, files, "/usr/bin/ping", notify_command("/opt/venv/bin/avoviirscollector",
                                                                            Path("/viirs"), pair))


def test_the_configuration_says_what_the_settings_say(tmp_path):
    text = config_text(tmp_path)
    for line in ("state BACKUP", "nopreempt", "interface eth0", "virtual_router_id 51", "priority 90",
                 "advert_int 1", "garp_master_refresh 5", "check_unicast_src", "192.0.2.10/24 dev eth0",
                 "enable_script_security",
                 "script_user root", "init_fail", "fall 2", "rise 2", "fifo_write_vrrp_states_on_reload",
                 f"vrrp_notify_fifo {tmp_path}/ka/notify.fifo",
                 'script "/usr/bin/ping -c 1 -W 0.3 -n -q 192.0.2.1"', "timeout 1",
                 'vrrp_notify_fifo_script "/opt/venv/bin/avoviirscollector pair notify --base /viirs --release '
                 '192.0.2.10/24 eth0"'):
        assert f"    {line}\n" in text, line
    peers = text.split("unicast_peer {", 1)[1].split("}", 1)[0].split()
    assert peers == ["192.0.2.12"]
    assert "state MASTER" not in text and "mcast" not in text and "preempt_delay" not in text


def test_keepalived_takes_the_configuration(tmp_path):
    """keepalived's own check, in a namespace of its own where eth0 exists (keepalived looks the interface up)."""
    keepalived = shutil.which("keepalived")
    if keepalived is None or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs keepalived (scripts/test-tools installs it), root and unshare for a namespace with eth0")
    (tmp_path / "ka").mkdir()
    path = tmp_path / "ka" / "keepalived.conf"
    path.write_text(config_text(tmp_path))
    check = f"ip link add eth0 type veth peer name eth1 && exec {keepalived} --config-test --use-file {path}"
    result = subprocess.run(["unshare", "--net", "sh", "-c", check], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_path_keepalived_cannot_quote_is_refused(tmp_path):
    pair = load_settings(PAIR).pair
    with pytest.raises(ValueError, match="no blanks or quotes"):
        keepalived_config(pair, KeepalivedFiles(tmp_path / "my dir"), "/usr/bin/ping", ["/bin/true"])


def test_keepalived_runs_in_the_foreground_with_its_files(tmp_path):
    files = KeepalivedFiles(tmp_path)
    argv = keepalived_argv("/usr/sbin/keepalived", files)
    assert argv[0] == "/usr/sbin/keepalived" and "--dont-fork" in argv and "--vrrp" in argv
    assert argv[argv.index("--use-file") + 1] == str(tmp_path / "keepalived.conf")
    assert str(files.pid) in argv and str(files.vrrp_pid) in argv


@pytest.mark.parametrize("line,expected", [
    ('INSTANCE "avo_pair" MASTER 100', ("MASTER", 100)),
    ('INSTANCE "avo_pair" BACKUP 90\n', ("BACKUP", 90)),
    ('INSTANCE "avo_pair" FAULT 0', ("FAULT", 0)),
    ('INSTANCE "avo_pair" STOP', ("STOP", None)),
    ('INSTANCE "other" MASTER 100', None),
    ('GROUP "avo_pair" MASTER 100', None),
    ('INSTANCE "avo_pair" MASTER_RX_LOWER_PRI 100', None),
    ("", None),
])
def test_fifo_lines(line, expected):
    assert parse_fifo_line(line, "avo_pair") == expected


def test_the_role_file_is_written_whole_and_read_back(tmp_path):
    assert read_role(tmp_path) is None
    role = Role("MASTER", "2026-12-03T14:31:58.123456Z", "BACKUP", 100, "boot-1")
    write_role(tmp_path, role)
    path = role_path(tmp_path)
    assert path == tmp_path / "run" / "pair.role" and (path.stat().st_mode & 0o777) == 0o644
    assert json.loads(path.read_text())["role"] == "MASTER" and os.listdir(path.parent) == ["pair.role"]
    assert read_role(tmp_path) == role
    assert role.active("boot-1") and not role.active("boot-2") and not role.active(None)
    assert not Role("BACKUP", role.since, boot_id="boot-1").active("boot-1")
    for garbage in ("", "[]", '{"role": "LEADER", "since": "x"}', '{"role": "MASTER"}'):
        path.write_text(garbage)
        assert read_role(tmp_path) is None, garbage


def test_a_master_whose_role_file_nobody_touches_is_not_active(tmp_path):
    """keepalived's container killed whole leaves MASTER in the file and nobody to say STOP: the watch counts it
    for nothing once the reader's heartbeat (the file's modification time) is STALE_SECONDS old."""
    now = [1_000_000.0]
    watch = RoleWatch(tmp_path, boot="boot-1", clock=lambda: now[0])
    assert watch.read() is None and watch.age() is None and not watch.stale and not watch.active
    write_role(tmp_path, Role("MASTER", "2026-12-03T14:31:58.123456Z", "BACKUP", 100, "boot-1"))
    os.utime(role_path(tmp_path), (now[0], now[0]))
    assert watch.active and watch.age() == 0.0
    now[0] += STALE_SECONDS
    assert watch.active and not watch.stale  # STALE_SECONDS old: still its word
    now[0] += 0.5
    assert watch.stale and not watch.active and watch.role.role == "MASTER"
    os.utime(role_path(tmp_path), (now[0], now[0]))  # the reader's next touch
    assert watch.active and watch.age() == 0.0
    write_role(tmp_path, Role("BACKUP", "2026-12-03T14:32:58.123456Z", "MASTER", 100, "boot-1"))
    assert not watch.active and watch.role.role == "BACKUP"


def test_pair_commands_on_one_host_say_there_is_no_pair(tmp_path, monkeypatch, capsys):
    for name in PAIR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIIRS_BASE", str(tmp_path))
    assert pair_cli.main(["config", "--dir", str(tmp_path / "ka")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["avoviirscollector pair: PAIR_PEER is not set: this is one host, there is no pair to configure"]
    assert not (tmp_path / "ka").exists()
    assert pair_cli.main(["role"]) == 2
    assert "no role" in capsys.readouterr().out


def test_pair_config_writes_and_prints(tmp_path, monkeypatch, capsys):
    if shutil.which("ping") is None:
        pytest.skip("ping is not installed (scripts/test-tools installs iputils-ping)")
    for name, value in {**PAIR, "VIIRS_BASE": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    assert pair_cli.main(["config", "--dir", str(tmp_path / "ka")]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "ka" / "keepalived.conf").read_text() and "priority 90" in out
    write_role(tmp_path, Role("BACKUP", "2026-12-03T14:31:58.123456Z", boot_id="not this boot"))
    assert pair_cli.main(["role"]) == 1
    assert capsys.readouterr().out.startswith("BACKUP since 2026-12-03T14:31:58.123456Z (written before this boot")


# A stand-in for keepalived: makes the FIFO, starts the reader as keepalived does (the FIFO's path last, SIGTERM
# when its parent dies), writes the lines it is given, then ends as told: "kill" (SIGKILL itself, saying nothing) or
# "stop" (SIGTERM to the reader, then the STOP line, as keepalived stops).
FAKE_KEEPALIVED = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    fifo, base, how, lines = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    os.mkfifo(fifo)
    reader = subprocess.Popen(["setpriv", "--pdeathsig", "TERM", os.path.join(os.path.dirname(sys.executable),
                               "avoviirscollector"), "pair", "notify", "--base", base, "--release", "198.51.100.7/32",
                               "lo", fifo])
    out = os.open(fifo, os.O_WRONLY)
    for line in lines:
        os.write(out, (line + "\\n").encode())
        time.sleep(0.3)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    reader.send_signal(signal.SIGTERM)
    os.write(out, b'INSTANCE "avo_pair" STOP 100\\n')
    reader.wait(timeout=10)
""")


def test_the_notify_reader_touches_the_role_file_while_keepalived_runs(tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    lines = ['INSTANCE "avo_pair" MASTER 100'] + ["# keepalived runs"] * 15  # 0.3 s apart: about 4.5 s alive
    fake = subprocess.Popen([sys.executable, "-c", FAKE_KEEPALIVED, str(tmp_path / "notify.fifo"), str(tmp_path),
                             "kill", *lines])
    try:
        wait_until(lambda: (r := read_role(tmp_path)) and r.role == "MASTER", 10, "the reader's MASTER")
        watch = RoleWatch(tmp_path)
        written = role_path(tmp_path).stat()
        ages, touched = [], []
        while fake.poll() is None:
            ages.append(watch.age())
            info = role_path(tmp_path).stat()
            if info.st_ino == written.st_ino:  # touched, not written again (its STOP comes after the end)
                touched.append(info.st_mtime)
            time.sleep(0.1)
        assert len(ages) >= 20 and max(ages) < HEARTBEAT_SECONDS + 1.0, ages  # never near STALE_SECONDS
        assert max(touched) > written.st_mtime + 2 * HEARTBEAT_SECONDS, (written.st_mtime, touched)
    finally:
        fake.kill()
        fake.wait()


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_the_notify_reader_follows_keepalived_to_its_end(tmp_path, how):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    started = time.time()
    fake = subprocess.run([sys.executable, "-c", FAKE_KEEPALIVED, str(tmp_path / "notify.fifo"), str(tmp_path), how,
                           'INSTANCE "avo_pair" BACKUP 100', 'INSTANCE "other" MASTER 1',
                           'INSTANCE "avo_pair" MASTER 100'], capture_output=True, text=True, timeout=60)
    assert fake.returncode == (-signal.SIGKILL if how == "kill" else 0), fake.stderr
    role = wait_until(lambda: (r := read_role(tmp_path)) and r.role == "STOP" and r, 10, "the reader's STOP")
    log = wait_until(lambda: (tmp_path / "log" / "pair.log").read_text().splitlines(), 5, "pair.log")
    assert [line.split(" ", 3)[3].split(" (")[0] for line in log] == ["role BACKUP", "role MASTER", "role STOP"], log
    assert role.previous == "MASTER" and role.priority == 100 and role.since > time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))
    if how == "kill":
        assert role.note.startswith("keepalived ended without a word; 198.51.100.7/32 not on lo"), role
        assert " WARNING role STOP (was MASTER after " in log[-1]
    else:
        assert role.note == "", role


def test_the_pair_compose_file_is_the_suite_beside_keepalived():
    """docker-compose.pair.yml: the suite as docker-compose.yml has it (the same settings; PAIR_* required), on the
    host's network with no ports; keepalived on the host's network with NET_ADMIN and NET_RAW, root, the same
    PAIR_* and the shared volume (its role file), built from Dockerfile.keepalived, started by our command."""
    repo = Path(__file__).resolve().parent.parent
    single = yaml.safe_load((repo / "docker-compose.yml").read_text())["services"]["viirscollector"]
    pair = yaml.safe_load((repo / "docker-compose.pair.yml").read_text())["services"]
    suite, keepalived = pair["viirscollector"], pair["keepalived"]
    assert set(suite["environment"]) == set(single["environment"])
    for name, value in suite["environment"].items():
        if name.startswith("PAIR_") and name not in ("PAIR_PRIORITY", "PAIR_REPLICATION_PORT"):
            assert value.startswith(f"${{{name}:?"), (name, value)
        else:
            assert value == single["environment"][name], name
    assert suite["network_mode"] == "host" and "ports" not in suite and suite["volumes"] == single["volumes"]
    assert keepalived["network_mode"] == "host" and set(keepalived["cap_add"]) == {"NET_ADMIN", "NET_RAW"}
    assert keepalived["user"] == "0:0" and keepalived["restart"] == "always"
    assert {k: v for k, v in suite["environment"].items() if k.startswith("PAIR_")} == {
        k: v for k, v in keepalived["environment"].items() if k.startswith("PAIR_")}
    assert keepalived["environment"]["VIIRS_BASE"] == "/viirs" and keepalived["volumes"] == single["volumes"]
    assert keepalived["build"]["dockerfile"] == "Dockerfile.keepalived"
    dockerfile = (repo / "Dockerfile.keepalived").read_text()
    assert 'CMD ["avoviirscollector", "pair", "keepalived", "--dir", "/run/avoviirscollector-pair"]' in dockerfile
    assert "keepalived iputils-ping iproute2" in dockerfile and "HEALTHCHECK" in dockerfile


def test_the_pair_compose_file_validates():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose) to validate the file")
    repo = Path(__file__).resolve().parent.parent
    command = [tool, "-f", str(repo / "docker-compose.pair.yml"), "config"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAIR_")}
    missing = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode != 0 and "set PAIR_" in missing.stderr  # a pair needs its settings: compose says so
    given = subprocess.run(command, capture_output=True, text=True, env={**env, **PAIR}, timeout=60)
    assert given.returncode == 0, given.stderr
    services = yaml.safe_load(given.stdout)["services"]
    assert services["keepalived"]["environment"]["PAIR_PEER"] == "192.0.2.12"
    assert services["viirscollector"]["environment"]["PAIR_PRIORITY"] == "90"


def test_pid_files_of_a_keepalived_gone_are_stale(tmp_path):
    """A pid file counts only when its pid is a keepalived on this configuration; a pid now held by another program
    (a sleep here), by this very process (pid 1 in a restarted container), by a keepalived of another configuration
    or by nobody is stale, and so is a file that is not a pid."""
    from avoviirscollector.pair.keepalived import running_keepalived

    files = KeepalivedFiles(tmp_path / "ka")
    files.folder.mkdir()
    proc = tmp_path / "proc"

    def fake(pid: int, *argv: str) -> None:
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(word.encode() for word in argv) + b"\0")

    fake(700, "/usr/sbin/keepalived", "--dont-fork", "--use-file", str(files.config), "--pid", str(files.pid))
    fake(701, "/usr/sbin/keepalived", "--use-file", "/etc/keepalived/other.conf")
    fake(702, "sleep", "1000")
    for pid, live in ((700, True), (701, False), (702, False), (703, False), (os.getpid(), False)):
        files.pid.write_text(f"{pid}\n")
        files.vrrp_pid.write_text("not a pid\n")
        assert running_keepalived(files, proc) == ({files.pid: 700} if live else {}), pid
    files.vrrp_pid.write_text("700\n")
    files.pid.unlink()
    assert running_keepalived(files, proc) == {files.vrrp_pid: 700}
    with subprocess.Popen(["sleep", "30"]) as sleeper:  # the real /proc: a live pid that is not keepalived
        files.vrrp_pid.write_text(f"{sleeper.pid}\n")
        assert running_keepalived(files) == {}
        sleeper.kill()
