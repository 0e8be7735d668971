"""Who may connect, through the supervised suite (SPEC section 12), 127.0.0.2 playing the foreign host.

With ALLOWED_CLIENTS=127.0.0.1: a deployed-style worker from 127.0.0.1 gets its tasks; the same worker bound to
127.0.0.2 hears nothing on UPDATE_PORT, gets nothing on TASK_PORT (and holds no task), a subscriber from there gets
nothing on PUBLISH_PORT; one log line per program. Internal posttroll sockets (nameserver lookups, registrations,
address announcements, trollstalker's publisher) answer 127.0.0.1 and refuse 127.0.0.2 (posttroll's own ZAP
allow-list, POSTTROLL_AUTHORIZED_CLIENT_ADDRESSES, set by `supervise`)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import zmq
from posttroll.message import Message

from avoviirscollector.status import collect
from avoviirscollector.viirs import PRODUCTS, format_name
from tests.broker_support import DeployedWorker
from tests.e2e.harness import Suite
from tests.support import ask, endpoint, heard, wait_until

pytestmark = pytest.mark.e2e
FOREIGN = "127.0.0.2"
START = dt.datetime(2001, 2, 1, 12)  # of the files placed (and when each was created)


@pytest.fixture
def guarded(tmp_path):
    with Suite(tmp_path, {"ALLOWED_CLIENTS": "127.0.0.1"}) as running:
        yield running


def _tasks_of_an_allowed_worker(ports) -> list[bytes]:
    """What a deployed-style tir worker from 127.0.0.1 received, once the NOAA-20 granule's task was among it."""
    allowed = DeployedWorker(ports.task_port, ports.update_port, ["tir"])
    allowed.start()
    try:
        wait_until(lambda: any(b"j01" in r or b"NOAA-20" in r for r in allowed.received), 30, "the granule's task")
    finally:
        allowed.stop()
    return allowed.received


def _trollstalker_port(answer: bytes) -> int:
    """trollstalker's publisher port, from the nameserver's ``answer`` to a lookup of every service."""
    trollstalker = next(a["URI"] for a in Message.decode(answer.decode()).data
                        if "trollstalker" in str(a.get("name", "")) or "trollstalker" in str(a.get("service")))
    return int(trollstalker.rsplit(":", 1)[1])


def _foreign_subscriber_hears(port: int, publish) -> bool:
    """Whether a SUB on ``port`` from 127.0.0.2 gets anything within 3 s of ``publish()``."""
    context = zmq.Context()
    probe = context.socket(zmq.SUB)
    try:
        probe.setsockopt(zmq.LINGER, 0)
        probe.setsockopt(zmq.SUBSCRIBE, b"")
        probe.connect(endpoint(port, source=FOREIGN))
        time.sleep(0.5)  # the refused connection attempt is made before the file comes (nothing can show it)
        publish()
        return bool(probe.poll(3000))
    finally:
        probe.close(linger=0)
        context.term()


def _refusals_logged(suite: Suite, program: str) -> list[str]:
    """The lines of ``program``'s log that say it refused a connection."""
    log = (suite.base / "log" / f"{program}.log").read_text()
    return [line for line in log.splitlines() if "refused a connection" in line]


