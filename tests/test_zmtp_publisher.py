"""task_broker's status publisher (``broker/zmtp/publisher.py``) with real libzmq subscribers: what it sends to whom,
and why it exists: a subscriber whose last message from a host was data drops that host when it stops answering
(SIGSTOP: a hung host, or one gone without a FIN), because a PING follows every message; beside it, libzmq's own
XPUB with heartbeats on a timer, stopped right after a message, is never dropped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import zmq

from avoviirscollector.broker.zmtp.publisher import ZmtpPublisher
from tests.support import free_port

TTL = 2.0

# Binds PORT (ours: the publisher; libzmq: an XPUB with heartbeats every 5 s and that TTL), waits for one subscription,
# publishes one message and says so on stdout; then idles (the test stops it)
PUBLISHER = """
import sys, time, zmq
kind, port, ttl = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if kind == "ours":
    from avoviirscollector.broker.zmtp.publisher import ZmtpPublisher
    pub = ZmtpPublisher(port, "127.0.0.1", heartbeat_ivl=5.0, heartbeat_ttl=ttl, timeout=60.0)
    while not pub.subscribed():
        pub.handle(0.05)
    pub.publish([b"status"])
    for _ in range(10):
        pub.handle(0.01)
else:
    sock = zmq.Context().socket(zmq.XPUB)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 5000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, int(ttl * 1000))
    sock.bind(f"tcp://127.0.0.1:{port}")
    sock.recv()
    sock.send(b"status")
    time.sleep(0.1)
print("published", flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def serve(publisher: ZmtpPublisher, until, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        publisher.handle(0.01)


def test_each_subscriber_gets_what_it_subscribed_to_and_a_new_subscription_is_told(context):
    publisher = ZmtpPublisher(0, "127.0.0.1", heartbeat_ivl=1.0, heartbeat_ttl=TTL, timeout=5.0)
    try:
        everything, some = context.socket(zmq.SUB), context.socket(zmq.SUB)
        everything.setsockopt(zmq.SUBSCRIBE, b"")
        some.setsockopt(zmq.SUBSCRIBE, b"tir")
        for sock in (everything, some):
            sock.connect(f"tcp://127.0.0.1:{publisher.port}")
        told = []
        serve(publisher, lambda: told.append(publisher.subscribed()) or sum(told) >= 2)
        assert sum(told) == 2 and publisher.subscribers() == 2
        assert publisher.publish([b"btd 1"]) == 1 and publisher.publish([b"tir 2", b"more"]) == 2
        serve(publisher, lambda: everything.poll(0) and some.poll(0))
        assert everything.recv() == b"btd 1" and everything.recv_multipart() == [b"tir 2", b"more"]
        assert some.recv_multipart() == [b"tir 2", b"more"] and not some.poll(100)
        some.setsockopt(zmq.UNSUBSCRIBE, b"tir")
        serve(publisher, lambda: publisher.subscribers() == 1)
        assert publisher.publish([b"tir 3"]) == 1
        req = context.socket(zmq.REQ)  # not a subscriber: refused at the handshake
        req.connect(f"tcp://127.0.0.1:{publisher.port}")
        serve(publisher, lambda: publisher.counts().get("closed protocol error", 0) >= 1)
        assert publisher.counts().get("closed protocol error") == 1
    finally:
        publisher.close()


def disconnected_after_stop(context: zmq.Context, kind: str, wait: float) -> float | None:
    """Start the ``kind`` publisher, subscribe, take its one message, SIGSTOP it: seconds until the SUB (no option
    set) dropped the connection, or None within ``wait``."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, kind, str(port), str(TTL)], stdout=subprocess.PIPE,
                            text=True)
    sub = context.socket(zmq.SUB)
    monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        assert sub.poll(10000) and sub.recv() == b"status"
        assert proc.stdout.readline().strip() == "published"
        proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        if monitor.poll(int(wait * 1000)):
            return time.monotonic() - stopped
        return None
    finally:
        sub.disable_monitor()
        monitor.close(linger=0)
        sub.close(linger=0)
        proc.kill()
        proc.wait()


def test_a_subscriber_whose_last_message_was_a_status_drops_a_stopped_publisher_within_the_ttl(context):
    ours = disconnected_after_stop(context, "ours", TTL + 3)
    assert ours is not None and ours <= TTL + 1.0, ours
    theirs = disconnected_after_stop(context, "libzmq", TTL + 3)
    print(f"\nSUB dropped the stopped publisher: ours after {ours:.2f} s; libzmq's XPUB: "
          f"{'never' if theirs is None else f'{theirs:.2f} s'} within {TTL + 3:.0f} s")
    assert theirs is None  # why this publisher exists: the SUB keeps the dead connection for ever
