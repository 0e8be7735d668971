"""The ZMTP listener (avoviirscollector/broker/zmtp/listener.py) against real libzmq clients on loopback: pyzmq's
REQ and DEALER (libzmq 4.3.5), a plain REQ in the workers' posttroll-1.5 venv, peers done by hand; the listener in a
thread (its loop as task_broker's will be, a zmq.Poller with the listener beside a zmq socket) or, where it must be
stopped or killed, as a process. Heartbeats and the push to silent peers are in test_zmtp_heartbeat.py."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import threading
import time

import pytest
import zmq

from avoviirscollector.access import Gate, RefusalLog
from avoviirscollector.allowlist import parse_allowlist
from avoviirscollector.broker.zmtp import codec
from avoviirscollector.broker.zmtp import listener as listener_module
from tests.support import free_port, percentile, wait_until
from tests.zmtp_support import (
    LEGACY_PYTHON,
    LegacyClient,
    RawPeer,
    ServerProcess,
    ThreadedListener,
    connected,
    silent_crowd,
    vanishing_peers,
)


@pytest.fixture
def server():
    with ThreadedListener() as running:
        yield running


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def round_trips(sock: zmq.Socket, count: int, tag: str = "r", timeout_ms: int = 5000) -> list[bytes]:
    """``count`` requests on a REQ, one at a time; every reply (an AssertionError if one does not come)."""
    replies = []
    for index in range(count):
        sock.send(f"{tag}{index}".encode())
        assert sock.poll(timeout_ms), f"no reply to request {index}"
        replies.append(sock.recv())
        assert not sock.poll(0)
    return replies


def test_a_req_gets_exactly_one_reply_per_request(server, context):
    req = connected(context, zmq.REQ, server.port)
    assert round_trips(req, 200) == [f"re:r{index}".encode() for index in range(200)]
    time.sleep(0.3)
    assert not req.poll(0)  # nothing more came (the PINGs after each reply are not messages)
    info = server.call(lambda listener: listener.info(server.requests[0]["conn"]))
    assert info.socket_type == "REQ" and info.zmtp_minor == 1 and info.requested and not info.pending
    assert len(server.requests) == 200


def test_a_dealer_sending_ahead_is_answered_in_order_and_nothing_is_lost(server, context):
    dealer = connected(context, zmq.DEALER, server.port)
    for index in range(50):
        dealer.send_multipart([b"", f"d{index}".encode()])
    replies = []
    while len(replies) < 50 and dealer.poll(5000):
        replies.append(dealer.recv_multipart())
    assert replies == [[b"", f"re:d{index}".encode()] for index in range(50)]
    dealer.send_multipart([b"no-delimiter"])  # a DEALER may send anything: frames are handed out as they came
    assert dealer.poll(5000) and dealer.recv_multipart() == [b"re:no-delimiter"]


def test_many_reqs_at_once_each_get_their_own_replies(server, context):
    reqs = [connected(context, zmq.REQ, server.port) for _ in range(20)]
    for turn in range(10):
        for index, req in enumerate(reqs):
            req.send(f"{index}.{turn}".encode())
        for index, req in enumerate(reqs):
            assert req.poll(5000) and req.recv() == f"re:{index}.{turn}".encode()


@pytest.mark.skipif(not LEGACY_PYTHON.exists(), reason="no .venv-legacy (make .venv-legacy/.installed)")
def test_the_workers_posttroll_1_5_world_gets_one_reply_per_request(server):
    client = LegacyClient(server.port)
    try:
        assert client.versions["posttroll"] == "1.5.1"
        assert [client.ask(f"w{index}") for index in range(30)] == [f"re:w{index}".encode() for index in range(30)]
    finally:
        client.close()
    assert [event["body"] for event in server.requests] == [f"w{index}" for index in range(30)]


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(os.environ.get("AVO_IN_LOOPBACK_NETNS") != "1",
                    reason="listens on every address: only inside the loopback-only network namespace (make test)")
@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 on this host")
def test_ipv4_and_ipv6_peers_on_one_socket_ipv4_shown_as_ipv4(context):
    with ThreadedListener(host=None) as server:
        for host in ("127.0.0.1", "::1"):
            req = connected(context, zmq.REQ, server.port, host)
            assert round_trips(req, 3, tag=host) == [f"re:{host}{index}".encode() for index in range(3)]
        assert {event["peer"] for event in server.requests} == {"127.0.0.1", "::1"}


@pytest.mark.skipif(os.environ.get("AVO_IN_LOOPBACK_NETNS") != "1",
                    reason="listens on every address: only inside the loopback-only network namespace (make test)")
def test_on_a_host_without_ipv6_it_listens_on_ipv4_alone(monkeypatch, context):
    bound = listener_module._bound

    def no_ipv6(family, host, port):
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return bound(family, host, port)

    monkeypatch.setattr(listener_module, "_bound", no_ipv6)
    with ThreadedListener(host=None) as server:
        assert server.listener._sock.family == socket.AF_INET
        assert round_trips(connected(context, zmq.REQ, server.port), 2) == [b"re:r0", b"re:r1"]


def test_refused_peers_are_closed_before_the_handshake_counted_and_logged_once(tmp_path, context, caplog):
    gate = Gate(parse_allowlist("10.9.9.9"), RefusalLog("task_broker", logging.getLogger("task_broker"), tmp_path))
    allow = functools.partial(gate.admits, where="task_broker")  # as task_broker will pass its ZAP handler's gate
    with ThreadedListener(host="127.0.0.1", allow=allow) as server, caplog.at_level(logging.WARNING):
        raw = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.2", 0), timeout=5)
        assert raw.recv(100) == b""  # closed without a byte of greeting
        raw.close()
        foreign = connected(context, zmq.REQ, server.port, source="127.0.0.2")
        foreign.send(b"let me in")
        assert not foreign.poll(1500)
        local = connected(context, zmq.REQ, server.port)  # 127.0.0.1: always allowed
        assert round_trips(local, 2) == [b"re:r0", b"re:r1"]
        assert server.call(lambda listener: listener.counts()["refused"]) >= 2
    assert gate.refusals.counts["peers"]["127.0.0.2"]["count"] >= 2
    refused_lines = [r for r in caplog.records if "refused a connection from 127.0.0.2" in r.getMessage()]
    assert len(refused_lines) == 1
    assert [event["body"] for event in server.requests] == ["r0", "r1"]


def test_the_64_kib_limit_a_bigger_request_is_answered_with_an_error_and_serving_goes_on(server, context):
    req = connected(context, zmq.REQ, server.port)
    req.send(b"a" * (64 * 1024 - 3))  # with "re:" the reply is 64 KiB: within the limit
    assert req.poll(5000) and req.recv() == b"re:" + b"a" * (64 * 1024 - 3)
    for size in (64 * 1024 + 1, 5 * 1024 * 1024):
        req.send(b"b" * size)
        assert req.poll(10000)
        assert json.loads(req.recv()) == {"error": f"request is {size} bytes"}
        assert round_trips(req, 1) == [b"re:r0"]
    dealer = connected(context, zmq.DEALER, server.port)
    dealer.send_multipart([b"", b"c" * 40000, b"c" * 40000])  # over the limit in total
    assert dealer.poll(5000) and dealer.recv_multipart() == [b"", b'{"error": "request is 80000 bytes"}']


def served_meanwhile(server: ThreadedListener, context: zmq.Context, action, seconds: float = 1.0) -> list[float]:
    """Run ``action()`` in a thread while a REQ asks all along; the REQ's reply times (every request answered)."""
    req = connected(context, zmq.REQ, server.port)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (action(), done.set()), daemon=True)
    latencies = []
    thread.start()
    until = time.monotonic() + seconds
    while not done.is_set() or time.monotonic() < until:
        sent = time.perf_counter()
        req.send(b"ping")
        assert req.poll(5000), "the real REQ was not answered"
        assert req.recv() == b"re:ping"
        latencies.append(time.perf_counter() - sent)
    thread.join(30)
    return latencies


