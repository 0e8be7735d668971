"""ZMTP 3.0/3.1 on the wire, as the server side of a ROUTER speaks it with the NULL mechanism. Pure: bytes in, events
and bytes out; no sockets, no clock.

What goes over a connection (RFC 23 ZMTP 3.0, RFC 37 ZMTP 3.1):

- a greeting of 64 bytes each way: ``FF 00*8 7F``, version ``03 01`` (we offer 3.1), the mechanism name ``NULL``
  padded with zeros to 20 bytes, as-server (0 for NULL), 31 zeros of filler (:func:`greeting`,
  :meth:`Decoder.feed` reports the peer's as :class:`Greeting`);
- then frames: one flags byte (bit 0 MORE, bit 1 LONG, bit 2 COMMAND; bits 3-7 must be 0), the body size in one
  byte, or in 8 bytes big-endian when LONG is set, then the body. A message is the frames up to the first one
  without MORE (:func:`encode_message`, :class:`Message`);
- a command is one frame with COMMAND set: name length (1 byte), name, data. The NULL handshake is one ``READY``
  each way, whose data are properties (name length 1 byte, name, value length 4 bytes big-endian, value;
  :func:`ready`, :func:`parse_properties`); ``ERROR`` (reason length 1 byte, reason) refuses the peer
  (:func:`error`); ZMTP 3.1 adds ``PING`` (TTL in deciseconds, 2 bytes, then up to 16 bytes of context) and
  ``PONG`` (the context echoed; :func:`ping`, :func:`pong`).

Bounded memory (:class:`Decoder`). A message whose frames add up to more than ``max_message`` bytes (or that has
more than ``max_frames`` frames) is not kept: from the frame that crosses the limit on, its bodies are counted and
thrown away as they stream in, and when its last frame has passed the decoder reports :class:`TooLarge` with the
routing envelope it had seen (for a REQ peer the empty delimiter, so that the caller can still answer it with an
error). So a decoder never holds more than ``max_message`` bytes of frames plus the chunk it was last fed. A frame
that announces more than ``max_frame`` bytes, a command over ``max_message``, a greeting that is not ZMTP 3 and any
malformed input raise :class:`ProtocolError`: the caller closes that connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

GREETING_SIZE = 64
SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"
MORE, LONG, COMMAND = 0x01, 0x02, 0x04
#: a message's frames may add up to this many bytes (task_broker's request limit, protocol.MAX_REQUEST_BYTES)
MAX_MESSAGE_BYTES = 64 * 1024
#: a frame announcing more is a protocol error (what task_broker's ROUTER refused with ZMQ_MAXMSGSIZE)
MAX_FRAME_BYTES = 256 * 1024 * 1024
#: a message with more frames is "too large" like one with too many bytes (a REQ sends two)
MAX_FRAMES = 64
#: a PING's context is at most this long (ZMTP 3.1); longer ones are cut, as libzmq does
MAX_PING_CONTEXT = 16
#: the TTL of a PING is 16 bits of deciseconds, and libzmq >= 4.2 multiplies it by 100 into a 16-bit count of
#: milliseconds: more than 655 deciseconds wraps around there
MAX_TTL_DECISECONDS = 655


class ProtocolError(ValueError):
    """Input that is not ZMTP 3 as this server speaks it: the connection is to be closed."""


class Greeting(NamedTuple):
    """The peer's greeting: its version (3.0 peers know no PING) and mechanism."""

    major: int
    minor: int
    mechanism: bytes
    as_server: bool


class Command(NamedTuple):
    name: bytes
    data: bytes


class Message(NamedTuple):
    frames: list[bytes]


class TooLarge(NamedTuple):
    """A message over the limit, discarded: its routing envelope (the frames up to and including the first empty
    one, when they came before the limit was crossed; else none) and how many body bytes it had."""

    envelope: list[bytes]
    size: int


Event = Greeting | Command | Message | TooLarge


def greeting(minor: int = 1, mechanism: bytes = b"NULL", as_server: bool = False) -> bytes:
    """Our 64-byte greeting: ZMTP 3.``minor``, the mechanism, as-server."""
    return SIGNATURE + bytes([3, minor]) + mechanism.ljust(20, b"\x00") + bytes([as_server]) + bytes(31)


