"""task_broker: turns granule messages into product tasks and hands them to viirsprocessor workers.

What it does (SPEC sections 6 and 10):

- follows every publisher of ``/AVO/viirs/granule/<product>`` on the internal posttroll bus (segment_gatherer's
  ``dataset`` messages), including publishers that start or restart later. Each message is sorted into granules
  by its file names (``granules.py``): a granule is (product, platform, start time), and only whole granules
  become tasks (a gatherer slot keyed by start time alone can mix two satellites' files: logged at WARNING);
- reconciles with ``sdr/``, the source of truth, every 5 s (``reconcile.py``; its view of sdr/ comes from one full
  pass at start and inotify from then on, so its cost follows the window, not the archive): every product granule
  complete on disk within ``RECOVERY_HOURS`` (by placement time) that is neither queued nor in the hand-out ledger,
  once the live path has been silent about it for 10 s (it also follows trollstalker's ``file`` messages, so that
  a catch-up the gatherers are still working through is waited for), is queued like a live one and logged at
  WARNING with the case that lost it (``recovered granule ... (<case>): complete in sdr/ for N s``). Granules
  completed before the ledger began (the suite's first start, or the first start of a version with a ledger) are
  not recovered;
- decides each granule's pass direction (TLE in ``$VIIRS_BASE/elements``, else the granule's geolocation file;
  the log line says which; the work is done by a helper child process, ``python -m
  avoviirscollector.broker.direction``, so that pyorbital/scipy and h5py never weigh on or crash the process
  that holds the queue) and queues it: a granule already queued updates its task (one file per segment, the
  newest copy), one already handed out or dropped is refused and logged (never a second task), else it merges
  into a queued task of the same identity (subject, platform, orbit, direction) whose start is within 30 minutes
  or becomes a new task;
- answers requests on ``TASK_PORT`` (default 19091) with its own ZMTP listener (``zmtp/``: the server side of a
  ROUTER, for any number of REQ workers, with ZMTP heartbeats, ``HEARTBEAT_TTL``):
  request ``{"desired products": ["tir", ...], "just testing": false}``, reply the oldest task of a desired
  product as a posttroll message (v1.01, naive UTC datetimes, data key ``pass_direction`` added), removed from the
  queue unless "just testing", or empty bytes when nothing matches. **Every request gets exactly one reply**:
  anything malformed (not JSON, not an object, a missing or mistyped key, an empty product list, more than
  64 KiB) is answered with ``{"error": "..."}``, and counted: in the journal as one ``bad request`` event with a
  ``count`` every 10 s at most (monitor reads it), and in the status stream. Replies never wait for another
  worker. (A frame over 256 MiB or bytes that are not ZMTP close that connection alone.) A connection that has
  asked nothing for 3 s after its handshake (a worker whose request died with a previous broker process or host,
  or an idle one) is sent "no task", inside a hold of the status (``silence.py``), so that a deployed worker with
  no timeout never waits for ever. Each hand-out is logged with the worker's address and kept in the ledger for
  ``RECOVERY_HOURS`` and one hour more, and journaled as ``sent`` once its reply is in the connection;
- publishes ``{"queue length": N, "products waiting": [...], "tasks by product": {...}, "recovered (24 h)": N,
  "in doubt (24 h)": N, "duplicate (24 h)": N, "bad request (24 h)": N}`` (and ``"state behind": true`` while its
  journal cannot be written) as JSON on ``UPDATE_PORT`` (default 19191) once a second, always, and at once to each
  new subscriber (``status`` and the HEALTHCHECK need not wait for the next second), each status followed by a PING
  (``zmtp/publisher.py``: a subscriber always drops a host that died); and when it stops,
  one last status with ``"queue length": 0``, ``"stopping": true`` and the real count in ``"queued"``, so that
  workers stop asking a broker that is about to go (see Signals);
- serves operators on ``ipc://$VIIRS_BASE/run/task_broker.ctl`` (``avoviirscollector tasks``: list, drop,
  re-queue; see ``control.py``).

Persistence and the guarantee given. The queue and the ledger live in ``$VIIRS_BASE/state/task_queue.journal``
(see ``store.py``). A granule counts as *queued* (acknowledged) from the moment it is visible: in the status
stream or to a worker. That moment comes only after its journal record has been written and fsync'd: the
broker's single main loop writes and syncs a batch of arrived granules before it answers any further request or
publishes any status. So a SIGKILL at any moment loses no acknowledged task, and a granule received but not yet
written is found again in ``sdr/`` by the next start's reconciliation. A hand-out is written to the journal (one
``write``, which outlives a kill of the process) before the reply is sent, and fsync'd within a second. When the
journal does not end with a clean stop, hand-outs written within one second of its last record are *in doubt*
(the reply may never have left): they are queued again in their old place and logged at WARNING (at least once:
a pass processed twice costs less than a pass missed). A reply that cannot be delivered because the worker has
gone puts the task back in its place.

Two hosts (``PAIR_PEER`` set; README "Two hosts"): only the active host hands out tasks (its role file
``run/pair.role`` says MASTER since this boot, written by keepalived's notify reader, ``pair/role.py``, and touched
by it within the last 3 s); the standby
answers every request with "no task" and publishes ``queue length`` 0 with ``"standby": true`` and its count in
``queued``. Every hand-out is sent to the other host on ``PAIR_REPLICATION_PORT`` and written there before its reply
leaves (``replication.py``), and the other host's hand-outs are taken off this queue; becoming the active queues
again the other host's hand-outs in doubt. The status carries ``pair``: role, serving, peer, link (whole, alone,
catching up), alone since, unanswered, lag seconds, received, last promotion; role stale (keepalived's reader
has not touched the role file for 3 s: MASTER in it counts for nothing).

On a full disk (any failed write) the broker goes on serving from memory, says so in one ERROR line a minute,
stops appending (a torn line could follow) and tries every 10 s to write its whole state anew; one INFO line says
when it succeeded.

Settings (environment, see config.py): ``VIIRS_BASE``, ``TASK_PORT``, ``UPDATE_PORT``, ``RECOVERY_HOURS``,
``AVO_ETC`` (the gatherers' slot timeouts, read to name the late-file case); ``MAILHOST``, ``LOG_SENDER``,
``LOG_RECIPIENT`` (ERROR lines mailed, batched, when all three are set); ``HEARTBEAT_TTL`` (ZMTP heartbeats on
TASK_PORT and UPDATE_PORT: a worker drops the connection of a host that hung or died, heartbeat.py); ``PAIR_PEER``
and ``PAIR_REPLICATION_PORT`` (two hosts); the posttroll nameserver is ``localhost``.

Ready: once its state is loaded, ``TASK_PORT`` and ``UPDATE_PORT`` are bound, its threads are started and its bus
follower has subscribed, it writes ``$VIIRS_BASE/run/ready/task_broker.json`` (ready.py; it serves meanwhile, the
marker is written from its loop, which sees the stop flag every 50 ms), removed when it stops.

Signals: SIGTERM or SIGINT publish the stopping status (deployed workers ask only while the queue length they last
heard is above 0, and a request that reaches a broker after its last answer would leave its worker waiting
forever), stop taking bus messages, queue (and write) those already received, write the state, answer every
request received until none has come for 0.2 s (at most 1.5 s: so requests that came while the state was written
are answered too), mark the stop clean and exit 0, within about two seconds (more with a queue of tens of
thousands of tasks).

Layout. This module is the shell: it owns the ZeroMQ context and sockets, the threads (``intake.py``: the bus
follower and the direction resolver; ``reconcile.SdrView``: the view of sdr/), the loop, the signals and the stop.
Every rule (replay, admission, the ledger, hand-outs in doubt, the compaction policy, reconciliation decisions,
operator commands, the status to publish) is in ``core.py``, which has no sockets and takes its clock; the wire
format of requests and replies is ``protocol.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial

import zmq

from avoviirscollector import isotime
from avoviirscollector.access import start_access_control
from avoviirscollector.broker.control import control_address
from avoviirscollector.broker.core import BrokerCore, Resolve, Scan
from avoviirscollector.broker.direction_client import DirectionClient
from avoviirscollector.broker.intake import DirectionFinding, Ingest, Resolver
from avoviirscollector.broker.protocol import split_envelope, split_request
from avoviirscollector.broker.reconcile import SdrView, gatherer_timeouts
from avoviirscollector.broker.replication import Replication
from avoviirscollector.broker.silence import SILENT_AFTER_S, SilentWorkers
from avoviirscollector.broker.store import JournalStore
from avoviirscollector.broker.zmtp import ZmtpListener
from avoviirscollector.broker.zmtp.publisher import ZmtpPublisher
from avoviirscollector.bus import follow
from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.heartbeat import interval_seconds
from avoviirscollector.logs import setup_logging
from avoviirscollector.pair.role import RoleWatch
from avoviirscollector.ready import ReadyMarker
from avoviirscollector.signals import stop_on_signals

PROGRAM = "task_broker"
STATUS_INTERVAL = 1.0
POLL_SECONDS = 0.05
#: at most this many items the threads brought are acted on between two turns of the requests: a flood of granules
#: (a backfill, a burst) queues up behind the workers, not the workers behind it
TAKE_IN_PER_TURN = 100
#: how often the view of sdr/ hands the recovery window's complete granules to the loop
SCAN_SECONDS = 5.0
#: a stop answers requests until none has come for QUIET_SECONDS, for STOP_ANSWERING_SECONDS at most
QUIET_SECONDS = 0.2
STOP_ANSWERING_SECONDS = 1.5

log = logging.getLogger(PROGRAM)


class Sockets:
    """The broker's sockets: the ZMTP listener on TASK_PORT and the publisher on UPDATE_PORT (``zmtp/``), the
    operators' ROUTER on ipc."""

    def __init__(self, context: zmq.Context, allow: Callable[[str], bool] | None = None) -> None:
        self.allow = allow
        self.tasks: ZmtpListener | None = None
        # UPDATE_PORT: our own publisher, a PING after every status (zmtp/publisher.py: a subscriber then always
        # drops a dead host); it tells of each new subscriber, who gets a status at once
        self.status: ZmtpPublisher | None = None
        self.control = context.socket(zmq.ROUTER)

    def bind(self, settings: Settings) -> bool:
        """Set the options and bind; False when TASK_PORT or UPDATE_PORT cannot be bound (logged)."""
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.MAXMSGSIZE, 65536)
        ttl = settings.heartbeat_ttl
        beats = {"allow": self.allow, "heartbeat_ivl": interval_seconds(ttl), "heartbeat_ttl": ttl, "timeout": ttl,
                 "log": log}
        try:
            self.tasks = ZmtpListener(settings.task_port, **beats)
            self.status = ZmtpPublisher(settings.update_port, **beats)
        except OSError as err:
            log.error("cannot bind TASK_PORT %d / UPDATE_PORT %d: %s", settings.task_port, settings.update_port, err)
            return False
        run_dir = settings.viirs_base / "run"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.control.bind(control_address(run_dir))
        except (OSError, zmq.ZMQError) as err:
            log.error("cannot open the operators' socket %s (%s): `avoviirscollector tasks` will not work",
                      control_address(run_dir), err)
        return True

    def close(self) -> None:
        for server in (self.tasks, self.status):
            if server is not None:
                server.close(flush_s=1.0)  # replies and the last status still buffered go out first
        self.control.close()