def test_a_300_mib_frame_closes_only_that_connection(server, context):
    def oversized():
        peer = RawPeer(server.port)
        peer.send(codec.frame_header(0, codec.MORE) + codec.frame_header(300 * 1024 * 1024) + b"x" * 1000)
        _, closed = peer.events(5)
        assert closed
        peer.close()

    served_meanwhile(server, context, oversized)
    assert server.call(lambda listener: listener.counts()["closed protocol error"]) == 1


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 4,
                                     codec.greeting() + b"\x08\x00", codec.greeting() + codec.ready(b"REQ") + b"\xff"],
                         ids=["http", "bytes", "reserved-flag-before-ready", "reserved-flag-after-ready"])
def test_garbage_closes_only_that_connection(server, context, garbage):
    def send_garbage():
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(garbage)
            while raw.recv(65536):
                pass  # until the server closes it

    served_meanwhile(server, context, send_garbage)
    assert server.call(lambda listener: listener.counts()["closed protocol error"]) == 1


def test_other_socket_types_get_an_error_command_and_are_closed(server):
    peer = RawPeer(server.port, socket_type=b"PUB")
    events, closed = peer.events(5)
    assert closed and events[0].major == 3
    assert events[1] == codec.Command(b"ERROR", events[1].data) and b"invalid socket type" in events[1].data
    peer.close()
    assert server.call(lambda listener: listener.counts()).get("handshakes ZMTP 3.1") is None


