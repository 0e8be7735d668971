"""msg_publisher: republish every message of the internal posttroll bus on one public ZeroMQ PUB port.

What it does
    Follows every publisher registered with the local posttroll nameserver (trollstalker, the segment_gatherers,
    and any that start or restart later) and republishes each message on PUB ``tcp://*:PUBLISH_PORT``, encoded so
    that both today's posttroll and posttroll 1.5 (the workers' version) decode it: version v1.01, header and data
    datetimes naive UTC. posttroll's own plumbing (nameserver address announcements, subject ``/address...``) is
    not republished. A slow or dead subscriber never blocks it: sends never wait (ZeroMQ drops for a subscriber
    whose queue is full, and the drop is counted in the log). TCP keepalive is on, so half-open connections of
    vanished dashboards are reaped.

Settings (environment, see config.py)
    PUBLISH_PORT (default 29092). ALLOWED_CLIENTS: only those peers may subscribe (ZAP, see access.py).
    HEARTBEAT_TTL (default 10 s): ZMTP heartbeats, so a subscriber drops the connection of a host that hung or died
    and connects again by itself (heartbeat.py).
    posttroll's own POSTTROLL_* variables choose the nameserver ports.

Ready
    Once ``PUBLISH_PORT`` is bound and the bus subscribed it writes ``$VIIRS_BASE/run/ready/msg_publisher.json``
    (ready.py), removed when it stops. Until the nameserver answers it asks again every second (one line says it
    waits), so a stop meanwhile is seen.

Signals
    SIGTERM, SIGINT: stop within a second (also while it waits for the nameserver), close the sockets, exit 0.

Logs
    One line at start, one summary line a minute while messages flow (forwarded / dropped), one per error.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass

import zmq
from posttroll.message import MessageError

from avoviirscollector import bus
from avoviirscollector.access import listen_dual_stack, start_access_control
from avoviirscollector.config import settings_or_exit
from avoviirscollector.heartbeat import PUBLISHER_PING_SECONDS, send_heartbeats
from avoviirscollector.logs import setup_logging
from avoviirscollector.ready import ReadyMarker
from avoviirscollector.signals import stop_on_signals

LOG = logging.getLogger("msg_publisher")
PLUMBING_SUBJECTS = ("/address",)
SUMMARY_EVERY_S = 60.0


@dataclass(frozen=True)
class PublisherConfig:
    port: int
    bind_host: str = "*"
    high_water_mark: int = 10000
    heartbeat_ttl: float = 10.0  # seconds (heartbeat.py)


def configure_keepalive(sock: zmq.Socket) -> None:
    """TCP keepalive on every connection of ``sock``: idle 60 s, probe every 10 s, give up after 6."""
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 6)


class MsgPublisher:
    """Forward the internal bus to a public PUB socket until :meth:`stop` is called."""

    def __init__(self, config: PublisherConfig, follow=bus.follow, context: zmq.Context | None = None,
                 ready: ReadyMarker | None = None, ask_nameserver=bus.registered_publishers):
        self.config = config
        self._follow = follow
        self._ready = ready
        self._ask_nameserver = ask_nameserver
        self._context = context or zmq.Context.instance()
        self._stop = threading.Event()
        self.forwarded = 0
        self.dropped = 0
        self._last_summary, self._last_count = time.monotonic(), (0, 0)

    def stop(self) -> None:
        self._stop.set()

    def _open_pub(self) -> zmq.Socket:
        pub = self._context.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, self.config.high_water_mark)
        configure_keepalive(pub)
        # a subscriber drops the connection of a host that hung or lost its link, and this socket a silent
        # subscriber's; a PING soon after each message (heartbeat.py)
        send_heartbeats(pub, self.config.heartbeat_ttl, PUBLISHER_PING_SECONDS)
        listen_dual_stack(pub)  # IPv6 and IPv4 subscribers (IPv6 entries of ALLOWED_CLIENTS can match)
        pub.bind(f"tcp://{self.config.bind_host}:{self.config.port}")
        return pub

    def forward(self, pub: zmq.Socket, msg) -> None:
        """Republish one message (legacy encoding); never blocks."""
        if msg.subject.startswith(PLUMBING_SUBJECTS):
            return
        raw = bus.encode_legacy(msg)
        try:
            pub.send_string(raw, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return
        self.forwarded += 1
        LOG.debug("forwarded %s", raw[:200])

    def run(self) -> None:
        pub = self._open_pub()
        self._last_summary, self._last_count = time.monotonic(), (0, 0)
        try:
            if not self._nameserver_answers():
                return
            with self._follow([""]) as sub:  # subscribed (and the nameserver asked) before the start line
                LOG.info("publishing the internal bus on tcp://%s:%d", self.config.bind_host, self.config.port)
                if self._ready is not None:
                    self._ready.set()
                while not self._stop.is_set():
                    self._forward_until_stop(pub, sub)
        finally:
            if self._ready is not None:
                self._ready.clear()
            pub.close(linger=0)
            LOG.info("stopped after forwarding %d messages (%d dropped)", self.forwarded, self.dropped)

    def _nameserver_answers(self) -> bool:
        """Ask the nameserver every second until it answers (True) or :meth:`stop` (False): posttroll's subscriber
        would wait 10 s for it, deaf to a stop."""
        said = False
        while not self._stop.is_set():
            try:
                self._ask_nameserver(timeout=0.8)
                return True
            except Exception as err:  # noqa: BLE001 (a timeout or a ZeroMQ error: not up yet)
                if not said:
                    LOG.info("waiting for the posttroll nameserver (%s: %s)", type(err).__name__, err)
                    said = True
            self._stop.wait(0.2)
        return False

    def _forward_until_stop(self, pub: zmq.Socket, sub) -> None:
        """Forward what the bus brings until :meth:`stop`; an undecodable message is logged and ends the round."""
        try:
            for msg in sub.recv(timeout=1):
                if msg is not None:
                    self.forward(pub, msg)
                self._summarize()
                if self._stop.is_set():
                    return
        except MessageError as err:
            LOG.error("undecodable message on the internal bus skipped: %s", err)

    def _summarize(self) -> None:
        """One line a minute while messages flow."""
        now = time.monotonic()
        if now - self._last_summary < SUMMARY_EVERY_S:
            return
        if (self.forwarded, self.dropped) != self._last_count:
            LOG.info("forwarded %d messages, dropped %d (totals since start)", self.forwarded, self.dropped)
        self._last_summary, self._last_count = now, (self.forwarded, self.dropped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msg_publisher", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every forwarded message")
    args = parser.parse_args(argv)
    settings = settings_or_exit("msg_publisher")
    setup_logging("msg_publisher", args.verbose)
    context = zmq.Context()  # the public PUB's own context: posttroll's sockets (the bus) are on another
    start_access_control(context, settings, LOG)  # ALLOWED_CLIENTS (SPEC 12): before the PUB is made
    publisher = MsgPublisher(PublisherConfig(port=settings.publish_port, heartbeat_ttl=settings.heartbeat_ttl),
                             context=context, ready=ReadyMarker(settings.viirs_base, "msg_publisher"))
    stop_on_signals(publisher.stop)
    publisher.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
