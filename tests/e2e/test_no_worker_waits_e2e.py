"""No worker ever waits for ever: the deployed worker's REQ (no option, blocking ``recv``, never resends) against
task_broker killed or hung with its request inside, on the supervised suite, with tasks queued.

Two clients in every case, both plain REQ sockets with no option set: today's pyzmq, and posttroll 1.5.1's world
(``.venv-legacy``: tests/legacy_req_loop.py). The test only watches them with a deadline.

- task_broker ``kill -9`` between two requests: the next request is answered;
- task_broker SIGSTOPped, the requests sent into it, then ``kill -9``: supervisord restarts it, and both get a reply
  within 15 s of the restart ("no task", pushed to their silent connections); then every task queued before the
  kill is handed out in the end, once (a hand-out in doubt at most once more, and counted);
- task_broker's host hung (the process SIGSTOPped for 60 s) with a request inside: the client's connection drops
  within HEARTBEAT_TTL (+2 s), and when the host is back the client gets a reply and is then served a task, without
  a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from avoviirscollector.granules import GranuleKey
from avoviirscollector.viirs import PRODUCTS, format_name
from tests.broker_support import DeployedWorker, Status
from tests.e2e.chaos import account, log_tails
from tests.e2e.harness import Suite
from tests.legacy import legacy_available
from tests.support import wait_until
from tests.zmtp_support import LegacyClient

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not legacy_available(), reason="no .venv-legacy (posttroll 1.5)")]

TTL = 5  # HEARTBEAT_TTL of these tests
TASKS = 10
ASK = json.dumps({"desired products": ["tir"], "just testing": False})
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class PlainReq:
    """Today's pyzmq REQ with no option; a monitor (which changes nothing) tells when its connection drops."""

    def __init__(self, port: int) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.REQ)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def ask(self) -> None:
        self.sock.send(ASK.encode())

    def reply(self, timeout: float) -> bytes | None:
        return self.sock.recv() if self.sock.poll(int(timeout * 1000)) else None

    def dropped(self, timeout: float) -> float | None:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.monitor.poll(100) and recv_monitor_message(self.monitor)["event"] == zmq.EVENT_DISCONNECTED:
                return time.monotonic() - began
        return None

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
        self.context.term()


