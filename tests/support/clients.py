"""One-shot ZeroMQ clients, as a worker or an operator's script would be: one REQ round trip (:func:`ask`,
:func:`request`) and a SUB that counts what it hears (:func:`heard`). Each opens its own context and closes it.
``source`` binds the connection to a local address (127.0.0.2 plays a foreign host)."""

from __future__ import annotations

import time

import zmq


def endpoint(port: int, host: str = "127.0.0.1", source: str | None = None) -> str:
    """The ZeroMQ address of ``host``:``port``, from ``source`` when given (IPv6 addresses in brackets)."""
    bracket = (lambda address: f"[{address}]") if ":" in host else (lambda address: address)
    via = f"{bracket(source)}:0;" if source else ""
    return f"tcp://{via}{bracket(host)}:{port}"


def _connected(context: zmq.Context, kind: int, port: int, host: str, source: str | None) -> zmq.Socket:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IPV6, int(":" in host))
    sock.connect(endpoint(port, host, source))
    return sock


def ask(port: int, body: bytes, timeout: float = 2.0, source: str | None = None,
        host: str = "127.0.0.1") -> bytes | None:
    """One REQ round trip to ``host``:``port``; the reply, or None when none came within ``timeout`` seconds."""
    context = zmq.Context()
    sock = _connected(context, zmq.REQ, port, host, source)
    try:
        sock.send(body)
        return sock.recv() if sock.poll(int(timeout * 1000)) else None
    finally:
        sock.close(linger=0)
        context.term()


def request(port: int, body: bytes, timeout: float = 10.0, source: str | None = None,
            host: str = "127.0.0.1") -> bytes:
    """One REQ round trip that must be answered: the reply; AssertionError when none came within ``timeout``."""
    reply = ask(port, body, timeout, source, host)
    if reply is None:
        raise AssertionError(f"no reply in {timeout} s to {body[:80]!r}")
    return reply


def heard(port: int, seconds: float, source: str | None = None, host: str = "127.0.0.1") -> int:
    """How many messages (every topic) a SUB on ``host``:``port`` receives within ``seconds``."""
    context = zmq.Context()
    sock = _connected(context, zmq.SUB, port, host, source)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    count = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sock.poll(100):
                sock.recv()
                count += 1
        return count
    finally:
        sock.close(linger=0)
        context.term()
