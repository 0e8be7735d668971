"""TCP ports for tests: free ones to give the programs (:func:`free_ports`), and a wait until one listens."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from tests.support.waiting import wait_until

#: posttroll's fixed defaults (nameserver, registrations, address announcements): never handed out here
POSTTROLL_DEFAULTS = {5557, 16543, 21200}
LOWEST = 10000


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out by itself (bind to port 0, outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (all held open together while they are found), below
    the kernel's ephemeral range: a program of the suite that binds one later cannot find it taken by a publisher's
    random port or an outgoing connection meanwhile (seen: monitor in BACKOFF, its port held by another program)."""
    socks: list[socket.socket] = []
    high = _ephemeral_low()
    try:
        while len(socks) < count:
            port = random.randrange(LOWEST, high)
            if port in POSTTROLL_DEFAULTS:
                continue
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
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