def test_a_reply_to_a_connection_that_has_gone_returns_false(context):
    with ThreadedListener(hold=True) as server:
        req = connected(context, zmq.REQ, server.port)
        req.send(b"then I go")
        wait_until(lambda: server.requests, 5, "the request")
        conn = server.requests[0]["conn"]
        req.close(linger=0)
        wait_until(lambda: server.call(lambda listener: listener.info(conn)) is None, 5, "the connection closed")
        assert server.call(lambda listener: listener.reply(conn, [b"", b"task"])) is False


def test_a_reply_after_a_stop_finds_the_connection_the_peer_dropped_meanwhile(context):
    """The listener's process (or host) stops between taking a request and answering it; the peer drops the
    connection meanwhile. The reply must not go into the dead socket (the kernel would take it): False."""
    with ThreadedListener(hold=True) as server:
        req = connected(context, zmq.REQ, server.port)
        req.send(b"taken")
        wait_until(lambda: server.requests, 5, "the request")
        conn = server.requests[0]["conn"]

        def stopped_then_reply(listener):  # the listener's loop does not run in here: as if stopped
            req.close(linger=0)
            time.sleep(1.5)
            return listener.reply(conn, [b"", b"task"])

        assert server.call(stopped_then_reply) is False


def test_a_stalled_peer_is_dropped_at_the_output_cap_and_never_delays_another(context):
    def stalled():
        peer = RawPeer(server.port, socket_type=b"DEALER", rcvbuf=4096)

        def flood():  # requests whose replies (60 KB each) it never reads
            try:
                for _ in range(400):
                    peer.send(codec.encode_message([b"", b"s" * 60000]))
            except OSError:
                pass  # dropped

        threading.Thread(target=flood, daemon=True).start()
        wait_until(lambda: server.call(lambda listener: listener.counts().get("closed output over the cap")), 20,
                   "the stalled peer dropped")
        peer.close()

    with ThreadedListener(max_output=1024 * 1024) as server:
        latencies = served_meanwhile(server, context, stalled)
    assert max(latencies) < 2.0, f"p99 {percentile(latencies, 99)}, max {max(latencies)}"


class AskingAllAlong:
    """A REQ in a thread asking the server on ``port`` until stopped; every reply checked against its request."""

    def __init__(self, context: zmq.Context, port: int) -> None:
        self.req = connected(context, zmq.REQ, port)
        self.answered, self.wrong = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            body = f"real{self.answered}".encode()
            self.req.send(body)
            if not self.req.poll(10000):
                self.wrong.append(f"no reply to {body!r}")
                return
            reply = self.req.recv()
            if reply != b"re:" + body:
                self.wrong.append(f"{reply!r} for {body!r}")
            self.answered += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def test_2000_silent_peers_and_vanishing_ones_while_a_real_req_is_served_throughout(context):
    port = free_port()
    server = ServerProcess(port, "--timeout", "2")
    asking = AskingAllAlong(context, port)
    rss = []
    try:
        for _ in range(4):
            vanishing_peers(port, context)
            silent_crowd(port, 2000, 15)
            rss.append(server.rss_kb())
        before = asking.answered
        wait_until(lambda: asking.answered > before + 10, 10, "the real REQ still served")
    finally:
        asking.stop()
        server.stop()
    assert asking.wrong == [] and asking.answered > 100
    print(f"real requests answered: {asking.answered}; server RSS after each round (kB): {rss}")
    assert rss[-1] - rss[1] < 3 * 1024, rss
