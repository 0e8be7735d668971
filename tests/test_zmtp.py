"""The ZMTP codec (avoviirscollector/broker/zmtp/codec.py) on its own: greeting, frames fed in any chunks, commands,
the size limits and what they cost in memory, malformed input. The bytes libzmq sends are checked against real
libzmq clients in test_zmtp_server.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avoviirscollector.broker.zmtp import codec
from avoviirscollector.broker.zmtp.codec import Command, Decoder, Greeting, Message, ProtocolError, TooLarge

PEER_GREETING = codec.greeting(minor=1)
LIMIT = 1000  # a small message limit keeps the examples small


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def decode(stream: bytes, cuts: list[int] = (), **limits) -> tuple[list, int]:
    """Every event of ``stream`` fed in chunks; and the most the decoder held at any time, less the chunk."""
    decoder = Decoder(**limits)
    events, held = [], 0
    for chunk in chunks(stream, list(cuts)):
        events += decoder.feed(chunk)
        held = max(held, decoder.buffered - len(chunk))
    return events, held


def test_our_greeting_is_zmtp_3_1_null_not_as_server():
    raw = codec.greeting()
    assert len(raw) == 64
    assert raw[:10] == b"\xff" + bytes(8) + b"\x7f" and raw[10:12] == b"\x03\x01"
    assert raw[12:32] == b"NULL" + bytes(16) and raw[32] == 0 and raw[33:] == bytes(31)


def test_a_libzmq_greeting_is_read_padding_and_all():
    # libzmq puts its routing id's length + 1 in the padding; a 3.0 peer says minor 0
    raw = b"\xff" + (1).to_bytes(8, "big") + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + bytes(31)
    assert Decoder().feed(raw) == [Greeting(3, 0, b"NULL", False)]


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\n", b"\xff" + bytes(8) + b"\x00",
                                   b"\xff" + bytes(8) + b"\x7f\x01"])
def test_not_zmtp_3_is_refused_as_soon_as_it_shows(start):
    """HTTP, ZMTP 1.0 (no 0x7f) and 2.0 (revision 1) are refused on the byte that shows it, not after 64."""
    with pytest.raises(ProtocolError):
        Decoder().feed(start)


def test_frames_short_and_long_with_more():
    stream = PEER_GREETING + codec.encode_message([b"", b"x" * 255, b"y" * 256, b"z" * 70000])
    events, _ = decode(stream, max_message=10**6)
    assert events[1:] == [Message([b"", b"x" * 255, b"y" * 256, b"z" * 70000])]
    header = codec.frame_header(256, codec.MORE)
    assert header == b"\x03" + (256).to_bytes(8, "big")


def test_commands_ready_ping_pong_error():
    ready = codec.ready(b"ROUTER")
    assert ready == b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06ROUTER"
    (command,) = Decoder().feed(PEER_GREETING + ready)[1:]
    assert command.name == b"READY" and codec.parse_properties(command.data) == {"socket-type": b"ROUTER"}
    assert codec.ping(10.0) == b"\x04\x07\x04PING\x00\x64"
    assert codec.parse_ping(b"\x00\x64" + b"c" * 20) == (10.0, b"c" * 16)
    assert codec.pong(b"ctx") == b"\x04\x08\x04PONGctx"
    assert codec.error("no") == b"\x04\x09\x05ERROR\x02no"
    with pytest.raises(ValueError):
        codec.ping(70.0)  # libzmq keeps TTL * 100 ms in 16 bits


def test_properties_are_case_insensitive_and_checked():
    data = b"\x0bsocket-TYPE\x00\x00\x00\x03REQ\x08Identity\x00\x00\x00\x00"
    assert codec.parse_properties(data) == {"socket-type": b"REQ", "identity": b""}
    for bad in (b"\x0bSocket-Type\x00\x00\x00\x09REQ", b"\x00", b"\x05ab"):
        with pytest.raises(ProtocolError):
            codec.parse_properties(bad)


frame = st.binary(max_size=300) | st.builds(lambda n: b"b" * n, st.integers(256, 900))
message = st.lists(frame, min_size=1, max_size=5)
command = st.builds(lambda name, data: Command(name, data), st.binary(min_size=1, max_size=10), st.binary(max_size=40))
traffic = st.lists(message.map(Message) | command, max_size=12)


def encoded(item) -> bytes:
    if isinstance(item, Command):
        return codec.encode_command(item.name, item.data)
    return codec.encode_message(item.frames)


def expected(item, limit: int = LIMIT):
    """What the decoder reports for one item sent: the item, or TooLarge with the envelope for a big message."""
    if isinstance(item, Command) or sum(map(len, item.frames)) <= limit:
        return item
    total, kept = 0, []
    for body in item.frames:
        if total + len(body) > limit:
            break
        total += len(body)
        kept.append(body)
    cut = next((index + 1 for index, body in enumerate(kept) if not body), 0)
    return TooLarge(kept[:cut], sum(map(len, item.frames)))


@settings(max_examples=300, deadline=None)
@given(traffic, st.lists(st.integers(0, 10**6), max_size=30))
def test_any_traffic_in_any_chunks_decodes_to_what_was_sent(items, cuts):
    stream = PEER_GREETING + b"".join(map(encoded, items))
    events, held = decode(stream, cuts, max_message=LIMIT)
    assert events == [codec.parse_greeting(PEER_GREETING), *map(expected, items)]
    assert held <= LIMIT + 9  # frames of one message within the limit, plus one frame header


@settings(max_examples=100, deadline=None)
@given(st.integers(LIMIT + 1, 50 * LIMIT), st.lists(st.integers(0, 10**6), max_size=40))
def test_a_message_over_the_limit_is_discarded_as_it_streams_and_reported_with_its_envelope(size, cuts):
    stream = PEER_GREETING + codec.encode_message([b"", b"q" * size]) + codec.encode_message([b"", b"next"])
    events, held = decode(stream, cuts, max_message=LIMIT)
    assert events[1:] == [TooLarge([b""], size), Message([b"", b"next"])]
    assert held <= LIMIT + 9


def test_too_many_frames_is_too_large_too():
    stream = PEER_GREETING + codec.encode_message([b""] * 100) + codec.encode_message([b"ok"])
    assert Decoder(max_frames=64).feed(stream)[1:] == [TooLarge([b""], 0), Message([b"ok"])]


def test_a_frame_over_256_mib_is_a_protocol_error_on_its_header():
    header = codec.frame_header(300 * 1024 * 1024)
    decoder = Decoder()
    decoder.feed(PEER_GREETING)
    with pytest.raises(ProtocolError):
        decoder.feed(header)
    assert decoder.buffered <= len(header)


def test_a_frame_of_256_mib_is_discarded_without_being_held():
    decoder = Decoder()
    decoder.feed(PEER_GREETING + codec.frame_header(0, codec.MORE) + codec.frame_header(256 * 1024 * 1024))
    block = bytes(1024 * 1024)
    for _ in range(255):
        assert decoder.feed(block) == [] and decoder.buffered == 0
    assert decoder.feed(block + codec.encode_message([b"after"])) == [TooLarge([b""], 256 * 1024 * 1024),
                                                                      Message([b"after"])]


@pytest.mark.parametrize("bad", [
    b"\x08\x00",  # a reserved flag bit
    b"\x05\x03abc",  # a command with MORE
    b"\x04\x00",  # an empty command
    b"\x04\x02\x05R",  # a command name running past its frame
])
def test_malformed_frames_are_protocol_errors(bad):
    decoder = Decoder()
    decoder.feed(PEER_GREETING)
    with pytest.raises(ProtocolError):
        decoder.feed(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10**6), max_size=10))
def test_garbage_is_events_or_a_protocol_error_never_a_crash_or_a_hoard(garbage, cuts):
    decoder = Decoder(max_message=LIMIT)
    decoder.feed(PEER_GREETING)
    try:
        for chunk in chunks(garbage, cuts):
            decoder.feed(chunk)
            assert decoder.buffered <= LIMIT + 9 + len(chunk)
    except ProtocolError:
        pass
