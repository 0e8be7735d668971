"""posttroll helpers: follow the internal bus, and encode messages for the workers in the field.

The internal bus is posttroll with a local nameserver and no multicast. Messages that leave the suite (PUB on
``PUBLISH_PORT``, task replies on ``TASK_PORT``) must decode both with today's posttroll and with posttroll 1.5,
which accepts only version ``v1.01`` and naive ISO datetimes of at most 26 characters: :func:`encode_legacy`
converts every datetime to naive UTC and writes ``v1.01``.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from posttroll.message import Message

from avoviirscollector import isotime

LEGACY_VERSION = "v1.01"
LOG = logging.getLogger("bus")


def naive_utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime converted to UTC without tzinfo; a naive one is taken as UTC already."""
    return isotime.naive(value)


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


class Follower:
    """Subscribe to every publisher on the internal bus, including ones that start or restart later.

    posttroll's subscriber asks the nameserver once, then relies on the nameserver's address announcements. An
    announcement made while the subscriber's own connection to the announcer is still being set up is lost, and
    the publisher with it, until a restart. So a background thread also asks the nameserver for every publisher
    every ``refresh`` seconds, and :meth:`recv` adds any that were missed (logged as a warning).
    """

    def __init__(self, topics: list[str], nameserver: str = "localhost", refresh: float = 10.0):
        self.topics = topics
        self.nameserver = nameserver
        self.refresh = refresh
        self._found: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._context = None
        self._sub = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Follower:
        from posttroll.subscriber import Subscribe

        self._context = Subscribe(services="", topics=self.topics, addr_listener=True, nameserver=self.nameserver)
        self._sub = self._context.__enter__()
        self._thread = threading.Thread(target=self._ask_nameserver, name="bus-refresh", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._context.__exit__(*exc)

    def _ask_nameserver(self) -> None:
        from posttroll.ns import get_pub_address

        wait = min(1.0, self.refresh)
        while not self._stop.wait(wait):  # soon after start (when announcements are most often missed), then slower
            wait = min(wait * 2, self.refresh)
            try:
                for address in get_pub_address("", timeout=2, nameserver=self.nameserver):
                    self._found.put(address)
            except Exception as err:  # nameserver down or restarting: the next round tries again
                LOG.debug("nameserver lookup failed: %s", err)

    def _add_found(self) -> None:
        known = {a.get("URI") for a in self._sub.addresses}
        while True:
            try:
                address = self._found.get_nowait()
            except queue.Empty:
                return
            uri = address.get("URI") if isinstance(address, dict) else None
            if uri and uri not in known:
                LOG.warning("subscribing to %s (%s), which the address announcements missed", uri,
                            ",".join(address.get("service", [])))
                self._sub.add(address)

    def recv(self, timeout: float = 1) -> Iterator[Message | None]:
        """Messages as they come; ``None`` once per ``timeout`` seconds of silence (so loops can check a flag)."""
        for msg in self._sub.recv(timeout=timeout):
            self._add_found()
            yield msg


def registered_publishers(timeout: float = 1.0, nameserver: str = "localhost") -> list[dict]:
    """Every publisher registered with the nameserver (``{"URI": "tcp://host:port", "service": [...], ...}``, the
    nameserver's own address announcer included); raises ``TimeoutError`` (or a ZeroMQ error) when it does not
    answer within ``timeout`` seconds."""
    from posttroll.ns import get_pub_address

    return list(get_pub_address("", timeout=timeout, nameserver=nameserver))


def follow(topics: list[str], nameserver: str = "localhost") -> Follower:
    """A :class:`Follower` of ``topics`` (use it as a context manager, then iterate ``recv(timeout=1)``)."""
    return Follower(topics, nameserver)
