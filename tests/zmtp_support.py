"""Helpers for the ZMTP listener's tests: the listener serving in a thread of the test process (its loop written as
task_broker's will be: one ``zmq.Poller`` with the listener registered beside a zmq socket) or as a process of its
own (``python -m tests.zmtp_support --port P``, for SIGSTOP and SIGKILL), a ZMTP peer done by hand on a raw socket,
and the workers' posttroll-1.5 world as a process (``.venv-legacy``).

Both servers answer a request ``[..., body]`` with ``[..., b"re:" + body]``, a message over the limit with
``[envelope..., {"error": ...}]`` and one that came right after a push with the empty reply (the rule task_broker
will follow); with ``push_after`` they push the empty reply to REQ connections silent for that long. The process
prints one JSON line per event on stdout (``listening``, ``request``, ``pushed``)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from avoviirscollector.broker.zmtp import codec
from avoviirscollector.broker.zmtp.listener import HEARTBEAT_IVL_S, HEARTBEAT_TTL_S, TIMEOUT_S, Request, ZmtpListener
from tests.support import endpoint

REPO = Path(__file__).resolve().parents[1]
LEGACY_PYTHON = REPO / ".venv-legacy" / "bin" / "python"
LEGACY_LOOP = Path(__file__).with_name("legacy_req_loop.py")


def answer(request: Request) -> list[bytes]:
    """The test servers' reply to one request."""
    if request.too_large:
        return request.frames + [json.dumps({"error": f"request is {request.too_large} bytes"}).encode()]
    if request.after_push:
        return request.frames[:-1] + [b""]
    return request.frames[:-1] + [b"re:" + request.frames[-1]]


def serve_step(listener: ZmtpListener, poller: zmq.Poller, push_after: float | None, hold: bool,
               on_event=None) -> None:
    """One turn of the loop: wait up to 50 ms, handle, answer (unless ``hold``), push to silent peers."""
    poller.poll(50)
    listener.handle()
    for request in listener.recv_requests():
        if on_event:
            on_event({"event": "request", "conn": request.conn_id, "peer": request.peer,
                      "body": request.frames[-1][:100].decode("latin-1") if request.frames else "",
                      "after_push": request.after_push})
        if not hold:
            listener.reply(request.conn_id, answer(request))
    if push_after is not None:
        for conn_id in listener.silent(push_after):
            if listener.push_empty(conn_id) and on_event:
                on_event({"event": "pushed", "conn": conn_id})


_BESIDE = itertools.count()


class ThreadedListener:
    """A listener serving in a thread. ``call(fn)`` runs ``fn(listener)`` between two turns of its loop (the
    listener is not thread-safe) and returns what it returned."""

    def __init__(self, host: str | None = "127.0.0.1", push_after: float | None = None, hold: bool = False,
                 **options) -> None:
        self.listener = ZmtpListener(0, host, **options)
        self.port = self.listener.port
        self.push_after, self.hold = push_after, hold
        self.requests: list[dict] = []
        self.pushes: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zmtp-listener", daemon=True)

    def __enter__(self) -> ThreadedListener:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()

    def _run(self) -> None:
        context = zmq.Context.instance()
        other = context.socket(zmq.PAIR)  # a zmq socket beside the listener, as the broker's loop has
        # a name of its own: a closed socket's inproc name is freed later by libzmq's reaper thread (on a busy host
        # after the next listener, which id(self) may name the same, has started)
        other.bind(f"inproc://beside-{next(_BESIDE)}")
        poller = zmq.Poller()
        poller.register(self.listener, zmq.POLLIN)
        poller.register(other, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                with self._lock:
                    serve_step(self.listener, poller, self.push_after, self.hold, self._record)
        finally:
            other.close(linger=0)

    def _record(self, event: dict) -> None:
        event["at"] = time.monotonic()
        (self.requests if event["event"] == "request" else self.pushes).append(event)

    def call(self, fn):
        with self._lock:
            return fn(self.listener)


class ServerProcess:
    """The listener in a process of its own on ``port`` (same port again after a kill: SO_REUSEADDR); its events
    in :attr:`events` as they come."""

    def __init__(self, port: int, *args: str) -> None:
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.zmtp_support", "--port", str(port), *args],
                                     cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.started = time.monotonic()
        self.expect("listening", 15)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def expect(self, kind: str, timeout: float) -> dict:
        """The next event of ``kind`` (others are kept in :attr:`seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind!r} event from the server within {timeout} s") from None
            self.seen.append(event)
            if event["event"] == kind:
                return event

    def count(self, kind: str) -> int:
        """How many events of ``kind`` came so far."""
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return sum(event["event"] == kind for event in self.seen)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


class RawPeer:
    """A ZMTP peer done by hand on a plain TCP socket: greeting and READY as given, then what the test sends;
    :meth:`events` decodes what the server sent (greeting first)."""

    def __init__(self, port: int, socket_type: bytes = b"REQ", minor: int = 1, host: str = "127.0.0.1",
                 handshake: bool = True, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf is not None:  # before connecting, so that the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((host, port))
        self.decoder = codec.Decoder(max_message=10**6)
        if handshake:
            self.sock.sendall(codec.greeting(minor=minor) + codec.ready(socket_type))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def events(self, seconds: float) -> tuple[list, bool]:
        """What came within ``seconds`` (decoded), and whether the server closed the connection."""
        got, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return got, True
            if not data:
                return got, True
            got += self.decoder.feed(data)
        return got, False

    def close(self) -> None:
        self.sock.close()


class DelayProxy:
    """One TCP connection relayed from a port of its own to ``upstream``, the server's bytes ``delay`` seconds late
    (a slow path from the broker to a worker): a push is then still on the way when the worker sends."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.delay = delay
        self._listening = socket.create_server(("127.0.0.1", 0))
        self.port = self._listening.getsockname()[1]
        self.upstream = upstream
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        client, _ = self._listening.accept()
        server = socket.create_connection(("127.0.0.1", self.upstream))
        late: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, None, late), daemon=True).start()
        while (item := late.get()) is not None:
            time.sleep(max(0.0, item[0] + self.delay - time.monotonic()))
            client.sendall(item[1])
        client.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket | None, late: queue.SimpleQueue | None) -> None:
        try:
            while data := source.recv(65536):
                if late is not None:
                    late.put((time.monotonic(), data))
                else:
                    sink.sendall(data)
        except OSError:
            pass
        if late is not None:
            late.put(None)


