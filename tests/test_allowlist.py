"""ALLOWED_CLIENTS: strict parsing of addresses and CIDR blocks, and the match of one peer address (pure)."""

from __future__ import annotations

import pytest

from avoviirscollector.allowlist import AllowListError, parse_allowlist, peer_ip


def test_empty_means_every_address():
    assert parse_allowlist("") is None
    assert parse_allowlist("  , ,\n") is None


def test_addresses_and_blocks_of_both_families():
    allow = parse_allowlist("127.0.0.1, 10.20.0.0/16 2001:db8::/32,fe80::1\n192.0.2.0/24")
    assert str(allow) == "127.0.0.1, 10.20.0.0/16, 2001:db8::/32, fe80::1, 192.0.2.0/24"
    for ok in ("127.0.0.1", "10.20.255.1", "2001:db8::42", "fe80::1", "192.0.2.200"):
        assert allow.allows(ok), ok
    for refused in ("127.0.0.2", "10.21.0.1", "2001:db9::1", "fe80::2", "192.0.3.1", "0.0.0.0", "::"):
        assert not allow.allows(refused), refused


def test_ipv4_peers_seen_through_ipv6_sockets_and_zones():
    allow = parse_allowlist("10.0.0.0/8 fe80::/64")
    assert allow.allows("::ffff:10.1.2.3")
    assert not allow.allows("::ffff:11.1.2.3")
    assert allow.allows("fe80::1%eth0") and allow.allows("[fe80::1]")
    assert peer_ip("::ffff:10.1.2.3").version == 4


def test_peers_without_an_ip_address_and_the_hosts_own_loopback_are_local():
    allow = parse_allowlist("192.0.2.1")
    assert allow.allows("") and allow.allows("   ") and allow.allows("127.0.0.1") and allow.allows("::1")
    assert not allow.allows("127.0.0.2") and not allow.allows("::ffff:127.0.0.3")
    assert not allow.allows("", local_ok=False) and not allow.allows("127.0.0.1", local_ok=False)
    assert parse_allowlist("127.0.0.0/8").allows("127.0.0.1", local_ok=False)


def test_duplicates_are_kept_once():
    assert str(parse_allowlist("127.0.0.1 127.0.0.1/32, 127.0.0.1")) == "127.0.0.1"


@pytest.mark.parametrize("raw,message", [
    ("10.1.2.3/16", "'10.1.2.3/16' has bits set right of its prefix length (did you mean 10.1.0.0/16?)"),
    ("localhost", "'localhost' is not an IPv4 or IPv6 address or CIDR block"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not an IPv4"),
    ("127.0.0.1;127.0.0.2", "'127.0.0.1;127.0.0.2' is not"),
    ("256.1.1.1", "'256.1.1.1' is not"),
    ("2001:db8::1/129", "'2001:db8::1/129' is not"),
])
def test_bad_entries_are_named(raw, message):
    with pytest.raises(AllowListError) as err:
        parse_allowlist(f"127.0.0.1, {raw}")
    assert message in str(err.value)
