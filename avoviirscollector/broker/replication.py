"""The pair's replication: each hand-out of the active host's task_broker is on the other host before the worker's
reply leaves (two hosts, one collector: ``pair/__init__.py``, README "Two hosts"). Only with ``PAIR_PEER`` set.

Both hosts run the whole suite and queue every granule themselves; what travels is the hand-outs. Each broker binds
a ROUTER on ``PAIR_REPLICATION_PORT`` (every address; only ``PAIR_PEER`` is heard) and connects a DEALER to the other
host's. A message is ``[b"records", seq, line, ...]``: ``seq`` the sender's sequence number (ASCII digits), each
line one record of ``ondisk/journal.py``: a ``put`` (the task as it was handed out) followed by its ``take``, a
``sent`` (the reply of that hand-out left), a ``put`` alone (its reply could not be delivered: the task is queued
again), or none (a probe). The receiver applies them
(:meth:`BrokerCore.peer_took`: the granules leave its queue or are kept as taken; :meth:`BrokerCore.peer_sent`),
writes them to its journal (each record one ``os.write``: it outlives a kill of the process; fsync'd within a
second, as the active's own hand-out is), then answers each with ``[b"ok", seq]``; a message it cannot
read is answered ``[b"error", seq, why]`` and logged. A message from another address is dropped (one WARNING line an
hour per address).

The link (:class:`PeerLink`, pure) is in one of three states, each change logged:

- ``whole``: every hand-out waits for the other host's answer, at most :data:`ACK_SECONDS`, before its reply
  leaves (on a LAN the wait is a fraction of a millisecond). A link with nothing to send for a second sends a
  probe; a message unanswered for :data:`SILENT_LINK_SECONDS` makes it alone: a link that died while no hand-out
  went out (a standby, an active between passes) is said alone within about 3 s, not at the next hand-out;
- ``alone``: the other host did not answer in time or is not connected (the DEALER sends only to a connected peer,
  and drops a peer silent for :data:`SILENT_SECONDS`): hand-outs go on without waiting, and a probe goes out every
  second. This is where the broker starts;
- ``catching up``: a probe was answered: this host sends the whole of its ledger (the hand-outs and drops of the
  last ``RECOVERY_HOURS`` and one hour; the other host applies each once, so sending one twice is harmless),
  then a probe; that probe's answer makes the pair whole. Hand-outs meanwhile wait for their answer as when whole.
  What this host learnt from the other goes back too, with its ``by``: a host whose power failed may have lost the
  end of its journal (its last hand-outs), and learns them back so.

What is not replicated: an operator's re-queue (``Forget``) stays on the host where it was made; tasks themselves
are not (each host queues the granules its own gatherers complete).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import zmq

from avoviirscollector import isotime
from avoviirscollector.broker.core import BrokerCore
from avoviirscollector.broker.taskqueue import Task, task_from_record, task_to_record
from avoviirscollector.config import PairSettings
from avoviirscollector.ondisk.journal import HANDED_OUT, Put, Record, Sent, Take, decode, encode

WHOLE, ALONE, CATCHING_UP = "whole", "alone", "catching up"
#: a hand-out waits this long at most for the other host's answer; then the link is alone and the reply leaves
ACK_SECONDS = 0.5
#: a probe of the other host this often while alone, and after this long with nothing sent while whole
PROBE_SECONDS = 1.0
#: a whole link whose oldest message has waited this long for its answer is alone (a hand-out waits ACK_SECONDS;
#: a probe, a sent may wait longer behind the other host's work on a busy host)
SILENT_LINK_SECONDS = 2.0
#: the DEALER drops a connection to the other host that has been silent this long (ZMTP heartbeats)
SILENT_SECONDS = 3.0
#: records per message of a catch-up
CATCH_UP_BATCH = 200
#: a refused address is logged once an hour
REFUSED_LOG_SECONDS = 3600.0
KIND = b"records"

log = logging.getLogger("task_broker")


class PeerLink:
    """The state of the replication link to the other host (see the module's docstring): no sockets, a clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.state = ALONE
        self.since = clock()  # when the state began
        self.seq = 0
        self.unacked: dict[int, float] = {}  # seq -> when it was sent
        self.catch_up_seq: int | None = None  # the probe that ends a catch-up
        self._probe_at = float("-inf")
        self.last_ack: float | None = None
        self.last_sent = float("-inf")

    @property
    def waits(self) -> bool:
        """Whether a hand-out waits for the other host's answer."""
        return self.state != ALONE

    def next(self) -> int:
        """The sequence number of a message being sent now."""
        self.seq += 1
        self.unacked[self.seq] = self.last_sent = self.clock()
        return self.seq

    def acked(self, seq: int) -> str | None:
        """The other host answered ``seq``: ``CATCHING_UP`` when the shell is now to send the ledger, ``WHOLE``
        when the pair just became whole, else None."""
        now = self.clock()
        self.last_ack = now
        for earlier in [earlier for earlier in self.unacked if earlier <= seq]:
            del self.unacked[earlier]  # answers come in order: one never given before this one never comes
        if self.state == ALONE:
            self._enter(CATCHING_UP, now)
            return CATCHING_UP
        if self.state == CATCHING_UP and self.catch_up_seq is not None and seq >= self.catch_up_seq:
            self._enter(WHOLE, now)
            return WHOLE
        return None

    def catching_up(self, last_seq: int) -> None:
        """The catch-up has been sent; its last message is ``last_seq``."""
        self.catch_up_seq = last_seq

    def lost(self) -> bool:
        """The other host did not answer in time or cannot be reached; True when the link was not alone yet."""
        if self.state == ALONE:
            return False
        self._enter(ALONE, self.clock())
        return True

    def probe_due(self) -> bool:
        """A probe is due (and counted as sent): alone and none went out for :data:`PROBE_SECONDS`, or whole with
        nothing sent for that long and nothing waiting for an answer."""
        now = self.clock()
        if self.state == CATCHING_UP or now < self._probe_at:
            return False
        if self.state == WHOLE and (self.unacked or now - self.last_sent < PROBE_SECONDS):
            return False
        self._probe_at = now + PROBE_SECONDS
        for seq in [seq for seq, sent in self.unacked.items() if now - sent > 10 * PROBE_SECONDS]:
            del self.unacked[seq]  # probes nobody answered: forgotten
        return True

    def silent(self) -> bool:
        """Whole, and the oldest message has waited over :data:`SILENT_LINK_SECONDS` for its answer."""
        return self.state == WHOLE and bool(self.unacked) and \
            self.clock() - min(self.unacked.values()) > SILENT_LINK_SECONDS

    def lag(self) -> tuple[int, float]:
        """Messages the other host has not answered, and the age of the oldest (0 when none)."""
        if not self.unacked or self.state == ALONE:
            return 0, 0.0
        return len(self.unacked), self.clock() - min(self.unacked.values())

    def _enter(self, state: str, now: float) -> None:
        self.state, self.since = state, now
        self.catch_up_seq = None
        if state == ALONE:
            self.unacked.clear()


class Replication:
    """The replication's sockets and their use by the broker's loop (one thread: the loop's)."""

    def __init__(self, pair: PairSettings, core: BrokerCore, context: zmq.Context,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.peer = str(pair.peer)
        self.port = pair.replication_port
        self.core = core
        self.clock = clock
        self.link = PeerLink(clock)
        self.inbound = context.socket(zmq.ROUTER)
        self.outbound = context.socket(zmq.DEALER)
        self._refused: dict[str, float] = {}
        self.received = 0  # the other host's hand-outs applied here
        self.alone_since: float | None = time.time()  # epoch seconds; None while whole

    def bind(self) -> bool:
        """Bind the ROUTER and connect the DEALER; False when the port cannot be bound (logged)."""
        for sock in (self.inbound, self.outbound):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.HEARTBEAT_IVL, int(SILENT_SECONDS * 1000 / 3))
            sock.setsockopt(zmq.HEARTBEAT_TTL, int(SILENT_SECONDS * 1000))
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(SILENT_SECONDS * 1000))
        self.inbound.setsockopt(zmq.MAXMSGSIZE, 16 * 1024 * 1024)
        self.outbound.setsockopt(zmq.IMMEDIATE, 1)  # a message goes to a connected peer, or not at all
        self.outbound.setsockopt(zmq.RECONNECT_IVL, 200)
        self.outbound.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        try:
            self.inbound.bind(f"tcp://*:{self.port}")
        except zmq.ZMQError as err:
            log.error("cannot bind PAIR_REPLICATION_PORT %d: %s", self.port, err)
            return False
        self.outbound.connect(f"tcp://{self.peer}:{self.port}")
        log.info("pair: hand-outs replicated to %s:%d; the other host's taken on %d (alone until it answers)",
                 self.peer, self.port, self.port)
        return True

    @property
    def sockets(self) -> tuple[zmq.Socket, zmq.Socket]:
        return self.inbound, self.outbound

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    # -- sending -----------------------------------------------------------------------------------------------

    def _send(self, lines: list[bytes]) -> int | None:
        """Send one message; its seq, or None when the other host is not connected (the link is then alone)."""
        seq = self.link.next()
        try:
            self.outbound.send_multipart([KIND, str(seq).encode(), *lines], zmq.NOBLOCK)
        except zmq.Again:
            self.link.unacked.pop(seq, None)
            self._lost("it is not connected")
            return None
        return seq

    def replicate(self, task: Task) -> None:
        """The hand-out of ``task`` (written to this host's journal already) to the other host, before the reply
        leaves: waited for up to :data:`ACK_SECONDS` unless the link is alone."""
        records = self.core.handout_records(task)
        if records is None:
            return
        seq = self._send([encode(record) for record in records])
        if seq is None or not self.link.waits:
            return
        give_up = self.clock() + ACK_SECONDS
        while seq in self.link.unacked and self.link.waits:
            left = give_up - self.clock()
            if left <= 0 or not self.outbound.poll(max(1, int(left * 1000))):
                if seq in self.link.unacked and self.clock() >= give_up:
                    self._lost(f"no answer within {ACK_SECONDS:.1f} s to the hand-out of task {task.id}")
                    return
                continue
            self._acks()

    def returned(self, task: Task) -> None:
        """The reply carrying ``task`` could not be delivered and the task is queued again here: so it is there
        (not waited for)."""
        if self.link.state != ALONE:
            self._send([encode(Put(task_to_record(task)))])

    def sent(self, task_id: int) -> None:
        """The reply of hand-out ``task_id`` left: told to the other host (not waited for)."""
        if self.link.state != ALONE:
            self._send([encode(Sent(task_id))])

    def _lost(self, why: str) -> None:
        if self.link.lost():
            self.alone_since = time.time()
            log.warning("pair: the other host %s does not take hand-outs (%s): serving alone; it is caught up when "
                        "it answers again", self.peer, why)

    def tick(self) -> None:
        """Each second: a probe while alone or idle; a whole link whose answers stopped is alone."""
        if self.link.silent():
            self._lost(f"no answer for {SILENT_LINK_SECONDS:.0f} s")
        elif self.link.probe_due():
            self._send([])

    def _catch_up(self) -> None:
        takes = self.core.hand_outs()
        for start in range(0, len(takes), CATCH_UP_BATCH):
            if self._send([encode(take) for take in takes[start:start + CATCH_UP_BATCH]]) is None:
                return
        last = self._send([])
        if last is not None:
            self.link.catching_up(last)
            log.info("pair: the other host %s answers: catching it up with this host's %d hand-outs", self.peer,
                     len(takes))

    # -- receiving ---------------------------------------------------------------------------------------------

    def handle(self) -> None:
        """What came on the two sockets: the other host's answers, and its records (applied, written, answered)."""
        self._acks()
        self._receive()

    def _acks(self) -> None:
        while self.outbound.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = self.outbound.recv_multipart(zmq.NOBLOCK)
            if len(frames) < 2 or not frames[1].isdigit():
                log.warning("pair: an answer from %s that is not one: %r", self.peer, frames[:3])
                continue
            if frames[0] != b"ok":
                log.error("pair: %s refused message %s: %s", self.peer, frames[1].decode(),
                          b" ".join(frames[2:]).decode("utf-8", "replace"))
            changed = self.link.acked(int(frames[1]))
            if changed == CATCHING_UP:
                self._catch_up()
            elif changed == WHOLE:
                alone = time.time() - self.alone_since if self.alone_since else 0.0
                self.alone_since = None
                log.info("pair: whole again: %s has every hand-out of this host (%.1f s alone)", self.peer, alone)

    def _receive(self) -> None:
        """The other host's messages, applied and answered; at most :data:`CATCH_UP_BATCH` records a turn of the
        loop (a catch-up of thousands waits behind the workers' requests, as a flood of granules does)."""
        answers: list[list[bytes]] = []
        records = 0
        while records < CATCH_UP_BATCH and self.inbound.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = self.inbound.recv_multipart(zmq.NOBLOCK, copy=False)
            records += max(1, len(frames) - 3)
            if len(frames) < 2:
                continue
            address = frames[1].get("Peer-Address")
            if address != self.peer:
                self._refuse(address)
                continue
            answers.append([frames[0].bytes, *self._apply([frame.bytes for frame in frames[1:]])])
        if answers:
            self.core.written()
            for answer in answers:
                try:
                    self.inbound.send_multipart(answer, zmq.NOBLOCK)
                except zmq.ZMQError as err:
                    log.warning("pair: could not answer %s (%s)", self.peer, err)

    def _apply(self, message: list[bytes]) -> list[bytes]:
        """Apply one message's records; the answer (``ok`` or ``error``) with its seq."""
        seq = message[1] if len(message) > 1 else b"?"
        if message[0] != KIND or not seq.isdigit():
            log.error("pair: a message from %s that is not one: %r", self.peer, message[:2])
            return [b"error", seq, b"not a records message"]
        task: Mapping | None = None  # a put waits for its take; a put alone: the task was queued again there
        try:
            for line in message[2:]:
                task = self._record(decode(line), task)
            if task is not None:
                self.core.peer_returned(task_from_record(task))
        except (ValueError, KeyError, TypeError) as err:
            log.error("pair: a record from %s cannot be read (%s): its message %s is refused", self.peer, err,
                      seq.decode())
            return [b"error", seq, str(err)[:200].encode()]
        return [b"ok", seq]

    def _record(self, record: Record, task: Mapping | None) -> Mapping | None:
        """Apply one record; ``task`` is the record of the put read before it (its take may follow). The put that
        waits now."""
        if task is not None and not (isinstance(record, Take) and record.id == task.get("id")):
            self.core.peer_returned(task_from_record(task))  # a put alone
            task = None
        if isinstance(record, Put):
            return record.task
        if isinstance(record, Take):
            # a take with ``by`` is this host's own, told back (the sender learnt it from this host)
            self.core.peer_took(record, None if record.by else task, "" if record.by else self.peer)
            self.received += record.kind == HANDED_OUT
        elif isinstance(record, Sent):
            self.core.peer_sent(record.id)
        return None

    def _refuse(self, address: str | None) -> None:
        now = self.clock()
        if now - self._refused.get(address or "", float("-inf")) >= REFUSED_LOG_SECONDS:
            self._refused[address or ""] = now
            log.warning("pair: a replication message from %s dropped: only PAIR_PEER %s is heard", address or "?",
                        self.peer)

    def status(self) -> dict:
        """The link as the status stream shows it (under ``pair``)."""
        unanswered, age = self.link.lag()
        return {"peer": self.peer, "link": self.link.state,
                "alone since": isotime.stamp(self.alone_since) if self.alone_since else None,
                "unanswered": unanswered, "lag seconds": round(age, 3), "received": self.received}
