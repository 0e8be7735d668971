"""Subscribers come back by themselves: a plain subscriber that sets no option (the deployed workers' status SUB,
a dashboard on PUBLISH_PORT) hears task_broker and msg_publisher again after they hung for longer than
``HEARTBEAT_TTL`` and after they were killed and restarted.

A hang is the program SIGSTOPped (its host frozen: the kernel still accepts connections, nothing answers); a crash is
``kill -9`` (supervisord restarts it).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import zmq

from avoviirscollector.heartbeat import interval_seconds
from tests.e2e.harness import Suite
from tests.support import wait_until

pytestmark = pytest.mark.e2e

TTL = 4  # seconds: HEARTBEAT_TTL of these tests (the default is 10)


class PlainSub:
    """A SUB with no option set (subscribes to everything)."""

    def __init__(self, context: zmq.Context, port: int) -> None:
        self.sock = context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def heard(self, timeout: float) -> bool:
        """A message within ``timeout`` seconds (what was queued before is read first)."""
        return bool(self.sock.poll(int(timeout * 1000))) and self.sock.recv() is not None

    def drain(self) -> None:
        while self.sock.poll(0):
            self.sock.recv()

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def suite(tmp_path):
    with Suite(tmp_path, extra_env={"HEARTBEAT_TTL": str(TTL)}) as running:
        yield running


def test_the_status_and_bus_subscribers_hear_the_suite_again_after_a_hang_and_after_a_crash(suite):
    """The deployed workers' status SUB on UPDATE_PORT and a dashboard on PUBLISH_PORT, setting nothing: after
    task_broker and msg_publisher hung for longer than the TTL, and after each was killed and restarted by
    supervisord, both hear again by themselves."""
    suite.wait_flowing()
    context = zmq.Context()
    status = PlainSub(context, suite.settings.update_port)
    dashboard = PlainSub(context, suite.settings.publish_port)
    try:
        assert status.heard(5)
        pids = [suite.pid("task_broker"), suite.pid("msg_publisher")]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(TTL + interval_seconds(TTL) + 2)  # the hang itself: longer than the TTL
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        status.drain()
        assert status.heard(TTL + 5), "the status SUB never heard task_broker again after its hang"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all(suite.programs()[name][1] not in (None, pid)
                               for name, pid in zip(("task_broker", "msg_publisher"), pids, strict=True)), 60,
                   "task_broker and msg_publisher restarted")
        status.drain()
        dashboard.drain()
        assert status.heard(10), "the status SUB heard nothing from the restarted task_broker"
        suite.wait_flowing(timeout=60)  # probe granules through the suite: their messages reach 29092 again
        assert dashboard.heard(5), "the dashboard heard nothing from the restarted msg_publisher"
    finally:
        status.close()
        dashboard.close()
        context.term()
