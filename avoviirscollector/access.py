"""Who may connect to the public ports (SPEC section 12): ZAP for ZeroMQ, the same check for HTTP.

With ``ALLOWED_CLIENTS`` set, a program calls :func:`start_access_control` once, right after it makes its
``zmq.Context`` and before it binds anything. That starts a ZAP handler (ZeroMQ's authentication protocol, RFC 27)
on the context and makes every socket created afterwards on that context ask it about each new connection. The
handler accepts a peer whose address is in the list and refuses any other: a refused peer's connection is closed
during the ZeroMQ handshake, before it can send or receive a single message, so a refused REQ client never takes a
task and a refused SUB never sees a message. Deployed clients need no change: the check is on the NULL mechanism
(plain ZeroMQ), by the peer's IP address. Peers of local transports (``ipc://``, e.g. task_broker's operators'
socket) have no IP address and are always accepted: only a local user can reach them, and the file mode decides.
So are 127.0.0.1 and ::1, this host's own processes (``avoviirscollector status``, the image's HEALTHCHECK, a
future monitor); any other address, 127.0.0.2 included, must be in the list.

An HTTP server (``MONITOR_PORT``) uses the same check through :class:`GatedServerMixin` (``verify_request`` of
``socketserver``): a refused client's connection is closed before its request is read.

IPv4 and IPv6. The public sockets listen on both (:func:`listen_dual_stack` for ZeroMQ, :class:`DualStackServer`
for HTTP: one socket on ``::`` that also takes IPv4 peers, which it sees as ``::ffff:a.b.c.d`` and which are checked
and logged as the IPv4 address they are), so IPv6 entries of ``ALLOWED_CLIENTS`` can match; on a host without IPv6
they listen on IPv4 alone.

Refusals
    The first refusal of an address is logged (one WARNING line), then that address is only counted for an hour,
    however often it tries; after the hour its next refusal is logged again. Counts go to
    ``$VIIRS_BASE/state/refused-<program>.json`` (rewritten atomically at most once a second while refusals come,
    and kept across restarts): ``{"program", "total", "since", "updated", "peers": {address: {"count", "last"}}}``.
    ``avoviirscollector status`` adds them up.

Unset ``ALLOWED_CLIENTS``: nothing is started and every address may connect, as before (``supervise`` says so in one
WARNING line at start).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from avoviirscollector.allowlist import AllowList, shown_address
from avoviirscollector.config import Settings

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
LOG_EVERY_S = 3600.0  # a refused address is logged at most once per hour
WRITE_EVERY_S = 1.0  # the counter file is rewritten at most once a second
MAX_PEERS = 1000  # addresses kept in the counter file (the ones refused most recently)
REFUSED_GLOB = "refused-*.json"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


class RefusalLog:
    """Logs each refused address once per ``every`` seconds and keeps the counts in ``state/refused-<program>.json``.

    Thread-safe; ``refused()`` never blocks on more than one small atomic file write a second."""

    def __init__(self, program: str, log: logging.Logger, state_dir: Path | None, every: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.program = program
        self.log = log
        self.path = state_dir / f"refused-{program}.json" if state_dir is not None else None
        self.every = every
        self.clock, self.wall = clock, wall
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}
        self._dirty = False
        self._written = float("-inf")
        self.counts = self._read()

    def _read(self) -> dict:
        fresh = {"program": self.program, "total": 0, "since": _iso(self.wall()), "updated": None, "peers": {}}
        if self.path is None:
            return fresh
        try:
            with open(self.path, encoding="utf-8") as handle:
                state = json.load(handle)
            peers = {str(k): {"count": int(v["count"]), "last": str(v["last"])} for k, v in state["peers"].items()}
            return {"program": self.program, "total": int(state["total"]), "since": str(state["since"]),
                    "updated": state.get("updated"), "peers": peers}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return fresh

    @property
    def total(self) -> int:
        return self.counts["total"]

    def refused(self, address: str, where: str) -> None:
        """Count one refusal of ``address``; log it if it is the first from there within the hour."""
        now, wall = self.clock(), self.wall()
        shown = shown_address(address) or "(no address)"
        with self._lock:
            self.counts["total"] += 1
            peers = self.counts["peers"]
            entry = peers.pop(shown, None) or {"count": 0, "last": ""}
            entry["count"] += 1
            entry["last"] = _iso(wall)
            peers[shown] = entry  # most recent last
            while len(peers) > MAX_PEERS:
                peers.pop(next(iter(peers)))
            self._dirty = True
            last = self._logged.get(shown)
            log_it = last is None or now - last >= self.every
            if log_it:
                self._logged[shown] = now
                if len(self._logged) > 4 * MAX_PEERS:
                    self._logged = {a: t for a, t in self._logged.items() if now - t < self.every}
        if log_it:
            self.log.warning("refused a connection from %s to %s: not in ALLOWED_CLIENTS (further refusals of this "
                             "address are counted, not logged, for an hour; `avoviirscollector status` shows them)",
                             shown, where)
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Write the counts if they changed and the last write is a second old (or ``force``)."""
        if self.path is None:
            return
        with self._lock:
            now = self.clock()
            if not self._dirty or (not force and now - self._written < WRITE_EVERY_S):
                return
            self.counts["updated"] = _iso(self.wall())
            text = json.dumps(self.counts, sort_keys=True)
            self._dirty, self._written = False, now
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except OSError as err:  # a full disk must not break the check itself
            with self._lock:
                self._dirty = True
            self.log.debug("refusal counts not written to %s: %s", self.path, err)


