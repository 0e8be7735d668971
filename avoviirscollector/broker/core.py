"""task_broker's rules, without sockets or threads: what the broker does with each granule, request, operator command
and tick of its clock (SPEC sections 6 and 10). ``server.py`` is the shell that does the I/O around it.

:class:`BrokerCore` holds the queue and its hand-out ledger (``taskqueue.py``) and writes every change to the journal
(``store.py``) through a :class:`StateWriter`, which keeps serving from memory when a write fails (a full disk). Its
collaborators are passed in: the store, the folder of ``sdr/``, the recovery window, the gatherers' slot timeouts,
and two clocks (epoch seconds for times that are kept or compared with the journal's, monotonic for rate limits).
It does:

- **replay** (:meth:`BrokerCore.load`): the journal's tasks, ledger and events; the hand-outs *in doubt* after an
  unclean stop (written within ``DOUBT_SECONDS`` of its last record: the reply may never have left) are queued
  again in their old place, counted and logged at WARNING; the journal is then compacted;
- **admission** (:meth:`BrokerCore.take_in`): a granule whose pass direction has been decided is queued (merged
  into the task that holds it or one of its identity, or a new task), or refused as a duplicate when the ledger
  has it; a batch is fsync'd before the shell makes anything visible;
- **reconciliation decisions**: a scan of sdr/ becomes the granules to recover (``reconcile.Planner``), returned as
  :class:`Resolve` values for the shell's direction finder; when they come back they are checked again, so a
  dataset that came meanwhile never makes a second task;
- **requests** (:meth:`BrokerCore.request`): one reply for every request (the task, empty, or an error), the
  hand-out written before the reply goes out and fsync'd at the next tick; a reply that cannot be delivered puts
  the task back in its place (:meth:`BrokerCore.undelivered`);
- **operator commands** (:meth:`BrokerCore.control`): list, drop, re-queue (``control.py``);
- **the pair's other host** (``replication.py`` carries the records): its hand-outs taken off this queue or kept
  as taken (:meth:`BrokerCore.peer_took`), the records of this host's own (:meth:`BrokerCore.handout_records`,
  :meth:`BrokerCore.hand_outs`), and at a promotion its hand-outs in doubt queued again
  (:meth:`BrokerCore.promoted`);
- **each second** (:meth:`BrokerCore.tick`): the status to publish (:meth:`BrokerCore.status`, returned as a
  value), bad requests written as one counted event every 10 s at most, marks after hand-outs, the fsync of
  hand-outs, the ledger pruned to ``RECOVERY_HOURS`` and one hour, and the compaction policy (a compaction starts
  when the journal is mostly dead records, and advances in small steps between requests).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.broker.control import BadCommand, Command, parse_command
from avoviirscollector.broker.direction import Direction
from avoviirscollector.broker.protocol import MAX_REQUEST_BYTES, BadRequest, encode_task, error_reply, parse_request
from avoviirscollector.broker.reconcile import Planner, complete_between
from avoviirscollector.broker.store import DOUBT_SECONDS, JournalStore, Loaded
from avoviirscollector.broker.taskqueue import (
    ADMIT_DUPLICATE,
    ADMIT_MERGED,
    Granule,
    HandOut,
    Task,
    TaskQueue,
    granules_of,
    parse_granule,
    task_from_record,
    task_to_record,
)
from avoviirscollector.granules import GranuleKey, GranuleMap, OnDisk, granule_data, keys_of
from avoviirscollector.ondisk.journal import HANDED_OUT, Event, Forget, Header, Mark, Put, Record, Sent, Stop, Take

TOPIC = "/AVO/viirs/granule"
#: the ledger keeps a hand-out this long beyond RECOVERY_HOURS
LEDGER_MARGIN = dt.timedelta(hours=1)
#: the two hosts' clocks (NTP) and a record's time agree within this: "this host served at that time" allows it
CLOCK_MARGIN_SECONDS = 1.0
EVENT_KINDS = ("recovered", "in doubt", "duplicate", "bad request", "handed out twice")
#: a hand-out of the pair's other host whose reply it did not say had left, replicated this long before this host
#: became the active one, is in doubt (queued again here): the other host may have died before its reply left
PEER_DOUBT_SECONDS = 30.0
#: bad requests are written to the journal as one event with their count at most this often
BAD_REQUEST_EVERY = 10.0
PRUNE_EVERY = 60.0
SENDER = "task_broker@reconciliation"

log = logging.getLogger("task_broker")


class RateLimitedWarning:
    """At most ``burst`` WARNING lines per minute for one kind of event, then one summary line per minute."""

    def __init__(self, logger: logging.Logger, what: str, burst: int = 10, clock: Callable[[], float] = time.monotonic):
        self.logger, self.what, self.burst, self.clock = logger, what, burst, clock
        self.window_start = clock()
        self.count = 0

    def warn(self, fmt: str, *args) -> None:
        now = self.clock()
        if now - self.window_start >= 60:
            if self.count > self.burst:
                self.logger.warning("%d more %s in the last minute (not each logged)", self.count - self.burst,
                                    self.what)
            self.window_start, self.count = now, 0
        self.count += 1
        if self.count <= self.burst:
            self.logger.warning(fmt, *args)


class StateWriter:
    """The broker's writes to its journal, and what happens when they fail (a full disk, say).

    A failed write leaves the journal behind the queue in memory: from then on nothing is appended (a torn line
    is possible), the broker serves from memory, one ERROR line a minute says so, and every
    :data:`RETRY_SECONDS` a full compaction of the state in memory is tried; when it succeeds the journal is whole
    again and one INFO line says so."""

    RETRY_SECONDS = 10.0

    def __init__(self, store: JournalStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.behind_since: float | None = None  # clock time of the first failed write
        self.failed = 0
        self._logged_at = float("-inf")
        self._retry_at = float("-inf")

    @property
    def behind(self) -> bool:
        return self.behind_since is not None

    def write(self, action: Callable[[], None], what: str) -> bool:
        if self.behind:
            self.failed += 1
            return False
        try:
            action()
            return True
        except OSError as err:
            self.behind_since = self.clock()
            self.failed = 1
            self._complain(what, err)
            return False

    def _complain(self, what: str, err: OSError) -> None:
        now = self.clock()
        if now - self._logged_at >= 60:
            self._logged_at = now
            log.error("state: cannot write %s to %s (%s): serving from memory; %d writes not made since it began "
                      "%.0f s ago; trying again every %.0f s", what, self.store.path, err, self.failed,
                      now - self.behind_since, self.RETRY_SECONDS)

    def catch_up(self, compact: Callable[[], None], force: bool = False) -> None:
        """While behind, try a full compaction every RETRY_SECONDS (at once with ``force``)."""
        now = self.clock()
        if not self.behind or (now < self._retry_at and not force):
            return
        self._retry_at = now + self.RETRY_SECONDS
        try:
            compact()
        except OSError as err:
            self._complain("the whole state", err)
            return
        log.info("state: %s written again after %.0f s behind (%d writes had not been made)", self.store.path,
                 now - self.behind_since, self.failed)
        self.behind_since = None
        self.failed = 0


@dataclass(frozen=True)
class Planned:
    """Why a recovered granule was recovered, and since when it has waited (for its log line)."""

    case: str
    waited: float
    planned_at: float


@dataclass(frozen=True)
class Resolve:
    """A granule whose pass direction is to be decided, and how it came: ``live`` (the bus), ``recovered`` (from
    sdr/, with its :class:`Planned`) or ``operator`` (a re-queue)."""

    granule: Granule
    origin: str
    note: Planned | None = None


@dataclass(frozen=True)
class Decided:
    """A granule back from the direction finder, to be queued."""

    resolve: Resolve
    direction: Direction


@dataclass(frozen=True)
class Scan:
    """The complete granules of the recovery window, as the view of sdr/ found them."""

    found: list[OnDisk]


@dataclass
class PeerHandOut:
    """A hand-out the pair's other host replicated here with its task, kept a while in case this host becomes the
    active one before the other host said its reply had left (``sent``)."""

    received: float  # epoch seconds
    task: Mapping  # the task's record (``task_to_record``), decoded only if it is queued again here
    take: Take
    sent: bool = False


@dataclass(frozen=True)
class Announced:
    """trollstalker's ``file`` message for one file placed in sdr/ (the live path's first stage)."""

    name: str


@dataclass(frozen=True)
class Delivered:
    """A gatherer's ``dataset`` came: the granules taken from it (on their way to the direction finder) and every
    granule it named (the live path's second stage)."""

    product: str
    taken: tuple[GranuleKey, ...]
    named: tuple[GranuleKey, ...]


class BrokerCore:
    """The queue, the ledger, the events and the journal, and every rule that changes them. One owner (the
    shell's main loop); no sockets, no threads."""

    def __init__(self, store: JournalStore, sdr_dir: Path, window: dt.timedelta,
                 timeouts: dict[str, float] | None = None, wall: Callable[[], float] = time.time,
                 ticks: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.sdr_dir = Path(sdr_dir)
        self.window = window
        self.timeouts = timeouts or {}
        self.wall = wall
        self.writer = StateWriter(store, ticks)
        self.queue = TaskQueue()
        self.planner: Planner | None = None  # made once the ledger is loaded
        self.ledger_since = self._now()
        self.events: deque[tuple[float, str, int]] = deque()  # (epoch, kind, count) of the last day's events
        self._recent: deque[tuple[float, Task]] = deque()  # hand-outs of the last 2 s (kept whole for compaction)
        self._sent: set[int] = set()  # which of those were written to their worker's connection
        self._bad = RateLimitedWarning(log, "bad requests", clock=ticks)
        self._bad_pending = 0  # bad requests not yet in the journal (written as one counted event every 10 s)
        self._bad_written = 0.0
        self._encoded: dict[int, bytes] = {}  # task id -> its reply, made when queued or merged (or first asked for)
        self._unsynced = False
        self._marks = 0
        self._next_prune = 0.0
        self._peer_recent: dict[int, PeerHandOut] = {}  # the other host's task id -> its recent hand-out
        self._doubted = GranuleMap()  # granules queued again as in doubt at a promotion (not "handed out twice")
        self._twice: set[tuple[int, str, int]] = set()  # (own task, other host, its task) counted handed out twice
        # when this process handed out tasks as the pair's active host (wall times): a hand-out of the other host's
        # is "handed out twice" only if it came while this host served too (two actives at once)
        self._serving_since: float | None = None
        self._served: deque[tuple[float, float]] = deque()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.wall(), dt.UTC)

    # -- replay ------------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Replay the journal, queue again the hand-outs in doubt, compact; reconciliation starts from now."""
        loaded = self.store.load(decode_task=task_from_record)
        self.queue = TaskQueue(loaded.tasks, next_id=loaded.next_id)
        self._replay_ledger(loaded.ledger)
        for event in loaded.events:
            if event.t is not None:
                self.events.append((event.t.timestamp(), event.kind, event.count))
        now = self._now()
        if loaded.ledger_since is None:  # a journal from before the ledger (``supervise`` starts one at first start)
            log.info("state: no hand-out ledger in %s yet: granules completed before now (%s) are not recovered",
                     self.store.path, isotime.stamp(now))
        self.ledger_since = loaded.ledger_since or now
        self._requeue_in_doubt(loaded)
        self._prune(now)
        self._encoded = {task.id: encode_task(task) for task in self.queue}  # hand-outs only send bytes
        self.writer.write(self._compact, "the state at start")
        log.info("state: %d tasks queued from %s %s; %d hand-outs in the ledger (since %s)", len(self.queue),
                 self.store.path, self.queue.products_waiting(), len(self.queue.ledger()),
                 isotime.stamp(self.ledger_since))
        self.planner = Planner(self.window.total_seconds(), self.ledger_since.timestamp(), self.wall(),
                               self.timeouts)

    def _replay_ledger(self, records: list[Take | Forget]) -> None:
        for record in records:
            try:
                if isinstance(record, Take):
                    self.queue.record(HandOut.from_take(record))
                else:
                    self.queue.forget(record.granules)
            except ValueError as err:
                log.error("state: a ledger record of %s is damaged (%s): skipped", self.store.path, err)
        for task in self.queue:  # a hand-out whose reply could not be delivered was put back: queued, not handed out
            self.queue.unrecord(task.id)

    def _requeue_in_doubt(self, loaded: Loaded) -> None:
        if not loaded.clean:
            log.warning("state: task_broker did not stop cleanly last time (last record %s)",
                        isotime.stamp(loaded.last_time, micro=True) if loaded.last_time else "none")
        for task, take in loaded.in_doubt:
            if self.queue.get(task.id) is not None:
                continue
            self.queue.restore(task)
            self.events.append((self.wall(), "in doubt", 1))  # written by the compaction that follows the replay
            log.warning("hand-out of %s to %s at %s is in doubt (task_broker stopped uncleanly within %.0f s of "
                        "it; the reply may never have left): queued again in its place", task.describe(),
                        take.worker or "an unknown worker", isotime.stamp(take.t, micro=True), DOUBT_SECONDS)

    def recovery_since(self, now: float) -> float:
        """The oldest completion time a scan of sdr/ needs to report (for the view of sdr/)."""
        return self.planner.since(now)

    # -- the journal -------------------------------------------------------------------------------------------

    def _records(self, tasks: list[Task], ledger: list[HandOut], events: list[tuple[float, str, int]],
                 recent: dict[int, Task]) -> Iterator[Record]:
        """The records of a compacted journal (made lazily: a task is serialised when its turn comes)."""
        for task in tasks:
            yield Put(task_to_record(task))
        for entry in ledger:
            if entry.task_id in recent:  # a hand-out that may still be in doubt keeps its task whole
                yield Put(task_to_record(recent[entry.task_id]))
            yield entry.to_take()
            if entry.task_id in recent and entry.task_id in self._sent:
                yield Sent(entry.task_id)
        for when, kind, count in events:
            yield Event(kind, count, dt.datetime.fromtimestamp(when, dt.UTC))

    def _snapshot(self) -> tuple[Iterator[Record], Header]:
        recent = {task.id: task for _, task in self._recent}
        records = self._records(list(self.queue), self.queue.ledger(), list(self.events), recent)
        return records, self.store.header(self.queue.next_id, self.ledger_since)

    def _compact(self) -> None:
        records, header = self._snapshot()
        self.store.compact(records, header)

    def _live(self) -> int:
        return len(self.queue) + self.queue.ledger_size + len(self.events)

    def _event(self, kind: str, count: int = 1) -> None:
        now = self.wall()
        self.events.append((now, kind, count))
        self.writer.write(lambda: self.store.append(Event(kind, count)), f"a {kind} event")

    def _write_bad_requests(self, force: bool = False) -> None:
        """Bad requests reach the journal as one ``bad request`` event with their ``count``, every 10 s at most."""
        now = self.wall()
        if self._bad_pending and (force or now - self._bad_written >= BAD_REQUEST_EVERY):
            self._bad_written = now
            count, self._bad_pending = self._bad_pending, 0
            self._event("bad request", count)

    def _prune(self, now: dt.datetime) -> None:
        forgotten = self.queue.prune_ledger(now - self.window - LEDGER_MARGIN)
        if forgotten:
            log.info("state: %d hand-outs older than %d hours left the ledger", forgotten,
                     (self.window + LEDGER_MARGIN) // dt.timedelta(hours=1))
        day_ago = now.timestamp() - 86400
        while self.events and self.events[0][0] < day_ago:
            self.events.popleft()

    def counts(self) -> dict[str, int]:
        """Events of the last day by kind."""
        day_ago = self.wall() - 86400
        out = {kind: 0 for kind in EVENT_KINDS}
        for when, kind, count in self.events:
            if when >= day_ago and kind in out:
                out[kind] += count
        out["bad request"] += self._bad_pending
        return out

    # -- each second -------------------------------------------------------------------------------------------

    def status(self, stopping: bool = False, holding: bool = False, standby: bool = False) -> dict:
        """The status to publish: the queue and the day's counts; when ``stopping``, the last word before a stop;
        when ``holding``, no task waits for a moment (silent workers are being answered, ``silence.py``); when
        ``standby``, none waits here (the pair's other host serves, ``replication.py``)."""
        message = self.queue.status()
        if stopping or holding or standby:
            message.update({"queue length": 0, "products waiting": [], "tasks by product": {},
                            "queued": len(self.queue)})
            message.update({"stopping": True} if stopping else
                           {"standby": True} if standby else {"answering silent workers": True})
        message.update({f"{kind} (24 h)": count for kind, count in self.counts().items()})
        if self.writer.behind:
            message["state behind"] = True
        return message

    def tick(self) -> None:
        """The bookkeeping of each second (after the status has gone out)."""
        self._write_bad_requests()
        wall = self.wall()
        while self._recent and wall - self._recent[0][0] > 2 * DOUBT_SECONDS:
            self._sent.discard(self._recent.popleft()[1].id)
        for peer_id, item in list(self._peer_recent.items()):
            if wall - item.received > 2 * PEER_DOUBT_SECONDS:
                del self._peer_recent[peer_id]
        if self._marks:  # the journal's last record tells a later start when the broker was last alive
            self._marks -= 1
            self.writer.write(lambda: self.store.append(Mark()), "a mark")
        if self._unsynced:
            self._unsynced = False
            self.writer.write(self.store.sync, "hand-outs")
        self.writer.catch_up(self._compact)
        if wall >= self._next_prune:
            self._next_prune = wall + PRUNE_EVERY
            self._prune(self._now())
        if self.store.needs_compaction(self._live()) and not self.store.compacting and not self.writer.behind:
            self.writer.write(lambda: self.store.start_compaction(*self._snapshot()), "compacted state")

    @property
    def compaction_due(self) -> bool:
        """A compaction is under way and may advance (between requests, in small steps)."""
        return self.store.compacting and not self.writer.behind

    def compaction_step(self) -> None:
        self.writer.write(lambda: self.store.compaction_step(0.001), "compacted state")

    # -- granules ----------------------------------------------------------------------------------------------

    def take_in(self, items: Iterable[Decided | Scan | Announced | Delivered]) -> list[Resolve]:
        """Act on what the threads handed over: queue decided granules (fsync'd before anything else becomes
        visible), note what the live path said, turn scans into the granules to recover; those are returned for the
        direction finder."""
        wrote = False
        resolves: list[Resolve] = []
        for item in items:
            try:
                wrote = self._take(item, resolves) or wrote
            except Exception:  # noqa: BLE001 - one odd item must not stop the broker
                log.exception("could not act on %s", type(item).__name__.lower())
        if wrote:
            self.writer.write(self.store.sync, "queued tasks")
        return resolves

    def _take(self, item: Decided | Scan | Announced | Delivered, resolves: list[Resolve]) -> bool:
        """Act on one item (granules to recover are added to ``resolves``); True when the journal was written."""
        if isinstance(item, Scan):
            resolves.extend(self._reconcile(item.found))
        elif isinstance(item, Announced):
            self.planner.live.file(item.name, self.wall())
        elif isinstance(item, Delivered):
            self.planner.live.dataset(item.product, item.taken, item.named, self.wall())
        else:
            return self._admit(item.resolve, item.direction)
        return False

    def _admit(self, resolve: Resolve, direction: Direction) -> bool:
        """Queue one granule (one platform and start time); True when the journal was written."""
        granule, origin = resolve.granule, resolve.origin
        key = next(iter(keys_of(granule.product, granule.data.get("dataset", []))), None)
        if origin == "live" and key is not None:
            self.planner.live.queued(key)
        if origin == "recovered":
            self.planner.done(key)
            if self.queue.knows(key):
                log.info("granule %s reached the queue by the bus meanwhile: not recovered", key.describe())
                return False
        task, outcome, entry = self.queue.admit(granule, direction.value)
        if outcome == ADMIT_DUPLICATE and entry.by:  # the pair's other host handed it out first: as it should be
            log.info("%s granule %s was %s by %s as its task %s to %s: not queued here", origin,
                     key.describe() if key else granule.subject, entry.kind, entry.by, entry.what, entry.worker or "?")
            return False
        if outcome == ADMIT_DUPLICATE:
            self._event("duplicate")
            log.info("dropped %s granule %s: it was %s as task %d to %s at %s (never a second task)", origin,
                     key.describe() if key else granule.subject, entry.kind, entry.task_id, entry.worker or "?",
                     isotime.stamp(entry.when))
            return False
        self._encoded[task.id] = encode_task(task)
        self.writer.write(lambda: self.store.append(Put(task_to_record(task))), task.describe())
        done = (f"{'merged into' if outcome == ADMIT_MERGED else 'queued as'} {task.describe()}, pass direction "
                f"{direction.describe()}")
        if origin == "recovered":
            self._event("recovered")
            note = resolve.note
            log.warning("recovered granule %s (%s): complete in sdr/ for %.1f s; %s", key.describe(), note.case,
                        note.waited + (self.wall() - note.planned_at), done)
        elif origin == "operator":
            log.warning("re-queued granule %s for an operator: %s", key.describe() if key else "?", done)
        else:
            log.info("%s", done[0].upper() + done[1:])
        return True

    def _reconcile(self, found: list[OnDisk]) -> list[Resolve]:
        recoveries = self.planner.plan(found, self.queue.knows, self.wall())
        return [Resolve(self._granule_of(recovery.found.key.product, recovery.found.files), "recovered",
                        Planned(recovery.case, recovery.waited, self.wall())) for recovery in recoveries]

    def _granule_of(self, product: str, files) -> Granule:
        sdr = self.sdr_dir
        data = granule_data(product, files, lambda name: str(sdr / name))
        return parse_granule(f"{TOPIC}/{product}", "dataset", SENDER, self._now(), data)

    # -- requests ----------------------------------------------------------------------------------------------

    def request(self, body: list[bytes], worker: Callable[[], str]) -> tuple[bytes, Task | None]:
        """The one reply to a request's body frames, and the task handed out with it (None for anything else).

        ``worker`` gives the worker's address (asked only for a hand-out)."""
        try:
            return self._answer(body, worker)
        except Exception as err:  # noqa: BLE001 - a bug must still produce a reply, never a hung worker
            log.exception("request failed")
            return error_reply(f"internal error: {type(err).__name__}"), None

    def _answer(self, body: list[bytes], worker: Callable[[], str]) -> tuple[bytes, Task | None]:
        if len(body) != 1:
            self._bad_pending += 1
            return error_reply(f"a request is one frame, got {len(body)}"), None
        try:
            request = parse_request(body[0])
        except BadRequest as err:
            self._bad_pending += 1
            self._bad.warn("bad request answered with an error: %s", err)
            return error_reply(str(err)), None
        task = self.queue.peek(request.desired_products)
        if task is None:
            return b"", None
        try:
            reply = self._encode(task)
        except Exception:  # noqa: BLE001 - a task that cannot be encoded must not block its product for ever
            log.exception("dropped %s: it cannot be encoded", task.describe())
            entry = self.queue.drop(task.id, self._now(), "task_broker")
            self.writer.write(lambda: self.store.append(entry.to_take(), sync=True), f"drop of task {task.id}")
            return error_reply(f"task {task.id} could not be encoded; ask again"), None
        if request.just_testing:
            return reply, None
        self._hand_out(task, request.desired_products, worker())
        return reply, task

    def _hand_out(self, task: Task, desired: tuple[str, ...], worker: str) -> None:
        self.queue.take(desired, when=self._now(), worker=worker)
        self._encoded.pop(task.id, None)
        entry = self.queue.ledger_entry_of(task.id)
        # written (it survives a kill of this process) before the reply goes out; fsync'd at the next tick
        self.writer.write(lambda: self.store.append(entry.to_take()),
                          f"hand-out of task {task.id}")
        self._recent.append((self.wall(), task))
        self._unsynced = True
        self._marks = 2

    def _encode(self, task: Task) -> bytes:
        reply = self._encoded.get(task.id)
        if reply is None:
            reply = self._encoded[task.id] = encode_task(task)
        return reply

    def delivered(self, task: Task) -> None:
        """The reply carrying ``task`` was written to its worker's connection: journaled (one ``os.write``, so it
        outlives a kill of this process), so that a later start does not take the hand-out for one in doubt."""
        entry = self.queue.ledger_entry_of(task.id)
        self._sent.add(task.id)
        self.writer.write(lambda: self.store.append(Sent(task.id)), f"delivery of task {task.id}")
        log.info("handed out %s to %s", task.describe(), entry.worker if entry else "?")

    def too_large(self, size: int) -> bytes:
        """The error reply to a request of ``size`` bytes, over the limit (the listener read it to its end and threw
        it away); counted as a bad request."""
        self._bad_pending += 1
        reason = f"request is {size} bytes, the limit is {MAX_REQUEST_BYTES}"
        self._bad.warn("bad request answered with an error: %s", reason)
        return error_reply(reason)

    def undelivered(self, task: Task, why: object) -> None:
        """The reply carrying ``task`` could not be delivered (the worker has gone): the task goes back in its
        place."""
        self.queue.restore(task)
        self._encoded[task.id] = encode_task(task)
        self.writer.write(lambda: self.store.append(Put(task_to_record(task)), sync=True), f"return of {task.id}")
        log.warning("could not deliver %s (%s): put back in its place", task.describe(), why)

    # -- the pair's other host ----------------------------------------------------------------------------------

    def handout_records(self, task: Task) -> tuple[Put, Take] | None:
        """The records of the hand-out of ``task`` that travel to the pair's other host: the task as it was handed
        out, and its ledger entry (None when it has none)."""
        entry = self.queue.ledger_entry_of(task.id)
        return None if entry is None else (Put(task_to_record(task)), entry.to_take())

    def hand_outs(self) -> list[Take]:
        """The ledger, oldest first, as a catch-up sends it: this host's own entries, and the other host's (with
        their ``by``: so a host that lost the end of its journal with its power learns its own hand-outs back)."""
        return [entry.to_take() for entry in self.queue.ledger()]

    def peer_took(self, take: Take, task: Mapping | None, by: str) -> bool:
        """A hand-out (or a drop) that the pair's other host ``by`` made and replicated here: its granules leave
        this queue or are kept as taken (``TaskQueue.withdraw``); a granule this host had handed out itself is
        counted and logged (``handed out twice``: two actives at once). ``by`` empty: a hand-out of this host's
        own that the other host told back (a catch-up). ``task`` is the task's record as handed out (decoded only
        if it is queued again here). True when the journal was written (the caller marks it :meth:`written`)."""
        if take.granules is None:
            raise ValueError(f"take of task {take.id} has no granules")
        done = self.queue.withdraw(take.granules, take.t or self._now(), take.worker, take.kind, take.what, by)
        if by and take.kind == HANDED_OUT and task is not None and (done.entries or done.changed or
                                                             any(entry.by for entry in done.known)):
            self._peer_recent[take.id] = PeerHandOut(self.wall(), task, take)  # not if only this host handed it out
        for changed in done.changed:
            self._encoded[changed.id] = encode_task(changed)
            self.writer.write(lambda task=changed: self.store.append(Put(task_to_record(task))), changed.describe())
        for entry in done.entries:
            self._encoded.pop(entry.task_id, None)
            self.writer.write(lambda entry=entry: self.store.append(entry.to_take()), f"peer's task {take.id}")
        twice = [entry for entry in done.known if by and not entry.by and entry.kind == HANDED_OUT
                 and take.kind == HANDED_OUT and not any(key in self._doubted for key in entry.granules)
                 and self._served_at(take.t)  # not the other host's hand-out after this one stopped serving
                 and (entry.task_id, by, take.id) not in self._twice]  # a second catch-up counts nothing again
        self._twice.update((entry.task_id, by, take.id) for entry in twice)
        if twice:
            self._event("handed out twice", len(twice))
            for entry in twice:
                log.error("%s was handed out by both hosts: here as task %d to %s at %s, by %s to %s at %s (two "
                          "actives at once)", entry.what, entry.task_id, entry.worker or "?",
                          isotime.stamp(entry.when), by, take.worker or "?", isotime.stamp(take.t) if take.t else "?")
        if done.entries or done.changed:
            log.info("%s %s %s to %s: %d tasks left this queue, %d lost files, %d granules kept as taken",
                     by or "this host (told back by the other host)",
                     take.kind, take.what, take.worker or "?", sum(1 for e in done.entries if e.task_id != take.id),
                     len(done.changed), sum(len(e.granules) for e in done.entries))
        return bool(done.entries or done.changed)

    def written(self) -> None:
        """The other host's hand-outs were appended (each one ``os.write``: they outlive a kill of this process, as
        this host's own hand-outs do before their reply leaves); fsync'd at the next tick, as those are."""
        self._unsynced = True

    def peer_sent(self, peer_id: int) -> None:
        """The other host said the reply of its hand-out ``peer_id`` left: not in doubt if this host takes over."""
        item = self._peer_recent.get(peer_id)
        if item is not None:
            item.sent = True

    def _served_at(self, when: dt.datetime | None) -> bool:
        """Whether this process served (handed out as the active host) at ``when``: a granule this host handed
        out that the other host handed out too then was two actives at once (a split). One the other host handed
        out after this host stopped serving (this host died or stepped down, the other took over and queued this
        host's hand-out again as in doubt) is not: that one is counted as in doubt, there. A process restarted
        since knows nothing of its former life: it counts what comes while it serves now."""
        if when is None:
            return False
        at = when.timestamp()  # the other host's clock, to the microsecond: a second's margin either way
        if self._serving_since is not None and at >= self._serving_since - CLOCK_MARGIN_SECONDS:
            return True
        return any(start - CLOCK_MARGIN_SECONDS <= at <= end + CLOCK_MARGIN_SECONDS for start, end in self._served)

    def demoted(self) -> None:
        """This host stopped being the active one (see :meth:`_served_at`)."""
        if self._serving_since is not None:
            self._served.append((self._serving_since, self.wall()))
            self._serving_since = None
        while self._served and self._served[0][1] < self.wall() - 86400:
            self._served.popleft()

    def promoted(self) -> int:
        """This host became the active one: the other host's hand-outs of the last :data:`PEER_DOUBT_SECONDS`
        whose reply it did not say had left are in doubt (it may have died before the reply left): their granules
        are queued again, counted and logged at WARNING (at most one duplicate per worker that was asking, never a
        lost granule). How many."""
        now = self.wall()
        if self._serving_since is None:
            self._serving_since = now
        doubted = [item for item in self._peer_recent.values()
                   if not item.sent and now - item.received <= PEER_DOUBT_SECONDS]
        self._peer_recent.clear()
        queued = sum(self._requeue_peer(item) for item in doubted)
        if doubted:
            self.writer.write(self.store.sync, "hand-outs in doubt")
        return queued

    def _requeue_peer(self, item: PeerHandOut) -> bool:
        for key in item.take.granules or ():
            self._doubted[key] = None
        try:
            queued, outcome = self._queue_peer_task(task_from_record(item.task))
        except (ValueError, KeyError, TypeError) as err:
            log.error("hand-out of %s by the other host is in doubt, but its task record is damaged (%s): not "
                      "queued again; re-queue its granules with `avoviirscollector tasks requeue`", item.take.what, err)
            return False
        if queued is not None:
            self._event("in doubt")
        log.warning("hand-out of %s by the other host to %s at %s is in doubt (this host took over before that "
                    "host said its reply had left): %s", item.take.what, item.take.worker or "an unknown worker",
                    isotime.stamp(item.take.t, micro=True) if item.take.t else "?",
                    f"queued again as {queued.describe()}" if queued is not None else f"not queued ({outcome})")
        return queued is not None

    def _queue_peer_task(self, task: Task) -> tuple[Task | None, str]:
        """Queue here a task of the other host's whose granules its hand-out had taken (their entries of the other
        host leave the ledger; one of this host's own stays, and the granule with it)."""
        keys = [key for key in granules_of(task)
                if (entry := self.queue.ledger_entry(key)) is not None and entry.by]
        forgotten = self.queue.forget(keys)
        if forgotten:
            self.writer.write(lambda: self.store.append(Forget(tuple(forgotten))), "the other host's hand-out")
        granule = parse_granule(task.subject, task.atype, task.sender, task.time, task.data)
        queued, outcome, _ = self.queue.admit(granule, task.pass_direction)
        if queued is not None:
            self._encoded[queued.id] = encode_task(queued)
            self.writer.write(lambda: self.store.append(Put(task_to_record(queued))), queued.describe())
        return queued, outcome

    def peer_returned(self, task: Task) -> None:
        """The other host could not deliver its hand-out of ``task`` (the worker had gone) and queued it again: so
        does this host."""
        self._peer_recent.pop(task.id, None)
        queued, outcome = self._queue_peer_task(task)
        log.info("the other host queued %s again (its worker had gone): %s here", task.describe(),
                 queued.describe() if queued is not None else outcome)

    # -- operators ---------------------------------------------------------------------------------------------

    def control(self, body: list[bytes]) -> tuple[bytes, list[Resolve]]:
        """The answer to an operator's request (always one), and the granules it re-queues."""
        resolves: list[Resolve] = []
        try:
            answer, resolves = self.command(parse_command(body[0] if len(body) == 1 else b""))
        except BadCommand as err:
            answer = {"error": str(err)}
        except Exception as err:  # noqa: BLE001 - an operator always gets an answer
            log.exception("control command failed")
            answer = {"error": f"internal error: {type(err).__name__}: {err}"}
        return json.dumps(answer, default=str).encode(), resolves

    def command(self, command: Command) -> tuple[dict, list[Resolve]]:
        """Carry out one operator command: its answer, and the granules it re-queues."""
        if command.name == "list":
            return {
                "queued": [_task_summary(task) for task in self.queue],
                "handed out": [entry.to_json() for entry in self.queue.ledger()],
            }, []
        if command.name == "drop":
            return self._drop(command.task_id), []
        return self._requeue(command)

    def _drop(self, task_id: int) -> dict:
        entry = self.queue.drop(task_id, self._now(), "operator")
        if entry is None:
            return {"error": f"no queued task {task_id}"}
        self._encoded.pop(entry.task_id, None)
        self.writer.write(lambda: self.store.append(entry.to_take(), sync=True),
                          f"drop of task {entry.task_id}")
        log.warning("dropped %s for an operator", entry.what)
        return {"dropped": entry.what}

    def _requeue(self, command: Command) -> tuple[dict, list[Resolve]]:
        found = [item for item in complete_between(self.sdr_dir, command.start, command.end)
                 if command.product in (None, item.key.product)
                 and command.platform_name in (None, item.key.platform_name)]
        keys = [item.key for item in found]
        forgotten = self.queue.forget(keys)
        if forgotten:
            self.writer.write(lambda: self.store.append(Forget(tuple(forgotten)), sync=True),
                f"re-queue of {len(forgotten)} granules")
        resolves = [Resolve(self._granule_of(item.key.product, item.files), "operator")
                    for item in sorted(found, key=lambda item: item.key)]
        log.warning("operator re-queues %d granules (%d were handed out or dropped) with start times %s..%s",
                    len(found), len(forgotten), command.start, command.end)
        return {"requeued": [key.describe() for key in sorted(keys)]}, resolves

    # -- a stop ------------------------------------------------------------------------------------------------

    def write_state(self) -> None:
        """Write the whole state (a stop: the bus is no longer followed, the queue is final but for hand-outs)."""
        self._write_bad_requests(force=True)
        if self.writer.behind:
            self.writer.catch_up(self._compact, force=True)
        else:
            self.writer.write(self._compact, "final state")

    def mark_clean_stop(self) -> None:
        """The journal's last record: the stop was clean (no hand-out is in doubt at the next start)."""
        self._write_bad_requests(force=True)
        self.writer.write(lambda: self.store.append(Stop(), sync=True), "the clean stop")
        log.info("stopped: %d tasks queued and written to %s", len(self.queue), self.store.path)

    def close(self) -> None:
        self.store.abort_compaction()
        self.store.close()


def _task_summary(task: Task) -> dict:
    """A queued task as the operators' ``list`` shows it."""
    return {"id": task.id, "product": task.product, "platform_name": task.data["platform_name"],
            "orbit_number": task.data["orbit_number"], "pass_direction": task.pass_direction,
            "start_time": task.start_time.isoformat(), "end_time": task.end_time.isoformat(),
            "files": len(task.data.get("dataset", [])),
            "granules": [key.to_json() for key in sorted(keys_of(task.product, task.data.get("dataset", [])))]}
