"""bus.Follower with a real nameserver: a publisher whose address announcement was missed is still found."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import posttroll
from posttroll.message import Message
from posttroll.publisher import Publish

from avoviirscollector.bus import Follower
from tests.support import free_ports, wait_for_port, wait_until

BIN = Path(sys.executable).parent


def collect(follower: Follower, received: list[Message], stop: threading.Event) -> None:
    """The follower's messages into ``received`` until ``stop`` is set."""
    for msg in follower.recv(timeout=0.2):
        if msg is not None:
            received.append(msg)
        if stop.is_set():
            return


def test_publisher_missed_by_the_announcements_is_found_by_asking_the_nameserver(caplog, loopback_only):
    ns, bcast, addr, deaf = free_ports(4)
    env = {**os.environ, "POSTTROLL_NAMESERVER_PORT": str(ns), "POSTTROLL_BROADCAST_PORT": str(bcast),
           "POSTTROLL_ADDRESS_PUBLISH_PORT": str(addr)}
    server = subprocess.Popen([str(BIN / "nameserver"), "--no-multicast"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    received: list[Message] = []
    stop = threading.Event()
    try:
        wait_for_port(ns)
        # the follower listens for announcements on a port where nobody announces: it hears none of them
        with posttroll.config.set(nameserver_port=ns, broadcast_port=bcast, address_publish_port=deaf), \
                caplog.at_level(logging.WARNING, logger="bus"), Follower(["/test"], refresh=0.5) as follower:
            reader = threading.Thread(target=collect, args=(follower, received, stop))
            reader.start()
            try:
                with Publish("late_publisher", nameservers=["localhost"]) as pub:
                    wait_until(lambda: received or pub.send(Message("/test/x", "info", {"n": 1}).encode()), 15,
                               "the late publisher's message", 0.2)  # sent until it is received
            finally:
                stop.set()
                reader.join(timeout=5)
    finally:
        server.kill()
        server.wait()
    assert received and received[0].subject == "/test/x"
    assert any("which the address announcements missed" in r.getMessage() for r in caplog.records)