class TaskBroker:
    """The daemon. ``run()`` blocks until ``stop()``; one thread owns the core and the sockets.

    Collaborators passed in: the core (queue, journal, rules), the direction finder (the helper process in the
    daemon), the bus to follow and the interval of the view of sdr/; :meth:`from_settings` builds them as deployed."""

    def __init__(self, settings: Settings, core: BrokerCore, finder: DirectionFinding, follow_bus=follow,
                 scan_seconds: float = SCAN_SECONDS) -> None:
        self.settings = settings
        self.core = core
        self.scan_seconds = scan_seconds
        self.incoming: queue.SimpleQueue = queue.SimpleQueue()
        self.resolver = Resolver(finder, self.incoming)
        self.ingest = Ingest(self.resolver, follow_bus, self.incoming.put)
        self.sdr_view: SdrView | None = None
        self.silent = SilentWorkers()
        self._held = False  # what the last status said of the hold
        self.ready = ReadyMarker(settings.viirs_base, PROGRAM)
        self._stop = threading.Event()
        # two hosts, one collector (PAIR_PEER): only the active host hands out tasks, and each hand-out is on the
        # other host before its reply leaves (replication.py); one host: always serving, nothing replicated
        self.role = RoleWatch(settings.viirs_base) if settings.pair else None
        self.pair: Replication | None = None
        self.serving = self.role is None
        self.promoted_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, follow_bus=follow, scan_seconds: float = SCAN_SECONDS) -> TaskBroker:
        """The broker as deployed: its journal in ``state/``, the direction helper process, the gatherers' slot
        timeouts from ``$AVO_ETC/segment_gatherer.ini``."""
        core = BrokerCore(JournalStore(settings.state_dir), settings.sdr_dir,
                          dt.timedelta(hours=settings.recovery_hours),
                          gatherer_timeouts(settings.etc_dir / "segment_gatherer.ini"))
        return cls(settings, core, DirectionClient(settings.elements_dir), follow_bus, scan_seconds)

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler: only sets a flag)."""
        self._stop.set()

    def run(self) -> int:
        """Load the state, serve until :meth:`stop`, stop cleanly; 0, or 1 when the ports cannot be bound."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.core.load()
        self.sdr_view = SdrView(self.settings.sdr_dir, self.core.recovery_since,
                                lambda found: self.incoming.put(Scan(found)),
                                horizon=dt.timedelta(days=self.settings.gina_backfill_days + 1),
                                interval=self.scan_seconds, clock=self.core.wall)
        context = zmq.Context()
        zap = start_access_control(context, self.settings, log)  # ALLOWED_CLIENTS (SPEC 12): before any socket
        sockets = Sockets(context, None if zap is None else partial(zap.gate.admits, where=PROGRAM))
        threads_started = False
        try:
            if not sockets.bind(self.settings):
                return 1
            if self.settings.pair is not None:
                self.pair = Replication(self.settings.pair, self.core, context)
                if not self.pair.bind():
                    return 1
                self._follow_role()
                if not self.serving:
                    log.info("pair: this host is not the active one (role %s): it queues, and hands out nothing",
                             self.role.role.role if self.role.role else "unknown: no role file yet")
            log.info("serving tasks on %d, status on %d; reconciling with %s every %.0f s (window %d hours)",
                     self.settings.task_port, self.settings.update_port, self.settings.sdr_dir, self.scan_seconds,
                     self.settings.recovery_hours)
            self._start_threads()
            threads_started = True
            self._loop(sockets)
            self._shutdown(sockets)
            return 0
        finally:
            self.ready.clear()
            if threads_started:
                self._stop_threads()
            self.core.close()
            sockets.close()
            if self.pair is not None:
                self.pair.close()
            context.term()

    # -- the loop ----------------------------------------------------------------------------------------------

    def _loop(self, sockets: Sockets) -> None:
        poller = zmq.Poller()
        for sock in (sockets.tasks, sockets.control, sockets.status, *(self.pair.sockets if self.pair else ())):
            poller.register(sock, zmq.POLLIN)
        next_status = time.monotonic()
        marked = False
        while not self._stop.is_set():
            behind = self._take_in()
            self._follow_role()
            if not marked and self.ingest.subscribed.is_set():  # ready: see the module docstring
                self.ready.set()
                marked = True
            now = time.monotonic()
            if self._answer_silent(sockets, now):  # the hold began or ended: say so at once
                self._publish(sockets.status, self._status(now))
            if now >= next_status:
                self._publish(sockets.status, self._status(now))
                self.core.tick()
                if self.pair is not None:
                    self.pair.tick()
                next_status = max(next_status + STATUS_INTERVAL, now)
                continue
            if self.core.compaction_due:  # advances in small steps between requests
                self.core.compaction_step()
                wait = 0.0
            else:
                wait = 0.0 if behind else min(POLL_SECONDS, next_status - now)
            ready = dict(poller.poll(int(wait * 1000) + (wait > 0)))
            self._take_in()
            self._handle(ready, sockets)

    def _status(self, now: float) -> dict:
        """The status to publish now: the core's, and with a pair the role and the link (a standby says no task
        waits: its workers would ask the wrong host)."""
        message = self.core.status(holding=self.silent.holding(now), standby=not self.serving)
        if self.pair is not None:
            role = self.role.role
            message["pair"] = {"role": role.role if role else None, "role stale": self.role.stale,
                               "serving": self.serving, **self.pair.status(),
                               "last promotion": isotime.stamp(self.promoted_at) if self.promoted_at else None}
        return message

    def _follow_role(self) -> None:
        """Serve when this host is the active one of the pair (its role file: MASTER since this boot), not else.
        Becoming active queues again the other host's hand-outs in doubt (``BrokerCore.promoted``)."""
        if self.role is None or self.role.active == self.serving:
            return
        self.serving = not self.serving
        role = self.role.role
        if self.serving:
            self.promoted_at = time.time()
            doubted = self.core.promoted()
            log.warning("pair: this host is the active one (%s since %s): it hands out tasks; %d hand-outs of the "
                        "other host were in doubt and are queued again", role.role, role.since, doubted)
        else:
            self.core.demoted()
            if role is not None and role.active(self.role.boot) and self.role.stale:
                log.warning("pair: this host is no longer the active one: its role file says %s since %s but "
                            "keepalived's reader has not touched it for %.0f s (keepalived's container killed?): it "
                            "hands out nothing", role.role, role.since, self.role.age() or 0.0)
            else:
                log.warning("pair: this host is no longer the active one (%s): it hands out nothing",
                            f"{role.role} since {role.since}" if role else "no role file")

    def _answer_silent(self, sockets: Sockets, now: float) -> bool:
        """Push "no task" to the connections due it (``silence.py``); True when the hold began or ended now (the
        status is published at once)."""
        for conn_id in self.silent.step(sockets.tasks.silent(SILENT_AFTER_S), now):
            info = sockets.tasks.info(conn_id)
            if sockets.tasks.push_empty(conn_id):
                log.info("answered the silent worker %s with no task (connected %.0f s ago and asked nothing: its "
                         "request may have died with a previous task_broker or host)", info.peer if info else "?",
                         now - info.ready_at if info and info.ready_at else 0)
        holding = self.silent.holding(now)
        changed, self._held = holding != self._held, holding
        return changed

    def _handle(self, ready: dict, sockets: Sockets) -> None:
        sockets.tasks.handle(0)  # also runs its heartbeat timers: called every POLL_SECONDS at least
        if self.pair is not None:  # the other host's hand-outs first: a granule it handed out is not offered here
            self.pair.handle()
        self._serve(sockets.tasks)
        if sockets.control in ready:
            self._control(sockets.control)
        sockets.status.handle(0)  # subscribers, their PONGs, the heartbeat timers
        if sockets.status.subscribed():  # a new subscriber gets the status now, not at the next second
            self._publish(sockets.status, self._status(time.monotonic()))

    def _take_in(self, limit: int | None = TAKE_IN_PER_TURN) -> bool:
        """Hand what the threads brought to the core, up to ``limit`` items (None: everything; the rest waits for
        the next turn, after the requests); the granules it wants recovered go to the resolver. True when items
        may be left."""
        items = []
        while limit is None or len(items) < limit:
            try:
                items.append(self.incoming.get_nowait())
            except queue.Empty:
                break
        if items:
            self._submit(self.core.take_in(items))
        return limit is not None and len(items) >= limit

    def _submit(self, resolves: list[Resolve]) -> None:
        for resolve in resolves:
            self.resolver.submit(resolve)

    def _serve(self, tasks: ZmtpListener) -> int:
        """Answer the requests the listener has received, each exactly once; how many."""
        requests = tasks.recv_requests()
        for request in requests:
            envelope, body = split_request(request.frames)
            task = None
            if request.too_large:
                reply = self.core.too_large(request.too_large)
            elif request.after_push:  # it may have crossed the push on the wire: "no task" (silence.py)
                reply = b""
            elif not self.serving:  # the pair's standby: the other host serves
                reply = b""
            else:
                reply, task = self.core.request(body, lambda peer=request.peer: peer)
            if task is not None and self.pair is not None:
                self.pair.replicate(task)  # on the other host before the reply leaves
            if tasks.reply(request.conn_id, envelope + [reply]):
                if task is not None:
                    self.core.delivered(task)
                    if self.pair is not None:
                        self.pair.sent(task.id)
            elif task is not None:
                self.core.undelivered(task, "its connection has gone")
                if self.pair is not None:
                    self.pair.returned(task)
            else:
                log.warning("could not deliver a reply to %s: the client has gone", request.peer)
        return len(requests)

    def _control(self, sock: zmq.Socket) -> None:
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            envelope, body = split_envelope(sock.recv_multipart(zmq.NOBLOCK))
            answer, resolves = self.core.control(body)
            self._submit(resolves)
            try:
                sock.send_multipart(envelope + [answer], zmq.NOBLOCK)
            except zmq.ZMQError as err:
                log.warning("could not answer a control request (%s)", err)

    def _publish(self, status: ZmtpPublisher, message: dict) -> None:
        """The status to every subscriber, each followed by a PING (a new subscriber is sent one at once:
        ``avoviirscollector status`` and the HEALTHCHECK answer within milliseconds; the others get one more,
        which is harmless)."""
        if self.settings.pair is None:  # one host: the status as before pairs (nothing can be handed out twice)
            message.pop("handed out twice (24 h)", None)
        status.publish([json.dumps(message).encode()])

    # -- threads and the stop ----------------------------------------------------------------------------------

    def _start_threads(self) -> None:
        self.resolver.start()
        self.ingest.start()
        self.sdr_view.start()

    def _stop_threads(self) -> None:
        self.ingest.stopping.set()
        self.sdr_view.stop()
        self.ingest.join(timeout=1.5)
        if self.ingest.is_alive():
            log.warning("the bus follower did not stop within 1.5 s; leaving it")
        self.resolver.stop()
        self.resolver.join(timeout=2)
        self.sdr_view.join(timeout=1)

    def _shutdown(self, sockets: Sockets) -> None:
        """Tell the workers to stop asking, stop taking granules, write the state, then answer every request
        received until 0.2 s pass without one (so a request that came while the state was written is answered
        too), then mark the stop clean.

        Deployed workers ask while the last status said ``queue length > 0`` and wait for their reply forever: a
        request that reached this process after its last answer would never be answered (a REQ socket does not
        resend it to the next broker). So the first thing a stop does is publish a status with ``queue length`` 0
        and ``"stopping": true`` (``"queued"`` keeps the real count): the workers stop asking within a message's
        time, the requests already sent are answered, and the quiet comes."""
        self.ready.clear()  # stopping: no longer ready
        self._publish(sockets.status, self.core.status(stopping=True))
        log.info("stopping: workers told so; no more bus messages; answering the requests received")
        self._stop_threads()
        self._take_in(limit=None)
        self.core.write_state()
        self._answer_until_quiet(sockets.tasks)
        self.core.mark_clean_stop()

    def _answer_until_quiet(self, tasks: ZmtpListener) -> None:
        quiet_until = time.monotonic() + QUIET_SECONDS
        give_up = time.monotonic() + STOP_ANSWERING_SECONDS
        while time.monotonic() < min(quiet_until, give_up):
            tasks.handle(0.02)
            if self._serve(tasks):
                quiet_until = time.monotonic() + QUIET_SECONDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    settings = settings_or_exit(PROGRAM)
    setup_logging(PROGRAM, args.verbose, settings)  # ERROR lines are mailed when MAILHOST etc. are set
    broker = TaskBroker.from_settings(settings)
    stop_on_signals(broker.stop)
    return broker.run()


if __name__ == "__main__":
    raise SystemExit(main())