def parse_greeting(raw: bytes) -> Greeting:
    """The peer's 64-byte greeting; ProtocolError unless it is ZMTP 3 or later."""
    if len(raw) != GREETING_SIZE or raw[0] != 0xFF or not raw[9] & 0x01:
        raise ProtocolError("not a ZMTP 3 greeting")
    if raw[10] < 3:
        raise ProtocolError(f"ZMTP revision {raw[10]} (libzmq before 4.0): only ZMTP 3 is spoken")
    return Greeting(raw[10], raw[11], raw[12:32].rstrip(b"\x00"), bool(raw[32]))


def frame_header(size: int, flags: int = 0) -> bytes:
    """The flags and size of one frame of ``size`` bytes (short form under 256 bytes)."""
    if size < 256:
        return bytes((flags, size))
    return bytes((flags | LONG,)) + size.to_bytes(8, "big")


def encode_message(frames: Sequence[bytes]) -> bytes:
    """One multipart message: MORE on every frame but the last."""
    last = len(frames) - 1
    parts = []
    for index, frame in enumerate(frames):
        parts.append(frame_header(len(frame), MORE if index < last else 0))
        parts.append(frame)
    return b"".join(parts)


def encode_command(name: bytes, data: bytes = b"") -> bytes:
    """One command frame."""
    body = bytes((len(name),)) + name + data
    return frame_header(len(body), COMMAND) + body


def ready(socket_type: bytes, properties: dict[bytes, bytes] | None = None) -> bytes:
    """The NULL mechanism's READY command with ``Socket-Type`` (and any other properties)."""
    props = {b"Socket-Type": socket_type, **(properties or {})}
    data = b"".join(bytes((len(k),)) + k + len(v).to_bytes(4, "big") + v for k, v in props.items())
    return encode_command(b"READY", data)


def error(reason: str) -> bytes:
    """An ERROR command (the reason cut to 255 bytes)."""
    text = reason.encode("utf-8", errors="replace")[:255]
    return encode_command(b"ERROR", bytes((len(text),)) + text)


def ping(ttl_s: float, context: bytes = b"") -> bytes:
    """A PING asking the peer to drop the connection if nothing comes from us for ``ttl_s`` seconds."""
    deciseconds = round(ttl_s * 10)
    if not 0 <= deciseconds <= MAX_TTL_DECISECONDS:
        raise ValueError(f"a heartbeat TTL of {ttl_s} s is outside 0-{MAX_TTL_DECISECONDS / 10} s (libzmq's limit)")
    return encode_command(b"PING", deciseconds.to_bytes(2, "big") + context[:MAX_PING_CONTEXT])


def pong(context: bytes) -> bytes:
    """The answer to a PING: its context, cut to 16 bytes."""
    return encode_command(b"PONG", context[:MAX_PING_CONTEXT])


def parse_ping(data: bytes) -> tuple[float, bytes]:
    """A PING's data: (TTL in seconds, context)."""
    if len(data) < 2:
        raise ProtocolError("PING without a TTL")
    return int.from_bytes(data[:2], "big") / 10, data[2:2 + MAX_PING_CONTEXT]


