"""A ZMTP listener of our own: the server side of a ZeroMQ ROUTER for REQ and DEALER peers, on plain sockets.

Why not libzmq's ROUTER (notes/ha.md): a deployed worker's REQ waits for ever for the reply to a request that died
with a broker process or host, and a libzmq ROUTER can neither reach a peer that has sent nothing since it connected
nor make an option-less client notice a dead host. This listener knows every connection from its handshake on and
sends ZMTP 3.1 heartbeats, so that:

- every ``heartbeat_ivl`` seconds (2 s) each ZMTP 3.1 peer (libzmq >= 4.2) gets a PING with a TTL of
  ``heartbeat_ttl`` (10 s): libzmq then drops the connection by itself when nothing at all comes from us for the
  TTL, and reconnects. A PING also follows our READY and every reply and push, in the same write: libzmq cancels
  its TTL timer on any message it receives and arms it only on a PING, so the last thing a peer got from us must
  always be a PING, or a client that sends its next request to a host that has hung since would wait for ever. A 3.1
  connection from which nothing (no frame, no PONG: any byte counts) came for ``timeout`` seconds (10 s) is closed.
- ZMTP 3.0 peers (libzmq 4.0/4.1, whose greeting says minor version 0) get no PING: they would not know it. They
  are not timed out either (nothing can be asked of them, and an idle one is silent by nature); the kernel's TCP
  keepalive (about a minute) closes the connection of a host that vanished. On their side they notice a dead broker
  host only through their own keepalive. They get everything else (requests, replies, :meth:`push_empty`).
- :meth:`silent` names the REQ connections that completed their handshake at least ``older_than_s`` ago and have sent
  nothing since: a worker whose request died with the previous broker (its REQ kept the request's reply pipe across
  the reconnect) or an idle one. :meth:`push_empty` sends such a connection the one reply that is always safe, "no
  task" (``[b"", b""]``): a waiting REQ takes it as its reply and asks again, an idle one drops it at its next send
  (libzmq's req.cpp eats pending messages when a send begins). That drop needs the push to have arrived before the
  send: a request that crossed the push on the wire would take the push as its reply and lose the real one. So a
  request that arrives within ``push_guard`` (0.5 s) of a push to its connection is marked ``after_push``: answer it
  with the empty reply too (harmless in every case: the worker asks again). 0.5 s is far above a LAN's round trip,
  and below the deployed worker's 1 s pause after an empty reply, so a worker that took the push as its reply is
  served normally when it asks again.

Connections. Each gets an id (never reused) and is tracked from accept on: when its handshake completed, its
Socket-Type, whether it ever sent a request, whether a request is pending (handed out by :meth:`recv_requests`, not
yet answered by :meth:`reply`) and whether it was pushed (:meth:`info`). Only REQ and DEALER peers are accepted (a
READY with another Socket-Type gets an ERROR command and the connection is closed); a handshake not done within
``handshake_timeout`` (10 s), a frame over 256 MiB or anything malformed closes that connection alone. A message whose
frames add up to more than 64 KiB is read to its end and thrown away as it streams, then handed out as a request
with ``too_large`` set and its envelope only, to be answered with an error (codec.py).

Requests of one connection are answered in order: a second request before the first is answered (a DEALER can do
that) waits inside the listener and is handed out once the first is answered; with more than
``MAX_QUEUED_BYTES`` waiting, the listener stops reading that connection until the caller catches up.

Never blocking. Sockets are non-blocking; each connection has its own output buffer, written when its socket is
writable, so a slow or stalled peer never delays another; a peer whose unsent output exceeds ``max_output`` (1 MiB)
is dropped. A reply to a connection that has gone returns False (the caller puts the task back). Before a reply to
a connection from which nothing came for ``STALE_S`` (1 s), the listener reads it once more: had this process or
its host been stopped between taking the request and answering it, the peer's libzmq has dropped the connection
meanwhile (TTL), and its FIN is found now rather than after the reply was written into a dead socket (the kernel
would take it and the task would be handed out to nobody). A reply accepted into the buffer of a connection that
dies before it is sent is lost, as with libzmq.

Who may connect: ``allow`` (``peer_address -> bool``) is asked at accept, before a byte is read or written; a refused
connection is closed at once. For task_broker that is its ZAP handler's gate (``start_access_control`` returns the
handler): ``functools.partial(handler.gate.admits, where=PROGRAM)``, so a refusal is logged once per address per
hour and counted in ``state/refused-task_broker.json`` as on UPDATE_PORT (access.py; the ZAP handler's thread
writes the counts file every second), one count for both ports.

Cost (bench/bench_zmtp.py, 8 REQ clients on loopback): about the throughput and p50 of a pyzmq ROUTER loop
(0.98-1.10 of its requests/s in three runs) for 18-20 us of CPU a request against the ROUTER's 26 us (its libzmq
I/O thread included); the PING after each reply is 5 us of that (the peer's PONG to read), kept for the reason
above. Where the busy time goes (pyinstrument, one run): send and recv system calls 44%, decoding frames 19%,
encoding replies 10%.

Fitting the broker's loop. Everything runs in the caller's thread. :meth:`fileno` is an epoll descriptor that is
readable whenever a connection or the listening socket needs attention: register the listener itself in the
broker's ``zmq.Poller`` with ``POLLIN`` and call :meth:`handle` when it is ready, and at least every
``heartbeat_ivl / 4`` anyway (the heartbeat timers run in :meth:`handle`). Addresses: one socket on ``::`` that takes
IPv4 peers too (IPV6_V6ONLY off; IPv4 alone on a host without IPv6); IPv4 peers are reported as ``a.b.c.d``.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from avoviirscollector.allowlist import shown_address
from avoviirscollector.broker.zmtp import codec

HEARTBEAT_IVL_S = 2.0
HEARTBEAT_TTL_S = 10.0
TIMEOUT_S = 10.0
HANDSHAKE_TIMEOUT_S = 10.0
PUSH_GUARD_S = 0.5
#: a reply to a connection from which nothing came for this long first reads it, to find it gone (module docstring)
STALE_S = 1.0
#: out of descriptors: logged once a minute at most
ACCEPT_WARN_EVERY_S = 60.0
MAX_OUTPUT_BYTES = 1024 * 1024
#: requests of one connection waiting behind its pending one, in bytes, before its reading pauses
MAX_QUEUED_BYTES = 256 * 1024
RECV_BYTES = 64 * 1024
ACCEPT_BATCH = 64
BACKLOG = 512
#: TCP keepalive of accepted sockets: first probe after 30 s idle, then every 10 s, 3 probes
KEEPALIVE = (30, 10, 3)
PEER_TYPES = {b"REQ": "REQ", b"DEALER": "DEALER"}
EMPTY_REPLY = codec.encode_message([b"", b""])
READY = codec.ready(b"ROUTER")


class Request(NamedTuple):
    """One request: the connection, its peer's address, the message's frames (a REQ's are ``[b"", body]``).

    ``too_large``: the message's size when it was over the limit and thrown away (``frames`` is then its envelope
    only, e.g. ``[b""]``): answer ``frames + [error]``. ``after_push``: it came within ``push_guard`` of a push to
    this connection; answer it with the empty reply (module docstring)."""

    conn_id: int
    peer: str
    frames: list[bytes]
    too_large: int = 0
    after_push: bool = False


class ConnectionInfo(NamedTuple):
    conn_id: int
    peer: str
    socket_type: str | None  # None until the handshake is done
    zmtp_minor: int | None  # 0: ZMTP 3.0 (no heartbeats), 1: 3.1
    opened_at: float
    ready_at: float | None  # when the handshake completed (the listener's clock)
    requested: bool  # ever sent a request
    pending: bool  # a request handed out, not yet answered
    queued: int  # requests waiting behind the pending one
    pushed_at: float | None
    input_bytes: int  # read, not yet a whole message (at most the 64 KiB limit and one read)
    output_bytes: int  # waiting to be sent (at most max_output)


class _Conn:
    __slots__ = ("id", "sock", "peer", "decoder", "out", "mask", "reading", "opened_at", "ready_at", "heard",
                 "last_ping", "minor", "socket_type", "requested", "pending", "queued", "queued_bytes", "pushed_at",
                 "closed")

    def __init__(self, conn_id: int, sock: socket.socket, peer: str, now: float) -> None:
        self.id, self.sock, self.peer = conn_id, sock, peer
        self.decoder = codec.Decoder()
        self.out = bytearray()
        self.mask = 0  # the selector events registered
        self.reading = True
        self.opened_at = self.heard = self.last_ping = now
        self.ready_at: float | None = None
        self.minor: int | None = None
        self.socket_type: str | None = None
        self.requested = False
        self.pending = False
        self.queued: collections.deque[Request] = collections.deque()
        self.queued_bytes = 0
        self.pushed_at: float | None = None
        self.closed = False


class ZmtpListener:
    """The listener (module docstring). ``port`` 0 picks a free one (:attr:`port`); ``host`` binds one address
    instead of every IPv6 and IPv4 one."""

    #: the peers' Socket-Types it accepts, the READY it answers with, and what a peer of another type is told
    #: (``publisher.py`` changes these)
    peer_types = PEER_TYPES
    ready_command = READY
    refusal = "invalid socket type: this is a ROUTER for REQ and DEALER peers"

    def __init__(self, port: int, host: str | None = None, *, allow: Callable[[str], bool] | None = None,
                 heartbeat_ivl: float = HEARTBEAT_IVL_S, heartbeat_ttl: float = HEARTBEAT_TTL_S,
                 timeout: float = TIMEOUT_S, handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
                 push_guard: float = PUSH_GUARD_S, max_output: int = MAX_OUTPUT_BYTES, ping_after_reply: bool = True,
                 clock: Callable[[], float] = time.monotonic, log: logging.Logger | None = None) -> None:
        self.allow, self.clock = allow, clock
        self.log = log or logging.getLogger("task_broker")
        self.heartbeat_ivl, self.timeout, self.handshake_timeout = heartbeat_ivl, timeout, handshake_timeout
        self.push_guard, self.max_output = push_guard, max_output
        self._ping = codec.ping(heartbeat_ttl)
        self._after_data = self._ping if ping_after_reply else b""
        self._sock = _listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._selector = selectors.DefaultSelector()  # epoll on Linux: one descriptor for the caller's poller
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._accepting = True
        self._accept_warned = float("-inf")
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._ready: list[Request] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._sweep_every = max(0.05, min(heartbeat_ivl, timeout, handshake_timeout) / 4)
        self._next_sweep = clock() + self._sweep_every

    # -- the caller's API ----------------------------------------------------------------------------------------

    def fileno(self) -> int:
        """A descriptor readable when :meth:`handle` has work (for ``zmq.Poller.register(listener, zmq.POLLIN)``)."""
        return self._selector.fileno()

    def handle(self, timeout: float = 0.0) -> None:
        """Accept, read, write and run the heartbeat timers; waits up to ``timeout`` seconds for something to do."""
        for key, mask in self._selector.select(timeout):
            conn = key.data
            if conn is None:
                self._accept()
                continue
            if conn.closed:
                continue
            if mask & selectors.EVENT_READ:
                self._read(conn)
            if mask & selectors.EVENT_WRITE and not conn.closed:
                self._flush(conn)
        if self.clock() >= self._next_sweep:
            self._sweep()

    def recv_requests(self) -> list[Request]:
        """The requests received since the last call, each to be answered once with :meth:`reply` (those of
        connections that have gone meanwhile are left out)."""
        ready, self._ready = self._ready, []
        return [request for request in ready if request.conn_id in self._conns]

    def reply(self, conn_id: int, frames: Sequence[bytes]) -> bool:
        """Answer the pending request of ``conn_id`` (for a REQ: ``[b"", body]``). False when the connection has gone
        (or went now: its output over the cap): the reply was not delivered."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return False
        if not conn.pending:
            raise ValueError(f"connection {conn_id} has no request waiting for a reply")
        if self.clock() - conn.heard > STALE_S:
            for _ in range(4):  # a FIN or RST that came while we were not looking (behind a PONG or two)
                if not self._read(conn):
                    break
            if conn.closed:
                return False
        conn.pending = False
        if not self._send_data(conn, codec.encode_message(frames)):
            return False
        if conn.queued:
            self._release_next(conn)
        return True

    def silent(self, older_than_s: float) -> list[int]:
        """REQ connections whose handshake completed ``older_than_s`` ago or more and that have sent no request
        since, nor been pushed: the candidates for :meth:`push_empty`."""
        since = self.clock() - older_than_s
        return [conn.id for conn in self._conns.values() if conn.ready_at is not None and conn.ready_at <= since
                and conn.socket_type == "REQ" and not conn.requested and conn.pushed_at is None]

    def push_empty(self, conn_id: int) -> bool:
        """Send ``conn_id`` the empty reply unasked (module docstring); False when it has gone, has not completed its
        handshake or has a request pending (the push would be taken as that request's reply)."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.ready_at is None or conn.pending or conn.queued:
            return False
        conn.pushed_at = self.clock()
        self._counts["pushed"] += 1
        return self._send_data(conn, EMPTY_REPLY)

    def info(self, conn_id: int) -> ConnectionInfo | None:
        """What the listener knows of a connection; None once it has gone."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return None
        return ConnectionInfo(conn.id, conn.peer, conn.socket_type, conn.minor, conn.opened_at, conn.ready_at,
                              conn.requested, conn.pending, len(conn.queued), conn.pushed_at, conn.decoder.buffered,
                              len(conn.out))

    def counts(self) -> dict[str, int]:
        """Counters since start: ``accepted``, ``refused``, ``requests``, ``pushed``, ``closed <reason>``, and the
        ``connections`` open now."""
        return {**self._counts, "connections": len(self._conns)}

    def close(self, flush_s: float = 1.0) -> None:
        """Write what is still buffered for up to ``flush_s`` seconds, then close every connection and the
        listening socket."""
        deadline = self.clock() + flush_s
        while any(conn.out for conn in self._conns.values()) and self.clock() < deadline:
            for key, mask in self._selector.select(max(0.0, deadline - self.clock())):
                if key.data is not None and mask & selectors.EVENT_WRITE:
                    self._flush(key.data)
        for conn in list(self._conns.values()):
            self._drop(conn, "listener closed", quiet=True)
        self._selector.close()
        self._sock.close()

    # -- connections -----------------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # out of descriptors: stop accepting until the next sweep
                self._counts["accept failed"] += 1
                if self.clock() - self._accept_warned >= ACCEPT_WARN_EVERY_S:
                    self._accept_warned = self.clock()
                    self.log.warning("cannot accept connections on %d (%s); trying again every %.1f s (logged once "
                                     "a minute)", self.port, err, self._sweep_every)
                self._selector.unregister(self._sock)
                self._accepting = False
                return
            peer = shown_address(str(address[0]))
            if self.allow is not None and not self.allow(peer):
                self._counts["refused"] += 1
                sock.close()
                continue
            self._open(sock, peer)

    def _open(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _keepalive(sock)
        conn = _Conn(next(self._ids), sock, peer, self.clock())
        self._conns[conn.id] = conn
        self._counts["accepted"] += 1
        self._write(conn, codec.greeting())
        if not conn.closed:
            self._watch(conn)

    def _watch(self, conn: _Conn) -> None:
        """Register the events the connection needs now: reading unless paused, writing while output waits."""
        mask = (selectors.EVENT_READ if conn.reading else 0) | (selectors.EVENT_WRITE if conn.out else 0)
        if mask == conn.mask:
            return
        if not mask:
            self._selector.unregister(conn.sock)
        elif not conn.mask:
            self._selector.register(conn.sock, mask, conn)
        else:
            self._selector.modify(conn.sock, mask, conn)
        conn.mask = mask

    def _drop(self, conn: _Conn, reason: str, quiet: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.mask:
            self._selector.unregister(conn.sock)
            conn.mask = 0
        conn.sock.close()
        del self._conns[conn.id]
        self._counts[f"closed {reason}"] += 1
        if not quiet:
            self.log.debug("closed connection %d from %s: %s", conn.id, conn.peer, reason)

    # -- input -----------------------------------------------------------------------------------------------

    def _read(self, conn: _Conn) -> bool:
        """Read what the socket has (one recv) and act on it; True when bytes came and the connection is open."""
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._drop(conn, "reset by peer")
            return False
        if not data:
            self._drop(conn, "by peer")
            return False
        conn.heard = self.clock()
        try:
            for event in conn.decoder.feed(data):
                self._on_event(conn, event)
                if conn.closed:
                    return False
        except codec.ProtocolError as err:
            self._drop(conn, "protocol error")
            self.log.info("closed the connection from %s on %d: %s", conn.peer, self.port, err)
            return False
        return True

    def _on_event(self, conn: _Conn, event: codec.Event) -> None:
        if isinstance(event, codec.Message):
            self._take(conn, event.frames, 0)
        elif isinstance(event, codec.Command):
            self._on_command(conn, event)
        elif isinstance(event, codec.TooLarge):
            self._take(conn, event.envelope, event.size)
        elif event.mechanism != b"NULL":
            raise codec.ProtocolError(f"mechanism {event.mechanism!r}: only NULL is spoken")
        else:
            conn.minor = 1 if event.major > 3 else min(event.minor, 1)

    def _on_command(self, conn: _Conn, command: codec.Command) -> None:
        name = command.name
        if conn.ready_at is None:
            if name != b"READY":
                raise codec.ProtocolError(f"{name!r} before the handshake's READY")
            self._handshake(conn, codec.parse_properties(command.data))
        elif name == b"PING":
            _, context = codec.parse_ping(command.data)
            self._write(conn, codec.pong(context))
        elif name == b"ERROR" or name == b"READY":
            raise codec.ProtocolError(f"{name.decode('ascii', 'replace')} after the handshake")
        # PONG: its arrival was all it had to say; other commands are ignored (ZMTP 3.1)

    def _handshake(self, conn: _Conn, properties: dict[str, bytes]) -> None:
        kind = self.peer_types.get(properties.get("socket-type", b""))
        if kind is None:
            self._write(conn, codec.error(self.refusal))
            raise codec.ProtocolError(f"Socket-Type {properties.get('socket-type')!r} refused")
        conn.socket_type = kind
        conn.ready_at = conn.last_ping = self.clock()
        self._counts[f"handshakes ZMTP 3.{conn.minor}"] += 1
        self._write(conn, self.ready_command + self._ping if conn.minor else self.ready_command)

    def _take(self, conn: _Conn, frames: list[bytes], too_large: int) -> None:
        if conn.ready_at is None:
            raise codec.ProtocolError("a message before the handshake")
        now = self.clock()
        after_push = conn.pushed_at is not None and now - conn.pushed_at < self.push_guard
        request = Request(conn.id, conn.peer, frames, too_large, after_push)
        conn.requested = True
        self._counts["requests"] += 1
        if not conn.pending and not conn.queued:
            conn.pending = True
            self._ready.append(request)
            return
        conn.queued.append(request)
        conn.queued_bytes += sum(len(frame) for frame in frames)
        if conn.queued_bytes > MAX_QUEUED_BYTES and conn.reading:
            conn.reading = False
            self._watch(conn)

    def _release_next(self, conn: _Conn) -> None:
        request = conn.queued.popleft()
        conn.queued_bytes -= sum(len(frame) for frame in request.frames)
        conn.pending = True
        self._ready.append(request)
        if not conn.reading and conn.queued_bytes <= MAX_QUEUED_BYTES:
            conn.reading = True
            conn.heard = self.clock()  # what it sent while paused was not read: the silence starts now
            self._watch(conn)

    # -- output ----------------------------------------------------------------------------------------------

    def _send_data(self, conn: _Conn, data: bytes) -> bool:
        """A reply or push, followed by a PING for a ZMTP 3.1 peer (module docstring)."""
        if conn.minor:
            conn.last_ping = self.clock()
            data += self._after_data
        return self._write(conn, data)

    def _write(self, conn: _Conn, data: bytes) -> bool:
        """Send now what the socket takes, buffer the rest; False when the connection is dropped (a send error, or
        its output over ``max_output``)."""
        if not conn.out:
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn, "send failed")
                return False
            if sent == len(data):
                return True
            data = memoryview(data)[sent:]
        conn.out += data
        if len(conn.out) > self.max_output:
            self._drop(conn, "output over the cap")
            return False
        self._watch(conn)
        return True

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn, "send failed")
            return
        del conn.out[:sent]
        if not conn.out:
            self._watch(conn)

    # -- timers ----------------------------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Heartbeats and timeouts of every connection (every quarter of the shortest interval)."""
        now = self.clock()
        self._next_sweep = now + self._sweep_every
        if not self._accepting:
            self._selector.register(self._sock, selectors.EVENT_READ, None)
            self._accepting = True
        for conn in list(self._conns.values()):
            self._tick(conn, now)

    def _tick(self, conn: _Conn, now: float) -> None:
        if conn.ready_at is None:
            if now - conn.opened_at > self.handshake_timeout:
                self._drop(conn, "handshake timeout")
        elif not conn.minor or not conn.reading:
            return  # ZMTP 3.0: no heartbeats; paused: its PONGs wait unread
        elif now - conn.heard > self.timeout:
            self._drop(conn, "heartbeat timeout")
        elif now - conn.last_ping >= self.heartbeat_ivl:
            conn.last_ping = now
            self._write(conn, self._ping)


def _listen(host: str | None, port: int) -> socket.socket:
    """The listening socket: ``host``, or ``::`` taking IPv4 peers too, or ``0.0.0.0`` on a host without IPv6."""
    if host is not None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return _bound(family, host, port)
    try:
        return _bound(socket.AF_INET6, "::", port)
    except OSError as err:
        if err.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
            raise
    return _bound(socket.AF_INET, "0.0.0.0", port)


def _bound(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, probes = KEEPALIVE
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", probes)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
