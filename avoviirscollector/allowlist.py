"""Who may connect: the ``ALLOWED_CLIENTS`` list of addresses and CIDR blocks, and the match of one peer address.

Pure: no sockets, no clock, no logging. ``access.py`` applies it to ZeroMQ (ZAP) and HTTP.

``ALLOWED_CLIENTS`` holds IPv4 and IPv6 addresses and CIDR blocks separated by commas and/or blanks, e.g.
``10.1.2.3, 10.20.0.0/16 2001:db8::/32``. Parsing is strict: a block with bits set right of its prefix
(``10.1.2.3/16``) is refused rather than silently widened, and so are host names (they would make the check depend on
DNS at every connection).

Matching: an IPv4 peer seen as an IPv4-mapped IPv6 address (``::ffff:10.1.2.3``, what a dual-stack socket reports)
is matched as the IPv4 address; an IPv6 zone (``fe80::1%eth0``) is ignored. A peer address that is not an IP address
at all (ZeroMQ reports an empty address for ``ipc://`` and ``inproc://`` peers) is a local process, and so are
127.0.0.1 and ::1 (the suite's own ``status``, HEALTHCHECK and operators on the host): both are allowed unless
``local_ok=False``, see :meth:`AllowList.allows`. Other loopback addresses (127.0.0.2, ...) get no such favour.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SEPARATORS = re.compile(r"[\s,]+")
LOCAL = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


class AllowListError(ValueError):
    """One entry of the list is not an address or CIDR block; the message names it and says what is accepted."""


def parse_entry(entry: str) -> Network:
    """One address (``10.1.2.3``, ``2001:db8::1``) or block (``10.0.0.0/8``) as a network; raise AllowListError."""
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as err:
        if "has host bits set" in str(err):
            wide = ipaddress.ip_network(entry, strict=False)
            raise AllowListError(f"{entry!r} has bits set right of its prefix length (did you mean {wide}?)") from None
        raise AllowListError(f"{entry!r} is not an IPv4 or IPv6 address or CIDR block") from None


@dataclass(frozen=True)
class AllowList:
    """The networks whose peers may connect. Build with :func:`parse_allowlist`."""

    networks: tuple[Network, ...]

    def __str__(self) -> str:
        return ", ".join(str(net.network_address) if net.num_addresses == 1 else str(net) for net in self.networks)

    def allows(self, address: str, local_ok: bool = True) -> bool:
        """True when ``address`` (a peer's IP address as a string) is in one of the networks.

        With ``local_ok``, an ``address`` that is not an IP address (empty for ipc:// peers: ZeroMQ gives an IP
        address for every TCP peer, so only local transports come without one), 127.0.0.1 and ::1 are allowed too."""
        ip = peer_ip(address)
        if ip is None or ip in LOCAL:
            return local_ok or (ip is not None and any(ip in net for net in self.networks if net.version == ip.version))
        return any(ip in net for net in self.networks if net.version == ip.version)


def shown_address(address: str) -> str:
    """``address`` as logged and kept: an IPv4 peer of a dual-stack socket (``::ffff:a.b.c.d``) as ``a.b.c.d``, any
    other IP address in its canonical form, anything else unchanged."""
    ip = peer_ip(address)
    return str(ip) if ip is not None else address


def peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in ``address`` (IPv4-mapped IPv6 turned into IPv4, zone dropped), or None if it is none."""
    text = (address or "").strip().strip("[]")
    text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_allowlist(raw: str) -> AllowList | None:
    """``ALLOWED_CLIENTS``' value as an AllowList; None when it is empty (every address allowed)."""
    entries = [entry for entry in _SEPARATORS.split(raw.strip()) if entry]
    if not entries:
        return None
    networks: list[Network] = []
    for entry in entries:
        net = parse_entry(entry)
        if net not in networks:
            networks.append(net)
    return AllowList(tuple(networks))
