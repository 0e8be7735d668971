"""TCP ports for tests: free ones to give the programs (:func:`free_ports`), and a wait until one listens."""

from __future__ import annotations

import socket

from tests.support.waiting import wait_until


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (all held open together while they are found)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port free on ``host`` right now."""
    return free_ports(1, host)[0]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host``:``port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Wait until something listens on ``host``:``port``."""
    wait_until(lambda: listening(port, host), timeout, f"something listening on {host}:{port}")