class Gate:
    """The allow-list check of one program: :meth:`admits` says yes or no and records the refusals."""

    def __init__(self, allow: AllowList, refusals: RefusalLog) -> None:
        self.allow = allow
        self.refusals = refusals

    def admits(self, address: str, where: str, local_ok: bool = True) -> bool:
        if self.allow.allows(address, local_ok=local_ok):
            return True
        self.refusals.refused(address, where)
        return False


def make_gate(settings: Settings, program: str, log: logging.Logger) -> Gate | None:
    """The program's Gate, or None when ``ALLOWED_CLIENTS`` is unset (every address allowed)."""
    if settings.allowed_clients is None:
        return None
    return Gate(settings.allowed_clients, RefusalLog(program, log, settings.state_dir))


class ZapHandler(threading.Thread):
    """ZAP handler (RFC 27) on one context: answers each new connection's request by the peer's address.

    Ends by itself when the context is terminated (``context.term()`` returns once this socket is closed)."""

    def __init__(self, context: zmq.Context, gate: Gate, where: str) -> None:
        super().__init__(name="zap-handler", daemon=True)
        self.context, self.gate, self.where = context, gate, where
        self.ready = threading.Event()
        self.error: Exception | None = None
        self.answered = 0

    def run(self) -> None:
        try:
            sock = self.context.socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as err:
            self.error = err
            self.ready.set()
            return
        self.ready.set()
        try:
            while True:
                if sock.poll(int(WRITE_EVERY_S * 1000)):
                    sock.send_multipart(self.answer(sock.recv_multipart()))
                    self.answered += 1
                self.gate.refusals.flush()  # counts that came in the last second reach the file
        except zmq.ContextTerminated:
            return
        finally:
            sock.close(linger=0)
            self.gate.refusals.flush(force=True)

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: ``version, request id, status code, status text, user id, metadata``."""
        if len(frames) < 6 or frames[0] != b"1.0":
            version = frames[0] if frames else b"1.0"
            request_id = frames[1] if len(frames) > 1 else b""
            return [version, request_id, b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address = frames[:4]
        peer = address.decode("ascii", errors="replace")
        if self.gate.admits(peer, self.where):
            return [version, request_id, b"200", b"OK", b"", b""]
        return [version, request_id, b"400", b"address not in ALLOWED_CLIENTS", b"", b""]


def start_access_control(context: zmq.Context, settings: Settings, log: logging.Logger,
                         program: str | None = None) -> ZapHandler | None:
    """With ``ALLOWED_CLIENTS`` set: check every connection to sockets made from now on on ``context``.

    Call it right after making the context and before creating the sockets to protect (they inherit the context's
    ZAP domain; a socket made earlier is not checked). Returns the running handler, or None when every address is
    allowed. Raises RuntimeError if the handler cannot start (another ZAP handler on the context)."""
    program = program or log.name
    gate = make_gate(settings, program, log)
    if gate is None:
        return None
    handler = ZapHandler(context, gate, program)
    handler.start()
    handler.ready.wait(10)
    if handler.error is not None:
        raise RuntimeError(f"cannot start the ZAP handler: {handler.error}")
    context.setsockopt(zmq.ZAP_DOMAIN, program.encode())
    log.info("accepting connections from %s only (ALLOWED_CLIENTS), and from this host's 127.0.0.1, ::1 and ipc",
             settings.allowed_clients)
    return handler


class GatedServerMixin:
    """For ``socketserver``/``http.server`` servers: close the connection of a client not in ``ALLOWED_CLIENTS``
    before its request is read. Set ``gate`` (from :func:`make_gate`; None allows everyone) and ``gate_where``.

    ``class MonitorServer(GatedServerMixin, http.server.ThreadingHTTPServer): ...``"""

    gate: Gate | None = None
    gate_where: str = "HTTP"

    def verify_request(self, request, client_address) -> bool:
        if self.gate is not None:
            address = client_address[0] if isinstance(client_address, tuple) and client_address else ""
            if not self.gate.admits(str(address), self.gate_where):
                return False
        return socketserver.BaseServer.verify_request(self, request, client_address)


def read_refusals(state_dir: Path) -> list[dict]:
    """Every program's refusal counts (for status): the ``refused-*.json`` files of ``state_dir``, tolerantly."""
    found = []
    for path in sorted(state_dir.glob(REFUSED_GLOB)):
        try:
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
            peers = state.get("peers", {})
            found.append({"program": str(state.get("program", path.stem[len("refused-"):])),
                          "total": int(state.get("total", 0)), "since": state.get("since"),
                          "updated": state.get("updated"),
                          "peers": {str(k): int(v.get("count", 0)) for k, v in peers.items()}})
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return found


