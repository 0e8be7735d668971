"""ZMTP heartbeats on the public ZeroMQ sockets, so that a dead or hung peer is dropped at both ends.

A host that loses power or hangs sends no FIN: without heartbeats a worker blocked in ``recv`` on a half-open
connection waits for ever (TCP keepalive is off by default, and a REQ waiting for its reply sends nothing). ZeroMQ
3.1's heartbeats fix that from the server's side alone: the suite's socket sends a PING every ``HEARTBEAT_TTL / 5``
seconds carrying the TTL, and a client on libzmq 4.2 or newer (pyzmq, posttroll 1.5 with a recent libzmq), which
sets no option itself, closes a connection on which nothing has come for the TTL and connects again by itself; the
suite's side closes a connection whose peer has answered no PING for the TTL. A client on libzmq older than 4.2 speaks
ZMTP 3.0: it gets no PING and drops nothing (it relies on TCP, as before).

msg_publisher's PINGs go out every :data:`PUBLISHER_PING_SECONDS` (50 ms), not every fifth of the TTL. libzmq
arms a connection's TTL timer only when a PING comes and cancels it when any message comes: a subscriber whose last
message from a host was data, not a PING, never drops that host's connection when the host's link dies (no FIN),
and hears nothing more, for ever. A PING 50 ms after each message leaves that only to a link that dies within those
50 ms. task_broker's two ports are served by our own ZMTP servers instead, which end every reply and every status
with a PING (broker/zmtp/), so their peers always drop a dead host: a worker's SUB that stayed on a dead host
would never ask again (seen in the pair's chaos run, tests/e2e/test_pair_chaos.py).

Setting: ``HEARTBEAT_TTL`` (seconds, default 10; config.py).
"""

from __future__ import annotations

import zmq


def interval_seconds(ttl: float) -> float:
    """How often a PING goes out: a fifth of the TTL, at least every second."""
    return max(1.0, ttl / 5)


#: how often msg_publisher's PUB sends a PING: see the module docstring
PUBLISHER_PING_SECONDS = 0.05


def send_heartbeats(sock: zmq.Socket, ttl: float, interval: float | None = None) -> None:
    """Heartbeats with ``ttl`` (seconds) on every connection ``sock`` makes or accepts from now on (set before bind),
    a PING every ``interval`` seconds (default :func:`interval_seconds`; publishers: PUBLISHER_PING_SECONDS)."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, int((interval or interval_seconds(ttl)) * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TTL, int(ttl * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(ttl * 1000))
