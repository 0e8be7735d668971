"""task_broker's status publisher on UPDATE_PORT: the server side of a ZeroMQ PUB for SUB peers, on the listener's
plain sockets (``listener.py``), each message followed by a ZMTP PING in the same write.

Why not libzmq's PUB or XPUB (README "Two hosts"): a libzmq SUB (4.2 or newer) arms its heartbeat TTL timer only
when a PING comes, and cancels it on any message; libzmq's PUB sends its PINGs on a timer, not after its data. A
subscriber whose last message from a host was a status, not a PING, therefore never drops that connection when the
host dies without a FIN (its power lost, its link down, its namespace gone), and hears nothing more, ever. A
deployed worker asks only while its last status said tasks wait, so such a worker never asks again: the pair's
chaos run saw both workers stop so after a failover (PINGs every 50 ms had made it rare, not impossible). Here the
last thing a ZMTP 3.1 subscriber got is always a PING, so it drops a dead host within ``HEARTBEAT_TTL`` and
connects again (to the host now holding the address).

Everything else is the listener's: one socket on every IPv6 and IPv4 address, the ``allow`` gate at accept (the
allow-list, counted as task_broker's), heartbeats every ``heartbeat_ivl`` and a 3.1 peer closed when nothing came
from it for ``timeout`` (a SUB answers each PING with a PONG), ZMTP 3.0 peers served without heartbeats, a slow
subscriber's output buffered up to ``max_output`` and the peer dropped beyond it (it connects again), nothing ever
blocking. Only SUB and XSUB peers are accepted. Their subscriptions (ZMTP 3.0's messages ``\\x01topic`` and
``\\x00topic``, and 3.1's SUBSCRIBE and CANCEL commands) choose what each gets, by prefix as libzmq does (the
deployed workers subscribe to everything); any other message from a subscriber is ignored.

:meth:`subscribed` tells the caller that subscriptions came since it last asked (task_broker then publishes its
status at once, as it did on its XPUB: ``avoviirscollector status`` and the HEALTHCHECK need not wait a second).
"""

from __future__ import annotations

from collections.abc import Sequence

from avoviirscollector.broker.zmtp import codec
from avoviirscollector.broker.zmtp.listener import ZmtpListener, _Conn

SUBSCRIBE, CANCEL = b"\x01", b"\x00"


class ZmtpPublisher(ZmtpListener):
    """The publisher (module docstring); the listener's constructor and :meth:`handle`, :meth:`close`,
    :meth:`counts`, :meth:`fileno`."""

    peer_types = {b"SUB": "SUB", b"XSUB": "XSUB"}
    ready_command = codec.ready(b"PUB")
    refusal = "invalid socket type: this is a PUB for SUB peers"

    def __init__(self, port: int, host: str | None = None, **options) -> None:
        super().__init__(port, host, **options)
        self._topics: dict[int, list[bytes]] = {}  # connection -> its subscriptions (a prefix each, repeats kept)
        self._subscribed = 0

    def publish(self, frames: Sequence[bytes]) -> int:
        """Send a message to every subscriber whose subscriptions match its first frame, each followed by a PING;
        to how many it went (a subscriber dropped meanwhile for its output over the cap not counted)."""
        data = codec.encode_message(frames)
        head = frames[0] if frames else b""
        sent = 0
        for conn_id, topics in list(self._topics.items()):
            conn = self._conns.get(conn_id)
            if conn is not None and any(head.startswith(topic) for topic in topics) and self._send_data(conn, data):
                sent += 1
        return sent

    def subscribed(self) -> int:
        """Subscriptions received since the last call."""
        count, self._subscribed = self._subscribed, 0
        return count

    def subscribers(self) -> int:
        """Connections subscribed to anything now."""
        return sum(1 for topics in self._topics.values() if topics)

    # -- what subscribers send -------------------------------------------------------------------------------

    def _on_event(self, conn: _Conn, event: codec.Event) -> None:
        if isinstance(event, codec.Message):
            if conn.ready_at is None:
                raise codec.ProtocolError("a message before the handshake")
            body = event.frames[0] if len(event.frames) == 1 else b""
            if body[:1] in (SUBSCRIBE, CANCEL) and body:
                self._subscription(conn, body[:1] == SUBSCRIBE, body[1:])
        elif isinstance(event, codec.TooLarge):
            pass  # a subscription is never that long: ignored, as any message that is not one
        else:
            super()._on_event(conn, event)

    def _on_command(self, conn: _Conn, command: codec.Command) -> None:
        if conn.ready_at is not None and command.name in (b"SUBSCRIBE", b"CANCEL"):
            self._subscription(conn, command.name == b"SUBSCRIBE", command.data)
        else:
            super()._on_command(conn, command)

    def _subscription(self, conn: _Conn, add: bool, topic: bytes) -> None:
        topics = self._topics.setdefault(conn.id, [])
        if add:
            topics.append(topic)
            self._subscribed += 1
        elif topic in topics:
            topics.remove(topic)

    def _drop(self, conn: _Conn, reason: str, quiet: bool = False) -> None:
        self._topics.pop(conn.id, None)
        super()._drop(conn, reason, quiet)
