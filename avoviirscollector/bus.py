"""posttroll helpers: follow the internal bus, and encode messages for the workers in the field.

The internal bus is posttroll with a local nameserver and no multicast. Messages that leave the suite (PUB on
``PUBLISH_PORT``, task replies on ``TASK_PORT``) must decode both with today's posttroll and with posttroll 1.5,
which accepts only version ``v1.01`` and naive ISO datetimes of at most 26 characters: :func:`encode_legacy`
converts every datetime to naive UTC and writes ``v1.01``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from posttroll.message import Message

LEGACY_VERSION = "v1.01"


def naive_utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime converted to UTC without tzinfo; a naive one is taken as UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def legacy_data(value: Any) -> Any:
    """Copy of message data with every datetime (at any depth) made naive UTC."""
    if isinstance(value, dt.datetime):
        return naive_utc(value)
    if isinstance(value, dict):
        return {key: legacy_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [legacy_data(item) for item in value]
    return value


def legacy_message(msg: Message) -> Message:
    """A copy of ``msg`` that posttroll 1.5 can decode: v1.01, naive UTC header time and data datetimes."""
    out = Message(msg.subject, msg.type, legacy_data(msg.data), binary=msg.binary, version=LEGACY_VERSION)
    out.sender = msg.sender
    out.time = naive_utc(msg.time)
    return out


def encode_legacy(msg: Message) -> str:
    """Encode ``msg`` in the form every consumer in the field decodes (see :func:`legacy_message`)."""
    return legacy_message(msg).encode()


def new_message(subject: str, atype: str, data: Any) -> Message:
    """A message created by this suite, stamped now (naive UTC) and in the legacy version."""
    msg = Message(subject, atype, legacy_data(data), version=LEGACY_VERSION)
    msg.time = naive_utc(dt.datetime.now(dt.UTC))
    return msg


def follow(topics: list[str], nameserver: str = "localhost"):
    """Subscribe to every publisher on the internal bus, including ones that start or restart later.

    Returns the posttroll subscriber context; iterate ``sub.recv(timeout=1)`` (it yields ``None`` once a second
    when nothing arrives, so loops can check their stop flag).
    """
    from posttroll.subscriber import Subscribe

    return Subscribe(services="", topics=topics, addr_listener=True, nameserver=nameserver)