class LegacyClient:
    """tests/legacy_req_loop.py under .venv-legacy's Python (posttroll 1.5.1 and its pyzmq): a plain REQ, driven
    line by line: :meth:`ask` sends a request (and, with ``wait``, returns its reply), :meth:`reply` waits for one."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.proc = subprocess.Popen([str(LEGACY_PYTHON), str(LEGACY_LOOP), host, str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.versions = json.loads(self.proc.stdout.readline())

    def ask(self, body: str, wait: bool = True) -> bytes | None:
        self.proc.stdin.write(json.dumps({"send": body}) + "\n")
        return self.reply() if wait else None

    def reply(self) -> bytes | None:
        line = json.loads(self.proc.stdout.readline())
        return None if line["reply"] is None else line["reply"].encode("latin-1")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def connected(context: zmq.Context, kind: int, port: int, host: str = "127.0.0.1", source: str | None = None):
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if ":" in host:
        sock.setsockopt(zmq.IPV6, 1)
    sock.connect(endpoint(port, host, source))
    return sock


def vanishing_peers(port: int, context: zmq.Context) -> None:
    """Peers that go mid-request: a request then gone before the reply, half a frame, half a greeting, a REQ
    closed right after its send."""
    ask = codec.greeting() + codec.ready(b"REQ") + codec.encode_message([b"", b"vanish"])
    for data in (ask, ask[:-3], codec.greeting()[:30]):
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(data)
    for _ in range(30):
        req = connected(context, zmq.REQ, port)
        req.send(b"vanish")
        req.close(linger=0)


def silent_crowd(port: int, count: int, timeout: float) -> None:
    """``count`` peers that connect and never speak, held until the server closes every one."""
    crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    open_ones = selectors.DefaultSelector()
    for sock in crowd:
        open_ones.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while open_ones.get_map() and time.monotonic() < deadline:
            for key, _ in open_ones.select(0.5):
                if key.fileobj.recv(1024) == b"":  # else the server's greeting
                    open_ones.unregister(key.fileobj)
        assert not open_ones.get_map(), f"{len(open_ones.get_map())} silent peers still open after {timeout} s"
    finally:
        open_ones.close()
        for sock in crowd:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the ZMTP listener as a process, for tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--push-after", type=float, default=None)
    parser.add_argument("--hold", action="store_true", help="take requests, never answer them")
    parser.add_argument("--ivl", type=float, default=HEARTBEAT_IVL_S)
    parser.add_argument("--ttl", type=float, default=HEARTBEAT_TTL_S)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="the heartbeat and handshake timeout")
    args = parser.parse_args(argv)
    listener = ZmtpListener(args.port, "127.0.0.1", heartbeat_ivl=args.ivl, heartbeat_ttl=args.ttl,
                            timeout=args.timeout, handshake_timeout=args.timeout)
    poller = zmq.Poller()
    poller.register(listener, zmq.POLLIN)

    def emit(event: dict) -> None:
        print(json.dumps(event), flush=True)

    emit({"event": "listening", "port": listener.port, "pid": os.getpid()})
    while True:
        serve_step(listener, poller, args.push_after, args.hold, emit)


if __name__ == "__main__":
    raise SystemExit(main())