def test_only_allowed_clients_reach_the_public_ports_and_no_one_else_the_internal_ones(guarded):
    s = guarded
    ports = s.settings
    foreign = DeployedWorker(ports.task_port, ports.update_port, list(PRODUCTS), source=FOREIGN)
    foreign.start()
    try:
        s.wait_flowing()  # probe granules: tasks for every product are queued now
        for segment in PRODUCTS["tir"]:
            s.place(format_name(segment, "j01", START, START + dt.timedelta(seconds=85), 12345, START))
        # public ports from 127.0.0.2: nothing at all
        assert heard(ports.publish_port, 3, FOREIGN) == 0
        assert ask(ports.task_port, json.dumps({"desired products": ["tir"], "just testing": True}).encode(),
                   source=FOREIGN) is None
    finally:
        foreign.stop()
    assert foreign.heard == 0 and not foreign.received and not foreign.latencies
    # ... and from 127.0.0.1 everything
    assert heard(ports.update_port, 2.5) >= 2
    received = _tasks_of_an_allowed_worker(ports)
    assert any(b"NOAA-20" in r and b"12345" in r for r in received), received

    # internal sockets: the nameserver answers 127.0.0.1 only
    lookup = Message("/oper/ns", "request", {"service": ""}).encode().encode()
    ns_port = int(s.env["POSTTROLL_NAMESERVER_PORT"])
    answer = ask(ns_port, lookup, 5)
    assert answer is not None and b"trollstalker" in answer
    assert ask(ns_port, lookup, source=FOREIGN) is None
    # registering a publisher of granules from 127.0.0.2 gets no "ok" and is not listed
    fake = Message("/address/segment_gatherer_tir", "info",
                   {"URI": "tcp://192.0.2.66:40000", "service": ["segment_gatherer_tir"]}).encode().encode()
    assert ask(int(s.env["POSTTROLL_BROADCAST_PORT"]), fake, source=FOREIGN) is None
    assert b"192.0.2.66" not in ask(ns_port, lookup, 5)
    # the nameserver's address announcements and trollstalker's own publisher: nothing for 127.0.0.2
    assert heard(int(s.env["POSTTROLL_ADDRESS_PUBLISH_PORT"]), 1.5, FOREIGN) == 0
    late = format_name("SVI05", "j01", START + dt.timedelta(minutes=5), START + dt.timedelta(minutes=6), 12345, START)
    assert not _foreign_subscriber_hears(_trollstalker_port(answer), lambda: s.place(late))

    for program in ("task_broker", "msg_publisher"):
        refused = _refusals_logged(s, program)
        assert len(refused) == 1 and f"from {FOREIGN} to {program}: not in ALLOWED_CLIENTS" in refused[0], refused
    out = s.output.read_text()
    assert "ALLOWED_CLIENTS is not set" not in out and "the public ports accept 127.0.0.1" in out
    status = s.supervisorctl("status")
    assert "RUNNING" in status
    report = collect(s.settings, wait=3, du_seconds=None)
    assert report.queue is not None  # status's own SUB (127.0.0.1) is let in
    assert {r["program"] for r in report.refused} == {"task_broker", "msg_publisher"}


def test_the_supervisor_is_locked_and_the_suites_tools_still_get_in(suite, tmp_path):
    import os
    import stat
    import subprocess

    from tests.e2e.harness import BIN

    run = suite.base / "run"
    assert stat.S_IMODE(os.stat(run / "supervisor.sock").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(run / "supervisor.auth").st_mode) == 0o600
    password = json.loads((run / "supervisor.auth").read_text())["password"]
    # the README's command and the harness (supervisorctl -c supervisord.conf) get in
    assert all(state == "RUNNING" for state, _ in suite.programs().values()) and "task_broker" in suite.programs()
    status = subprocess.run([str(BIN / "avoviirscollector"), "status", "--quick"], env=suite.env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "task_broker" in status.stdout, status.stdout + status.stderr
    # without the credentials: refused
    bare = tmp_path / "bare.conf"
    bare.write_text(f"[supervisorctl]\nserverurl=unix://{run}/supervisor.sock\n")
    refused = subprocess.run([str(BIN / "supervisorctl"), "-c", str(bare), "status"], env=suite.env,
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "Server requires authentication" in refused.stdout and "RUNNING" not in refused.stdout
    wrong = subprocess.run([str(BIN / "supervisorctl"), "-c", str(bare), "-u", "avo", "-p", "guess", "status"],
                           env=suite.env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "RUNNING" not in wrong.stdout
    logs = (suite.base / "log" / "supervisord.log").read_text() + suite.output.read_text()
    assert "without any HTTP authentication" not in logs
    assert password not in logs
    out = suite.output.read_text()
    assert out.count("ALLOWED_CLIENTS is not set: every address may connect") == 1
