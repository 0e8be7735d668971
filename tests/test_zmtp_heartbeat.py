"""The ZMTP listener's heartbeats and its push to silent peers, with real libzmq clients (an option-less pyzmq REQ,
the deployed-style worker loop, the workers' posttroll-1.5 venv) and the listener as a process where it must be
stopped (SIGSTOP: a hung host) or killed (SIGKILL: a dead broker with a request inside), or in a thread."""

from __future__ import annotations

import json
import signal
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from avoviirscollector.broker.zmtp import codec
from avoviirscollector.broker.zmtp.listener import HEARTBEAT_IVL_S, HEARTBEAT_TTL_S
from tests.broker_support import DeployedWorker
from tests.support import free_port, wait_until
from tests.zmtp_support import LEGACY_PYTHON, DelayProxy, LegacyClient, RawPeer, ServerProcess, ThreadedListener

needs_legacy = pytest.mark.skipif(not LEGACY_PYTHON.exists(), reason="no .venv-legacy (make .venv-legacy/.installed)")
IVL, TTL = 1.0, 3.0
#: the deployed worker's pause after an empty reply ("no message received", sleep 1 s, ask again)
WORKER_PAUSE = 1.0


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def servers():
    """Start ServerProcess-es through ``servers(port, *args)``; all killed at the end."""
    started: list[ServerProcess] = []

    def start(port: int, *args: str) -> ServerProcess:
        started.append(ServerProcess(port, *args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def next_event(monitor: zmq.Socket, kind: int, timeout: float) -> float | None:
    """When the REQ's monitor reported ``kind`` next (time.monotonic), None if not within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if monitor.poll(int(left * 1000)) and recv_monitor_message(monitor)["event"] == kind:
            return time.monotonic()
    return None


@pytest.mark.parametrize(("ivl", "ttl"), [(IVL, TTL), (HEARTBEAT_IVL_S, HEARTBEAT_TTL_S)], ids=["short", "defaults"])
def test_an_option_less_req_drops_a_stopped_server_within_the_ttl_and_is_served_once_it_resumes(context, servers,
                                                                                                 ivl, ttl):
    port = free_port()
    server = servers(port, "--ivl", str(ivl), "--ttl", str(ttl), "--timeout", str(ttl))
    req = context.socket(zmq.REQ)  # no options, as the deployed worker's
    monitor = req.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    req.connect(f"tcp://127.0.0.1:{port}")
    req.send(b"first")
    assert req.poll(5000) and req.recv() == b"re:first"
    time.sleep(1.5 * ivl)  # a PING or two after the reply
    server.signal(signal.SIGSTOP)  # the host hangs: no FIN, no RST, nothing
    stopped = time.monotonic()
    dropped = next_event(monitor, zmq.EVENT_DISCONNECTED, ttl + 5)
    assert dropped is not None, "the REQ kept its connection to the stopped server"
    assert dropped - stopped <= ttl + 2, f"dropped {dropped - stopped:.1f} s after the stop"
    req.send(b"meanwhile")  # queued in the REQ's pipe while it reconnects
    assert not req.poll(1000)
    server.signal(signal.SIGCONT)
    assert req.poll(10000), "the request sent meanwhile was not served after the server resumed"
    assert req.recv() == b"re:meanwhile"
    print(f"option-less REQ dropped the stopped server's connection {dropped - stopped:.2f} s after SIGSTOP "
          f"(TTL {ttl} s, PING every {ivl} s)")


def test_the_listener_pings_and_closes_a_peer_that_stops_answering():
    """Two peers: one answers every PING, one answers none. The silent one is closed after the timeout; the one that
    answers is kept for as long as it answers (it is answered throughout, also while the count is read: a busy host
    that delays the count must not let its PONGs lapse)."""
    with ThreadedListener(heartbeat_ivl=0.3, heartbeat_ttl=2.0, timeout=1.0) as server:
        answering, silent = RawPeer(server.port), RawPeer(server.port)
        pings, silent_events, silent_closed = 0, [], False
        deadline, give_up = time.monotonic() + 2.5, time.monotonic() + 10
        while time.monotonic() < deadline or (not silent_closed and time.monotonic() < give_up):
            events, closed = answering.events(0.1)
            assert not closed
            for event in events:
                if isinstance(event, codec.Command) and event.name == b"PING":
                    assert codec.parse_ping(event.data) == (2.0, b"")
                    answering.send(codec.pong(b""))
                    pings += 1
            if not silent_closed:
                got, silent_closed = silent.events(0.01)
                silent_events += got
        counted = server.call(lambda listener: listener.counts()["closed heartbeat timeout"])
        events, closed = answering.events(0.01)
        assert not closed
        assert silent_closed, "the listener kept a connection that answered no PING for 10 s (timeout 1 s)"
        assert [event.name for event in silent_events[1:]][:2] == [b"READY", b"PING"]  # a PING at once after READY
        assert pings >= 5
        assert counted == 1
        answering.close()
        silent.close()


def test_a_zmtp_3_0_peer_gets_no_ping_and_is_not_timed_out():
    with ThreadedListener(heartbeat_ivl=0.3, heartbeat_ttl=2.0, timeout=1.0) as server:
        old = RawPeer(server.port, minor=0)
        events, closed = old.events(2.0)
        assert not closed and [type(event).__name__ for event in events] == ["Greeting", "Command"]
        assert events[1].name == b"READY"
        old.send(codec.encode_message([b"", b"still here"]))
        events, closed = old.events(1.0)
        assert not closed and events == [codec.Message([b"", b"re:still here"])]  # no PING after the reply either
        old.close()


def kill_with_a_request_inside(server: ServerProcess) -> None:
    """The broker took the request and its host hangs (SIGSTOP), then dies (SIGKILL)."""
    server.expect("request", 10)
    server.signal(signal.SIGSTOP)
    time.sleep(0.5)
    server.signal(signal.SIGKILL)
    server.proc.wait(10)


def test_a_req_whose_request_died_with_the_server_gets_the_push_then_is_served(context, servers):
    port = free_port()
    first = servers(port, "--hold")
    req = context.socket(zmq.REQ)  # no options
    req.connect(f"tcp://127.0.0.1:{port}")
    req.send(b"lost")
    kill_with_a_request_inside(first)
    second = servers(port, "--push-after", "1")
    assert req.poll(10000), "the REQ still waits for the reply to the request that died"
    assert req.recv() == b""  # "no task": the worker asks again
    took = time.monotonic() - second.started
    assert second.expect("pushed", 1)
    assert took < 5, f"the push came {took:.1f} s after the new server started"
    time.sleep(WORKER_PAUSE)
    req.send(b"next")
    assert req.poll(5000) and req.recv() == b"re:next"
    print(f"the waiting REQ got the push {took:.2f} s after the new server started")


def status_publisher(context: zmq.Context) -> tuple[zmq.Socket, int]:
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    return pub, port


def publish_until(pub: zmq.Socket, length: int, condition, timeout: float, what: str) -> None:
    wait_until(lambda: pub.send_json({"queue length": length}) or condition(), timeout, what, every=0.1)


def test_an_idle_deployed_worker_drops_the_push_at_its_next_send_and_gets_its_real_reply(context, servers):
    port = free_port()
    first = servers(port)
    pub, update_port = status_publisher(context)
    worker = DeployedWorker(port, update_port, ["tir"])
    worker.start()
    try:
        publish_until(pub, 0, lambda: worker.heard, 10, "the worker hears the status")
        first.stop()  # the broker dies while the worker is idle (connected, not asking)
        second = servers(port, "--push-after", "1")
        second.expect("pushed", 10)
        time.sleep(0.5)  # the push reaches the worker's REQ, which is not waiting for anything
        publish_until(pub, 1, lambda: worker.received, 10, "the worker's first task")
        publish_until(pub, 0, lambda: worker.settled, 10, "the worker stops asking")
    finally:
        worker.stop()
    assert not worker.hung and worker.empty == 0  # the pushed empty reply never reached the worker's loop
    assert worker.received[0] == b"re:" + json.dumps({"desired products": ["tir"], "just testing": False}).encode()


@needs_legacy
def test_the_legacy_worlds_req_gets_the_push_when_waiting_and_drops_it_when_idle(servers):
    port = free_port()
    first = servers(port, "--hold")
    waiting = LegacyClient(port)
    try:
        waiting.ask("lost", wait=False)
        kill_with_a_request_inside(first)
        second = servers(port, "--push-after", "1")
        assert waiting.reply() == b""
        took = time.monotonic() - second.started
        assert took < 5, f"the push came {took:.1f} s after the new server started"
        idle = LegacyClient(port)  # connects to the new server and stays idle: it gets a push too
        try:
            wait_until(lambda: second.count("pushed") >= 2, 10, "the idle client pushed too")
            time.sleep(0.5)
            assert idle.ask("idle then asks") == b"re:idle then asks"
        finally:
            idle.close()
        time.sleep(WORKER_PAUSE)
        assert waiting.ask("next") == b"re:next"
    finally:
        waiting.close()


@pytest.mark.parametrize("guard", [0.5, 0.0], ids=["guarded", "unguarded"])
def test_a_request_crossing_the_push_gets_the_empty_reply_so_nothing_is_lost(context, guard):
    """The push is on its way (300 ms of path from the server) when the idle worker sends: its REQ takes the push as
    the reply. With the guard the server answers that request empty too (dropped at the worker's next send);
    without it the real reply is what the worker drops: a task handed out to nobody."""
    with ThreadedListener(push_after=0.5, push_guard=guard) as server:
        proxy = DelayProxy(server.port, 0.3)
        req = context.socket(zmq.REQ)
        req.connect(f"tcp://127.0.0.1:{proxy.port}")
        wait_until(lambda: server.pushes, 10, "the push")
        req.send(b"crossing")  # the push has not arrived yet: nothing to drop
        assert req.poll(5000) and req.recv() == b""  # the push, taken as this request's reply
        wait_until(lambda: server.requests, 5, "the crossing request at the server")
        assert server.requests[0]["at"] - server.pushes[0]["at"] < 0.2
        time.sleep(WORKER_PAUSE)
        req.send(b"next")
        assert req.poll(5000) and req.recv() == b"re:next"
    # what the server answered to "crossing": b"" with the guard (nothing lost), b"re:crossing" without: the REQ
    # dropped it at its next send (a task there would have been handed out to nobody)
    assert [event["after_push"] for event in server.requests] == [guard > 0, False]
