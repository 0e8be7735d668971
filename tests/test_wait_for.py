"""avo_wait_for with a real nameserver: the command starts only once the service is registered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import posttroll
from posttroll.publisher import Publish

from tests.support import free_ports

BIN = Path(sys.executable).parent


def test_waits_for_the_service_then_execs_the_command(tmp_path, loopback_only):
    ns, bcast, addr = free_ports(3)
    env = {**os.environ, "POSTTROLL_NAMESERVER_PORT": str(ns), "POSTTROLL_BROADCAST_PORT": str(bcast),
           "POSTTROLL_ADDRESS_PUBLISH_PORT": str(addr)}
    marker = tmp_path / "started"
    server = subprocess.Popen([str(BIN / "nameserver"), "--no-multicast"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    waiter = subprocess.Popen([str(BIN / "avo_wait_for"), "late_service", "--", "/bin/sh", "-c",
                               f"echo $$ > {marker}"], env=env)
    try:
        time.sleep(3)  # three seconds with nothing registered: still waiting
        assert not marker.exists()
        with posttroll.config.set(nameserver_port=ns, broadcast_port=bcast, address_publish_port=addr), \
                Publish("late_service", nameservers=["localhost"]):
            assert waiter.wait(timeout=15) == 0
        # exec'd in place: the command ran with the waiter's own pid
        assert int(marker.read_text()) == waiter.pid
    finally:
        waiter.kill()
        server.kill()
        waiter.wait()
        server.wait()


def test_starts_anyway_after_the_timeout(tmp_path):
    result = subprocess.run([str(BIN / "avo_wait_for"), "--timeout", "1", "nobody", "--", "/bin/echo", "ran"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == "ran\n"
    assert "nobody not registered after 1 s; starting anyway" in result.stderr


def test_a_stop_while_waiting_exits_zero_without_starting_the_command(tmp_path):
    marker = tmp_path / "started"
    proc = subprocess.Popen([str(BIN / "avo_wait_for"), "never_registered_service", "--", "/bin/sh", "-c",
                             f"touch {marker}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.5)  # waiting by now (nothing shows it: it prints only when it gives up)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # supervisord stops a gatherer that way, even before it started
    assert proc.wait(5) == 0, proc.stdout.read()
    assert time.monotonic() - started < 2.0
    assert not marker.exists()