class LegacyAsker(threading.Thread):
    """The posttroll-1.5 client asking once in a thread of its own (its loop gives up after 60 s)."""

    def __init__(self, client: LegacyClient, after: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.client, self.after = client, after
        self.got: bytes | None = None
        self.at: float | None = None

    def run(self) -> None:
        time.sleep(self.after)
        self.got = self.client.ask(ASK)
        self.at = time.monotonic()


def granule_keys() -> list[GranuleKey]:
    return [GranuleKey("tir", "NOAA-20", NOW - dt.timedelta(hours=2, minutes=3 * n)) for n in range(TASKS)]


@pytest.fixture
def suite(tmp_path):
    """The suite with TASKS tir tasks queued (one granule each, orbits of their own)."""
    with Suite(tmp_path, extra_env={"HEARTBEAT_TTL": str(TTL)}) as running:
        for n, key in enumerate(granule_keys()):
            for segment in PRODUCTS["tir"]:
                running.place(format_name(segment, "j01", key.start_time, key.start_time + dt.timedelta(seconds=85.4),
                                          41000 + n, key.start_time + dt.timedelta(minutes=9)))
        with Status(running.settings.update_port) as status:
            status.wait_for(lambda st: st["queue length"] == TASKS, 90)
        yield running


def restarted(suite: Suite, old: int) -> float:
    """Wait until supervisord runs task_broker again (a new pid); the monotonic time it saw that."""
    wait_until(lambda: suite.programs().get("task_broker", ("", old))[1] not in (None, old), 60,
               "task_broker restarted by supervisord", every=0.05)
    return time.monotonic()


def drain(suite: Suite, already: list[bytes]) -> None:
    """Take every remaining task with a deployed-style worker; every granule handed out, none twice beyond the
    hand-outs counted in doubt."""
    worker = DeployedWorker(suite.settings.task_port, suite.settings.update_port, list(PRODUCTS), hang_after=60)
    worker.start()
    try:
        wait_until(lambda: not account(set(granule_keys()), already + list(worker.received)).lost, 60,
                   lambda: f"every queued task handed out\n{log_tails(suite, ['task_broker'])}")
    finally:
        worker.stop()
    assert not worker.hung
    with Status(suite.settings.update_port) as status:
        in_doubt = status.wait_for(lambda st: "in doubt (24 h)" in st, 10)["in doubt (24 h)"]
    result = account(set(granule_keys()), already + list(worker.received))
    assert sum(times - 1 for times in result.twice.values()) <= in_doubt, (result.summary(), in_doubt)


def tasks_of(replies: list[bytes | None]) -> list[bytes]:
    return [reply for reply in replies if reply and reply.startswith(b"pytroll://")]


def test_a_kill_between_two_requests_costs_the_next_request_nothing(suite):
    modern, legacy = PlainReq(suite.settings.task_port), LegacyClient(suite.settings.task_port)
    try:
        modern.ask()
        replies = [modern.reply(10), legacy.ask(ASK)]
        assert len(tasks_of(replies)) == 2
        old = suite.pid("task_broker")
        os.kill(old, signal.SIGKILL)
        restarted(suite, old)
        modern.ask()
        replies += [modern.reply(30), legacy.ask(ASK)]
        assert all(reply is not None for reply in replies), replies
    finally:
        modern.close()
        legacy.close()
    drain(suite, tasks_of(replies))


def test_requests_inside_a_killed_broker_are_answered_within_15_s_of_its_restart(suite):
    modern, legacy = PlainReq(suite.settings.task_port), LegacyClient(suite.settings.task_port)
    try:
        old = suite.pid("task_broker")
        os.kill(old, signal.SIGSTOP)
        modern.ask()
        asker = LegacyAsker(legacy)
        asker.start()
        time.sleep(1)  # both requests are in the stopped process's socket buffers
        os.kill(old, signal.SIGKILL)
        back = restarted(suite, old)
        first = modern.reply(30)
        modern_at = time.monotonic()
        asker.join(60)
        assert first is not None and asker.got is not None, log_tails(suite, ["task_broker"])
        took = [modern_at - back, asker.at - back]
        print(f"\nreplies after task_broker's restart: pyzmq {took[0]:.1f} s, posttroll 1.5 {took[1]:.1f} s")
        assert max(took) <= 15, took
        time.sleep(1)  # the deployed loop after an empty reply: "no message received", 1 s, ask again
        modern.ask()  # each asks again and is served
        replies = [first, asker.got, modern.reply(30), legacy.ask(ASK)]
        assert len(tasks_of(replies[2:])) == 2, replies
    finally:
        modern.close()
        legacy.close()
    drain(suite, tasks_of(replies))


def test_a_host_that_hung_for_a_minute_is_dropped_within_the_ttl_and_serves_when_back(suite):
    modern, legacy = PlainReq(suite.settings.task_port), LegacyClient(suite.settings.task_port)
    try:
        modern.ask()
        replies = [modern.reply(10)]  # connected and served: its last word from the broker was a reply
        pid = suite.pid("task_broker")
        os.kill(pid, signal.SIGSTOP)
        hung = time.monotonic()
        try:
            modern.ask()  # inside the hung host
            asker = LegacyAsker(legacy, after=25)  # into a connection made while the host hangs (its loop waits 60 s)
            asker.start()
            dropped = modern.dropped(TTL + 10)
            time.sleep(max(0.0, 60 - (time.monotonic() - hung)))
        finally:
            os.kill(pid, signal.SIGCONT)
        back = time.monotonic()
        print(f"\nthe pyzmq REQ dropped the hung host after {dropped} s (TTL {TTL} s)")
        assert dropped is not None and dropped <= TTL + 2, dropped
        first = modern.reply(30)
        print(f"the request inside the hung host answered {time.monotonic() - back:.1f} s after it came back")
        asker.join(60)
        assert first is not None and asker.got is not None, log_tails(suite, ["task_broker"])
        time.sleep(1)  # the deployed loop after an empty reply
        modern.ask()
        replies += [first, asker.got, modern.reply(30), legacy.ask(ASK)]
        assert len(tasks_of(replies[3:])) == 2, replies
    finally:
        modern.close()
        legacy.close()
    drain(suite, tasks_of(replies))