def parse_properties(data: bytes) -> dict[str, bytes]:
    """The properties of a READY command, names lower-cased (they are case-insensitive)."""
    props: dict[str, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        size = data[pos]
        pos += 1
        if size == 0 or pos + size + 4 > end:
            raise ProtocolError("malformed property in READY")
        try:
            name = data[pos:pos + size].decode("ascii").lower()
        except UnicodeDecodeError:
            raise ProtocolError("property name in READY is not ASCII") from None
        pos += size
        length = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if pos + length > end:
            raise ProtocolError("property value in READY runs past the command")
        props[name] = data[pos:pos + length]
        pos += length
    return props


def parse_command(body: bytes) -> Command:
    """A command frame's body: name length, name, data."""
    if not body or body[0] == 0 or body[0] + 1 > len(body):
        raise ProtocolError("malformed command")
    size = body[0]
    return Command(body[1:1 + size], body[1 + size:])


class Decoder:
    """Bytes of one connection in, events out (:meth:`feed`): the greeting, then commands, messages and messages
    over the limit. Holds at most ``max_message`` bytes of frames plus the last chunk fed (module docstring)."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES, max_frame: int = MAX_FRAME_BYTES,
                 max_frames: int = MAX_FRAMES) -> None:
        self.max_message, self.max_frame, self.max_frames = max_message, max_frame, max_frames
        self._buf = bytearray()
        self._greeted = False
        self._frames: list[bytes] = []  # the message being assembled
        self._size = 0  # its body bytes so far (discarded ones too)
        self._envelope: list[bytes] | None = None  # set while a message over the limit is being discarded
        self._skip = 0  # bytes of the current frame still to throw away
        self._skip_more = False  # whether the frame being thrown away has MORE

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input and the frames of the message being assembled."""
        return len(self._buf) + sum(len(frame) for frame in self._frames)

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the stream (any chunk size); the events they complete, in order."""
        events: list[Event] = []
        if self._skip and not self._buf:
            data = self._discard(memoryview(data), events)
        self._buf += data
        if not self._greeted and not self._read_greeting(events):
            return events
        self._read_frames(events)
        return events

    def _discard(self, data: memoryview, events: list[Event]) -> memoryview:
        """Throw away the part of ``data`` that belongs to the frame being discarded; the rest."""
        taken = min(self._skip, len(data))
        self._skip -= taken
        if not self._skip:
            self._skipped_frame_ends(events)
        return data[taken:]

    def _skipped_frame_ends(self, events: list[Event]) -> None:
        if not self._skip_more:
            events.append(TooLarge(self._envelope or [], self._size))
            self._envelope, self._size = None, 0

    def _read_greeting(self, events: list[Event]) -> bool:
        buf = self._buf
        if (buf[:1] and buf[0] != 0xFF) or (len(buf) >= 10 and not buf[9] & 0x01):
            raise ProtocolError("not ZMTP (bad signature)")
        if len(buf) > 10 and buf[10] < 3:
            raise ProtocolError(f"ZMTP revision {buf[10]} (libzmq before 4.0): only ZMTP 3 is spoken")
        if len(buf) < GREETING_SIZE:
            return False
        events.append(parse_greeting(bytes(buf[:GREETING_SIZE])))
        del buf[:GREETING_SIZE]
        self._greeted = True
        return True

    def _read_frames(self, events: list[Event]) -> None:
        buf = self._buf
        pos, end = 0, len(buf)
        while pos < end:
            if self._skip:
                taken = min(self._skip, end - pos)
                pos += taken
                self._skip -= taken
                if self._skip:
                    break
                self._skipped_frame_ends(events)
                continue
            flags = buf[pos]
            if flags & 0xF8:
                raise ProtocolError(f"reserved bits set in frame flags {flags:#04x}")
            head = 9 if flags & LONG else 2
            if end - pos < head:
                break
            size = int.from_bytes(buf[pos + 1:pos + 9], "big") if flags & LONG else buf[pos + 1]
            used = self._frame(flags, size, head, buf, pos, end, events)
            if not used:
                break
            pos += used
        del buf[:pos]

    def _frame(self, flags: int, size: int, head: int, buf: bytearray, pos: int, end: int,
               events: list[Event]) -> int:
        """Take one frame whose header starts at ``pos``; the bytes used, 0 when it is not all there yet (a frame
        being discarded uses its header only: its body goes by the skip count)."""
        if flags & COMMAND:
            if flags & MORE or size > self.max_message:
                raise ProtocolError("command frame with MORE or over the size limit")
            if end - pos - head < size:
                return 0
            events.append(parse_command(bytes(buf[pos + head:pos + head + size])))
            return head + size
        if size > self.max_frame:
            raise ProtocolError(f"a frame of {size} bytes (the limit is {self.max_frame})")
        more = bool(flags & MORE)
        if self._envelope is None and (self._size + size > self.max_message or len(self._frames) >= self.max_frames):
            self._start_discarding()
        if self._envelope is not None:
            self._size += size
            self._skip, self._skip_more = size, more
            if not size:
                self._skipped_frame_ends(events)
            return head
        if end - pos - head < size:
            return 0
        self._frames.append(bytes(buf[pos + head:pos + head + size]))
        self._size += size
        if not more:
            events.append(Message(self._frames))
            self._frames, self._size = [], 0
        return head + size

    def _start_discarding(self) -> None:
        frames = self._frames
        cut = next((index + 1 for index, frame in enumerate(frames) if not frame), 0)
        self._envelope = frames[:cut]
        self._frames = []