def listen_dual_stack(sock: zmq.Socket) -> None:
    """Before ``bind("tcp://*:port")``: listen on IPv6 and IPv4 (libzmq binds ``::`` with IPV6_V6ONLY off, and binds
    IPv4 alone where the host has no IPv6), so that IPv6 clients can connect and IPv6 ``ALLOWED_CLIENTS`` entries
    match. The addresses ZAP then reports for IPv4 peers are IPv4-mapped; the allow-list reads them as IPv4."""
    sock.setsockopt(zmq.IPV6, 1)


class DualStackServer:
    """Mixin for ``socketserver`` TCP servers bound to ``::``: IPv4 peers are accepted on the same socket.

    ``class S(DualStackServer, GatedServerMixin, http.server.ThreadingHTTPServer): ...``, then ``S(("::", port), h)``.
    :func:`bind_dual_stack` falls back to IPv4 when the host has no IPv6."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        try:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:
            pass
        super().server_bind()  # type: ignore[misc]


def bind_dual_stack(dual: type, ipv4: type, port: int, *args, host: str | None = None):
    """A server of class ``dual`` (a :class:`DualStackServer`) on ``[::]:port``, or of class ``ipv4`` on
    ``0.0.0.0:port`` when this host has no IPv6; with ``host`` given, on that address (``ipv4`` unless it contains
    a colon)."""
    if host is not None:
        return (dual if ":" in host else ipv4)((host, port), *args)
    try:
        return dual(("::", port), *args)
    except OSError as err:
        if err.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
            raise
        return ipv4(("0.0.0.0", port), *args)
