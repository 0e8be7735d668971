"""msg_publisher as a real process with a real posttroll nameserver: follows publishers that start later,
republishes in the legacy encoding, is not held up by a subscriber that never reads, and stops on SIGTERM."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import posttroll
import pytest
import zmq
from posttroll.message import Message
from posttroll.publisher import Publish

from tests.e2e.harness import Sub
from tests.legacy import legacy_rule_violations
from tests.support import free_ports, wait_for_port, wait_until

BIN = Path(sys.executable).parent


@pytest.fixture
def stack(tmp_path, loopback_only):
    publish, ns, bcast, addr = free_ports(4)
    env = {**os.environ, "VIIRS_BASE": str(tmp_path), "PUBLISH_PORT": str(publish),
           "POSTTROLL_NAMESERVER_PORT": str(ns), "POSTTROLL_BROADCAST_PORT": str(bcast),
           "POSTTROLL_ADDRESS_PUBLISH_PORT": str(addr)}
    procs = []
    # this process's own posttroll publishers (the test's) must use the same nameserver ports
    with posttroll.config.set(nameserver_port=ns, broadcast_port=bcast, address_publish_port=addr):
        yield from _run(env, procs, tmp_path, publish)


def _run(env, procs, tmp_path, publish):
    try:
        procs.append(subprocess.Popen([str(BIN / "nameserver"), "--no-multicast"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(int(env["POSTTROLL_NAMESERVER_PORT"]))
        log_path = tmp_path / "msg_publisher.log"
        log = open(log_path, "w")
        procs.append(subprocess.Popen([str(BIN / "msg_publisher")], env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: "publishing the internal bus" in log_path.read_text(), 15, "msg_publisher started")
        yield publish, procs[-1], log_path
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def send_until_received(pub, sub, make, timeout=15.0) -> str:
    """Send ``make()``'s message every 0.3 s until something comes out of ``sub`` (the first message, raw): the
    subscriptions are made in the background after each start."""

    def sent_and_heard() -> str | None:
        pub.send(make().encode())
        return sub.recv_raw(0.3)

    return wait_until(sent_and_heard, timeout, "a message through msg_publisher", every=0)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_follows_a_later_publisher_and_converts(stack, host):
    port, proc, _ = stack
    sub = Sub(port, "pytroll://AVO/viirs/sdr", host=host)  # PUBLISH_PORT listens on IPv4 and IPv6
    try:  # the publisher starts after msg_publisher is up (the stack waited for its start line)
        ak = dt.timezone(dt.timedelta(hours=-9))
        with Publish("trollstalker_test", nameservers=["localhost"]) as pub:
            raw = send_until_received(pub, sub, lambda: Message(
                "/AVO/viirs/sdr", "file", {"uid": "x.h5", "start_time": dt.datetime(2026, 1, 1, 1, tzinfo=ak)}))
    finally:
        sub.close()
    assert legacy_rule_violations(raw) == []
    assert Message.decode(raw).data["start_time"] == dt.datetime(2026, 1, 1, 10)


def send_batch_and_receive(pub, sub: Sub, uids: range, pad: str, got: set[str]) -> None:
    """Publish one message per uid, then add what ``sub`` receives to ``got`` until the batch is in (10 s at most)."""
    for i in uids:
        pub.send(Message("/AVO/viirs/sdr", "file", {"uid": f"{i}", "pad": pad}).encode())
    deadline = time.monotonic() + 10
    while len(got) < uids.stop and time.monotonic() < deadline:
        raw = sub.recv_raw(0.5)
        if raw is not None and '"pad"' in raw:
            got.add(Message.decode(raw).data["uid"])


def test_a_subscriber_that_never_reads_does_not_block(stack):
    port, proc, _ = stack
    ctx = zmq.Context.instance()
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 10)
    stuck.setsockopt(zmq.RCVBUF, 4096)
    stuck.setsockopt_string(zmq.SUBSCRIBE, "")
    stuck.connect(f"tcp://127.0.0.1:{port}")
    fast = Sub(port, "pytroll://AVO")
    try:
        with Publish("trollstalker_test", nameservers=["localhost"]) as pub:
            send_until_received(pub, fast, lambda: Message("/AVO/warmup", "file", {"uid": "w"}))
            big = "x" * 20000
            sent = 3000  # ~60 MB in all: far more than the stuck subscriber's buffers
            got: set[str] = set()

            for batch in range(0, sent, 100):  # batches, so the test's own publisher never hits its HWM
                send_batch_and_receive(pub, fast, range(batch, batch + 100), big, got)
    finally:
        fast.close()
        stuck.close(linger=0)
    assert proc.poll() is None
    # the reading subscriber got everything although the other one read nothing
    assert got == {str(i) for i in range(sent)}


def test_sigterm_stops_it_within_two_seconds(stack):
    port, proc, log = stack  # up: its signal handlers are in place before its start line
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - start < 2
    assert "stopped after forwarding" in log.read_text()
