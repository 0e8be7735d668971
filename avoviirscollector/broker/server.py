"""task_broker: turns granule messages into product tasks and hands them to viirsprocessor workers.

What it does (SPEC sections 6 and 10):

- follows every publisher of ``/AVO/viirs/granule/<product>`` on the internal posttroll bus (segment_gatherer's
  ``dataset`` messages), including publishers that start or restart later. Each message is sorted into granules
  by its file names (``granules.py``): a granule is (product, platform, start time), and only whole granules
  become tasks (a gatherer slot keyed by start time alone can mix two satellites' files: logged at WARNING);
- reconciles with ``sdr/``, the source of truth, every 5 s (``reconcile.py``; its view of sdr/ comes from one full
  pass at start and inotify from then on, so its cost follows the window, not the archive): every product granule
  complete on disk within ``RECOVERY_HOURS`` (by placement time) that is neither queued nor in the hand-out ledger,
  10 s after it became complete, is queued like a live one and logged at WARNING with the case that lost it
  (``recovered granule ... (<case>): complete in sdr/ for N s``). Granules completed before the first start with a
  ledger (an upgrade, a new install) are not recovered;
- decides each granule's pass direction (TLE in ``$VIIRS_BASE/elements``, else the granule's geolocation file;
  the log line says which; the work is done by a helper child process, ``python -m
  avoviirscollector.broker.direction``, so that pyorbital/scipy and h5py never weigh on or crash the process
  that holds the queue) and queues it: a granule already queued updates its task (one file per segment, the
  newest copy), one already handed out or dropped is refused and logged (never a second task), else it merges
  into a queued task of the same identity (subject, platform, orbit, direction) whose start is within 30 minutes
  or becomes a new task;
- answers requests on ``TASK_PORT`` (default 19091), a ZeroMQ ROUTER that speaks to any number of REQ workers:
  request ``{"desired products": ["tir", ...], "just testing": false}``, reply the oldest task of a desired
  product as a posttroll message (v1.01, naive UTC datetimes, data key ``pass_direction`` added), removed from the
  queue unless "just testing", or empty bytes when nothing matches. **Every request gets exactly one reply**:
  anything malformed (not JSON, not an object, a missing or mistyped key, an empty product list, more than
  64 KiB) is answered with ``{"error": "..."}``, and counted: in the journal as one ``bad request`` event with a
  ``count`` every 10 s at most (monitor reads it), and in the status stream. Replies never wait for another
  worker. (Only a single frame over 256 MiB is refused by ZeroMQ itself, which drops that connection; no worker
  sends such a thing. And a worker whose request was in flight when the broker process died gets no reply from the
  next one: a REQ socket does not resend, so a worker with no timeout must be restarted then.) Each hand-out is
  logged with the worker's address and kept in the ledger for ``RECOVERY_HOURS`` and one hour more;
- publishes ``{"queue length": N, "products waiting": [...], "tasks by product": {...}, "recovered (24 h)": N,
  "in doubt (24 h)": N, "duplicate (24 h)": N, "bad request (24 h)": N}`` (and ``"state behind": true`` while its
  journal cannot be written) as JSON on ``UPDATE_PORT`` (default 19191) once a second, always, and at once to each
  new subscriber (an XPUB socket: ``status`` and the HEALTHCHECK need not wait for the next second); and when it stops,
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

On a full disk (any failed write) the broker goes on serving from memory, says so in one ERROR line a minute,
stops appending (a torn line could follow) and tries every 10 s to write its whole state anew; one INFO line says
when it succeeded.

Settings (environment, see config.py): ``VIIRS_BASE``, ``TASK_PORT``, ``UPDATE_PORT``, ``RECOVERY_HOURS``,
``AVO_ETC`` (the gatherers' slot timeouts, read to name the late-file case); ``MAILHOST``, ``LOG_SENDER``,
``LOG_RECIPIENT`` (ERROR lines mailed, batched, when all three are set); the posttroll nameserver is
``localhost``.

Signals: SIGTERM or SIGINT publish the stopping status (deployed workers ask only while the queue length they last
heard is above 0, and a request that reaches a broker after its last answer would leave its worker waiting
forever), stop taking bus messages, queue (and write) those already received, write the state, answer every
request received until none has come for 0.2 s (at most 1.5 s: so requests that came while the state was written
are answered too), mark the stop clean and exit 0, within about two seconds (more with a queue of tens of
thousands of tasks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import queue as stdqueue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import zmq
from posttroll.message import Message

from avoviirscollector.access import listen_dual_stack, start_access_control
from avoviirscollector.allowlist import shown_address
from avoviirscollector.broker.control import BadCommand, Command, control_address, parse_command
from avoviirscollector.broker.direction import Direction
from avoviirscollector.broker.direction_helper import DirectionHelper
from avoviirscollector.broker.reconcile import SCAN_SECONDS, Planner, SdrView, complete_between, gatherer_timeouts
from avoviirscollector.broker.store import DOUBT_SECONDS, JournalStore
from avoviirscollector.broker.taskqueue import (
    ADMIT_DUPLICATE,
    ADMIT_MERGED,
    Granule,
    HandOut,
    NotAGranule,
    Task,
    TaskQueue,
    parse_granule,
    task_from_record,
    task_to_record,
)
from avoviirscollector.bus import encode_legacy, follow
from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.granules import GranuleKey, granule_data, keys_of, split_dataset
from avoviirscollector.logs import setup_logging
from avoviirscollector.signals import stop_on_signals

PROGRAM = "task_broker"
TOPIC = "/AVO/viirs/granule"
MAX_REQUEST_BYTES = 64 * 1024
MAX_PRODUCTS = 64
MAX_PRODUCT_NAME = 64
ZMQ_MAX_MESSAGE = 256 * 1024 * 1024  # larger frames make ZeroMQ drop the connection (no worker sends those)
STATUS_INTERVAL = 1.0
POLL_SECONDS = 0.05
#: the ledger keeps a hand-out this long beyond RECOVERY_HOURS
LEDGER_MARGIN = dt.timedelta(hours=1)
EVENT_KINDS = ("recovered", "in doubt", "duplicate", "bad request")
#: bad requests are written to the journal as one event with their count at most this often
BAD_REQUEST_EVERY = 10.0
SENDER = "task_broker@reconciliation"

log = logging.getLogger(PROGRAM)


class BadRequest(ValueError):
    """A request the broker answers with ``{"error": ...}``."""


@dataclass(frozen=True)
class Request:
    desired_products: tuple[str, ...]
    just_testing: bool


def parse_request(payload: bytes) -> Request:
    """Validate one request body (the schema of the original task_broker); raise :class:`BadRequest`."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request is {len(payload)} bytes, the limit is {MAX_REQUEST_BYTES}")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("request is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request is not a JSON object")
    if "desired products" not in body:
        raise BadRequest('request has no "desired products"')
    products = body["desired products"]
    if not isinstance(products, list):
        raise BadRequest('"desired products" is not a list')
    if not products:
        raise BadRequest('"desired products" is empty')
    if len(products) > MAX_PRODUCTS:
        raise BadRequest(f'"desired products" has more than {MAX_PRODUCTS} entries')
    for product in products:
        if not isinstance(product, str) or not product or len(product) > MAX_PRODUCT_NAME:
            raise BadRequest(f'"desired products" entries must be product names of 1-{MAX_PRODUCT_NAME} characters')
    just_testing = body.get("just testing", False)
    if not isinstance(just_testing, bool):
        raise BadRequest('"just testing" is not true or false')
    return Request(tuple(products), just_testing)


def error_reply(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode("utf-8")


def encode_task(task: Task) -> bytes:
    """The reply for a task: a posttroll message that posttroll 1.5 and today's posttroll both decode."""
    msg = Message(task.subject, task.atype, task.handout_data())
    msg.sender = task.sender
    msg.time = task.time
    return encode_legacy(msg).encode("utf-8")


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames -> (routing envelope including the empty delimiter, body frames)."""
    for index, frame in enumerate(frames):
        if frame == b"":
            return frames[: index + 1], frames[index + 1:]
    return frames[:1], frames[1:]


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


class Ingest(threading.Thread):
    """Follows the granule topic and checks each message: whole granules of one platform and start time go on to
    the direction finder (a gatherer slot keyed by start time alone can mix granules: only the complete ones are
    taken; the rest is left to reconciliation)."""

    def __init__(self, resolver: Resolver, follow_bus=follow) -> None:
        super().__init__(name="ingest", daemon=True)
        self.resolver = resolver
        self.follow_bus = follow_bus
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with self.follow_bus([TOPIC]) as sub:
                    log.info("following %s on the bus", TOPIC)
                    for msg in sub.recv(timeout=0.25):  # wakes 4 times a second to see the stop flag
                        if self.stopping.is_set():
                            break
                        if msg is not None:
                            self.handle(msg)
            except TimeoutError as err:
                log.warning("no answer from the posttroll nameserver on localhost (%s); retrying", err)
                self.stopping.wait(1)
            except Exception:  # noqa: BLE001 - keep following whatever the bus does
                log.exception("bus subscription failed; retrying in 1 s")
                self.stopping.wait(1)

    def handle(self, msg: Message) -> None:
        try:
            granule = parse_granule(msg.subject, msg.type, msg.sender, msg.time, msg.data)
            split = split_dataset(granule.product, granule.data)
            if not split.complete and not split.incomplete:
                raise NotAGranule("dataset names no VIIRS SDR granule file")
            parts = [parse_granule(msg.subject, msg.type, msg.sender, msg.time, data) for data in split.complete]
        except NotAGranule as err:
            log.warning("ignored %s message on %s from %s: %s", msg.type, msg.subject, msg.sender, err)
            return
        if split.incomplete or len(parts) > 1 or split.foreign:
            log.warning("dataset from %s on %s mixes granules: %d complete taken; incomplete %s and %d foreign "
                        "entries left to reconciliation with sdr/", msg.sender, msg.subject, len(parts),
                        ", ".join(key.describe() for key in split.incomplete) or "none", split.foreign)
        for part in parts:
            self.resolver.submit(part, "live")


class Resolver(threading.Thread):
    """Decides the pass direction of each granule submitted (live or recovered), one at a time, and hands
    ``(granule, direction, origin, note)`` to the broker's loop."""

    def __init__(self, finder: DirectionHelper, out: stdqueue.SimpleQueue) -> None:
        super().__init__(name="direction", daemon=True)
        self.finder = finder
        self.out = out
        self.jobs: stdqueue.SimpleQueue = stdqueue.SimpleQueue()

    def submit(self, granule: Granule, origin: str, note: object = None) -> None:
        self.jobs.put((granule, origin, note))

    def stop(self) -> None:
        self.jobs.put(None)

    def run(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                granule, origin, note = job
                try:
                    direction = self.finder.find(granule.platform_name, granule.start_time,
                                                 granule.data.get("dataset", []))
                except Exception as err:  # noqa: BLE001 - a granule is queued even if its direction cannot be found
                    direction = Direction("unknown", "none", f"error: {err}")
                self.out.put(("granule", granule, direction, origin, note))
        finally:
            self.finder.close()


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
        self.behind_since: float | None = None  # monotonic time of the first failed write
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


class TaskBroker:
    """The daemon. ``run()`` blocks until ``stop()``; one thread owns the queue, the journal and the sockets."""

    def __init__(self, settings: Settings, follow_bus=follow, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.wall = wall
        self.store = JournalStore(settings.state_dir)
        self.writer = StateWriter(self.store)
        self.queue = TaskQueue()
        self.incoming: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        self.resolver = Resolver(DirectionHelper(settings.elements_dir), self.incoming)
        self.ingest = Ingest(self.resolver, follow_bus)
        self.window = dt.timedelta(hours=settings.recovery_hours)
        self.planner: Planner | None = None  # made once the ledger is loaded
        self.sdr_view: SdrView | None = None
        self.ledger_since = dt.datetime.now(dt.UTC)
        self.events: deque[tuple[float, str, int]] = deque()  # (epoch, kind, count) of the last day's events
        self._recent: deque[tuple[float, Task]] = deque()  # hand-outs of the last 2 s (kept whole for compaction)
        self._stop = threading.Event()
        self._bad = RateLimitedWarning(log, "bad requests")
        self._bad_pending = 0  # bad requests not yet in the journal (written as one counted event every 10 s)
        self._bad_written = 0.0
        self._encoded: dict[int, bytes] = {}  # task id -> its reply, made when queued or merged (or first asked for)
        self._unsynced = False
        self._marks = 0
        self._next_prune = 0.0
        self.served = 0

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler: only sets a flag)."""
        self._stop.set()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.wall(), dt.UTC)

    # -- state -------------------------------------------------------------------------------------------------

    def _load(self) -> None:
        loaded = self.store.load(decode=task_from_record)
        self.queue = TaskQueue(loaded.tasks, next_id=loaded.next_id)
        for op in loaded.ledger:
            try:
                if op["op"] == "take":
                    self.queue.record(HandOut.from_record(op))
                else:
                    self.queue.forget(GranuleKey.from_json(key) for key in op["granules"])
            except (ValueError, KeyError, TypeError) as err:
                log.error("state: a ledger record of %s is damaged (%s): skipped", self.store.path, err)
        for task in self.queue:  # a hand-out whose reply could not be delivered was put back: queued, not handed out
            self.queue.unrecord(task.id)
        for op in loaded.events:
            when = _epoch(op.get("t"))
            if when is not None:
                self.events.append((when, str(op.get("kind")), _count(op)))
        now = self._now()
        if loaded.ledger_since is None:
            log.info("state: no hand-out ledger in %s yet: granules completed before now (%s) are not recovered",
                     self.store.path, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.ledger_since = loaded.ledger_since or now
        if not loaded.clean:
            log.warning("state: task_broker did not stop cleanly last time (last record %s)",
                        loaded.last_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if loaded.last_time else "none")
        for task, op in loaded.in_doubt:
            if self.queue.get(task.id) is not None:
                continue
            self.queue.restore(task)
            self._event("in doubt")
            log.warning("hand-out of %s to %s at %s is in doubt (task_broker stopped uncleanly within %.0f s of "
                        "it; the reply may never have left): queued again in its place", task.describe(),
                        op.get("worker") or "an unknown worker", op.get("t"), DOUBT_SECONDS)
        self._prune(now)
        self._encoded = {task.id: encode_task(task) for task in self.queue}  # hand-outs only send bytes
        self.writer.write(self._compact, "the state at start")
        log.info("state: %d tasks queued from %s %s; %d hand-outs in the ledger (since %s)", len(self.queue),
                 self.store.path, self.queue.products_waiting(), len(self.queue.ledger()),
                 self.ledger_since.strftime("%Y-%m-%dT%H:%M:%SZ"))

    def _records(self, tasks: list[Task], ledger: list[HandOut], events: list[tuple[float, str, int]],
                 recent: dict[int, Task]) -> Iterator[dict]:
        """Ops of a compacted journal (made lazily: a task is serialised when its turn comes)."""
        for task in tasks:
            yield {"op": "put", "task": task_to_record(task)}
        for entry in ledger:
            if entry.task_id in recent:  # a hand-out that may still be in doubt keeps its task whole
                yield {"op": "put", "task": task_to_record(recent[entry.task_id])}
            yield {"op": "take", "t": entry.when.isoformat(), **entry.to_record()}
        for when, kind, count in events:
            yield {"op": "event", "t": _iso(when), "kind": kind, **({"count": count} if count != 1 else {})}

    def _snapshot(self) -> tuple[Iterator[dict], dict]:
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
        extra = {"count": count} if count != 1 else {}
        self.writer.write(lambda: self.store.append({"op": "event", "kind": kind, **extra}), f"a {kind} event")

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
                     self.settings.recovery_hours + 1)
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

    # -- granules ----------------------------------------------------------------------------------------------

    def _queue_incoming(self) -> None:
        """Act on everything the threads handed over; new tasks become visible only after the journal is fsync'd."""
        wrote = False
        while True:
            try:
                item = self.incoming.get_nowait()
            except stdqueue.Empty:
                break
            try:
                if item[0] == "scan":
                    self._reconcile(item[1])
                else:
                    wrote = self._admit(*item[1:]) or wrote
            except Exception:  # noqa: BLE001 - one odd item must not stop the broker
                log.exception("could not act on %s", item[0])
        if wrote:
            self.writer.write(self.store.sync, "queued tasks")

    def _admit(self, granule: Granule, direction: Direction, origin: str, note: object) -> bool:
        """Queue one granule (one platform and start time); True when the journal was written."""
        key = next(iter(keys_of(granule.product, granule.data.get("dataset", []))), None)
        if origin == "recovered":
            self.planner.done(key)
            if self.queue.knows(key):
                log.info("granule %s reached the queue by the bus meanwhile: not recovered", key.describe())
                return False
        task, outcome, entry = self.queue.admit(granule, direction.value)
        if outcome == ADMIT_DUPLICATE:
            self._event("duplicate")
            log.info("dropped %s granule %s: it was %s as task %d to %s at %s (never a second task)", origin,
                     key.describe() if key else granule.subject, entry.kind, entry.task_id, entry.worker or "?",
                     entry.when.strftime("%Y-%m-%dT%H:%M:%SZ"))
            return False
        merged = outcome == ADMIT_MERGED
        self._encoded[task.id] = encode_task(task)
        self.writer.write(lambda: self.store.put(task_to_record(task), sync=False), task.describe())
        done = f"{'merged into' if merged else 'queued as'} {task.describe()}, pass direction {direction.describe()}"
        if origin == "recovered":
            self._event("recovered")
            log.warning("recovered granule %s (%s): complete in sdr/ for %.1f s; %s", key.describe(), note.case,
                        note.waited + (self.wall() - note.planned_at), done)
        elif origin == "operator":
            log.warning("re-queued granule %s for an operator: %s", key.describe() if key else "?", done)
        else:
            log.info("%s", done[0].upper() + done[1:])
        return True

    def _reconcile(self, found: list) -> None:
        recoveries = self.planner.plan(found, self.queue.knows, self.wall())
        for recovery in recoveries:
            granule = self._granule_of(recovery.found.key.product, recovery.found.files)
            self.resolver.submit(granule, "recovered", _Planned(recovery.case, recovery.waited, self.wall()))

    def _granule_of(self, product: str, files) -> Granule:
        sdr = self.settings.sdr_dir
        data = granule_data(product, files, lambda name: str(sdr / name))
        return parse_granule(f"{TOPIC}/{product}", "dataset", SENDER, self._now(), data)

    # -- requests ----------------------------------------------------------------------------------------------

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
            self.writer.write(lambda: self.store.take(task.id, **entry.to_record()), f"drop of task {task.id}")
            return error_reply(f"task {task.id} could not be encoded; ask again"), None
        if request.just_testing:
            return reply, None
        self.queue.take(request.desired_products, when=self._now(), worker=worker())
        self._encoded.pop(task.id, None)
        entry = self.queue.ledger_entry_of(task.id)
        # written (it survives a kill of this process) before the reply goes out; fsync'd at the next tick
        self.writer.write(lambda: self.store.take(task.id, sync=False, **entry.to_record()),
                          f"hand-out of task {task.id}")
        self._recent.append((self.wall(), task))
        self._unsynced = True
        self._marks = 2
        return reply, task

    def _encode(self, task: Task) -> bytes:
        reply = self._encoded.get(task.id)
        if reply is None:
            reply = self._encoded[task.id] = encode_task(task)
        return reply

    def _serve(self, router: zmq.Socket, limit: int = 1000) -> int:
        """Answer the requests waiting on the socket (up to ``limit``), each exactly once."""
        served = 0
        while served < limit and router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            envelope, body = split_envelope([frame.bytes for frame in frames])
            try:
                reply, task = self._answer(body, lambda last=frames[-1]: _peer(last))
            except Exception as err:  # noqa: BLE001 - a bug must still produce a reply, never a hung worker
                log.exception("request failed")
                reply, task = error_reply(f"internal error: {type(err).__name__}"), None
            try:
                router.send_multipart(envelope + [reply], zmq.NOBLOCK)
                if task is not None:
                    entry = self.queue.ledger_entry_of(task.id)
                    log.info("handed out %s to %s", task.describe(), entry.worker if entry else "?")
            except zmq.ZMQError as err:
                if task is not None:
                    self.queue.restore(task)
                    self._encoded[task.id] = encode_task(task)
                    self.writer.write(lambda t=task: self.store.put(task_to_record(t)), f"return of {task.id}")
                    log.warning("could not deliver %s (%s): put back in its place", task.describe(), err)
                else:
                    log.warning("could not deliver a reply (%s): the client has gone", err)
            served += 1
        self.served += served
        return served

    # -- operators ---------------------------------------------------------------------------------------------

    def _control(self, sock: zmq.Socket) -> None:
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = sock.recv_multipart(zmq.NOBLOCK)
            envelope, body = split_envelope(frames)
            try:
                answer = self._command(parse_command(body[0] if len(body) == 1 else b""))
            except BadCommand as err:
                answer = {"error": str(err)}
            except Exception as err:  # noqa: BLE001 - an operator always gets an answer
                log.exception("control command failed")
                answer = {"error": f"internal error: {type(err).__name__}: {err}"}
            try:
                sock.send_multipart(envelope + [json.dumps(answer, default=str).encode()], zmq.NOBLOCK)
            except zmq.ZMQError as err:
                log.warning("could not answer a control request (%s)", err)

    def _command(self, command: Command) -> dict:
        if command.name == "list":
            return {
                "queued": [_task_summary(task) for task in self.queue],
                "handed out": [entry.to_record() for entry in self.queue.ledger()],
            }
        if command.name == "drop":
            entry = self.queue.drop(command.task_id, self._now(), "operator")
            if entry is None:
                return {"error": f"no queued task {command.task_id}"}
            self._encoded.pop(entry.task_id, None)
            self.writer.write(lambda: self.store.take(entry.task_id, sync=True, **entry.to_record()),
                              f"drop of task {entry.task_id}")
            log.warning("dropped %s for an operator", entry.what)
            return {"dropped": entry.what}
        found = [item for item in complete_between(self.settings.sdr_dir, command.start, command.end)
                 if command.product in (None, item.key.product)
                 and command.platform_name in (None, item.key.platform_name)]
        keys = [item.key for item in found]
        forgotten = self.queue.forget(keys)
        if forgotten:
            self.writer.write(lambda: self.store.append(
                {"op": "forget", "granules": [key.to_json() for key in forgotten]}, sync=True),
                f"re-queue of {len(forgotten)} granules")
        for item in sorted(found, key=lambda item: item.key):
            self.resolver.submit(self._granule_of(item.key.product, item.files), "operator")
        log.warning("operator re-queues %d granules (%d were handed out or dropped) with start times %s..%s",
                    len(found), len(forgotten), command.start, command.end)
        return {"requeued": [key.describe() for key in sorted(keys)]}

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._load()
        started_at = self.wall()
        self.planner = Planner(self.window.total_seconds(), self.ledger_since.timestamp(), started_at,
                               gatherer_timeouts(self.settings.etc_dir / "segment_gatherer.ini"))
        self.sdr_view = SdrView(self.settings.sdr_dir, self.planner.since,
                                lambda found: self.incoming.put(("scan", found)),
                                horizon=dt.timedelta(days=self.settings.gina_backfill_days + 1))
        context = zmq.Context()
        start_access_control(context, self.settings, log)  # ALLOWED_CLIENTS (SPEC 12): before any socket is made
        router = context.socket(zmq.ROUTER)
        status = context.socket(zmq.XPUB)  # a PUB that hears each new subscriber: it gets a status at once
        control = context.socket(zmq.ROUTER)
        threads_started = False
        try:
            listen_dual_stack(router)  # IPv6 and IPv4 peers (IPv6 entries of ALLOWED_CLIENTS can match)
            listen_dual_stack(status)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE)
            router.setsockopt(zmq.LINGER, 1000)
            status.setsockopt(zmq.LINGER, 0)
            status.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only the first of each topic
            control.setsockopt(zmq.LINGER, 0)
            control.setsockopt(zmq.MAXMSGSIZE, 65536)
            try:
                router.bind(f"tcp://*:{self.settings.task_port}")
                status.bind(f"tcp://*:{self.settings.update_port}")
            except zmq.ZMQError as err:
                log.error("cannot bind TASK_PORT %d / UPDATE_PORT %d: %s", self.settings.task_port,
                          self.settings.update_port, err)
                return 1
            run_dir = self.settings.viirs_base / "run"
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                control.bind(control_address(run_dir))
            except (OSError, zmq.ZMQError) as err:
                log.error("cannot open the operators' socket %s (%s): `avoviirscollector tasks` will not work",
                          control_address(run_dir), err)
            log.info("serving tasks on %d, status on %d; reconciling with %s every %.0f s (window %d hours)",
                     self.settings.task_port, self.settings.update_port, self.settings.sdr_dir, SCAN_SECONDS,
                     self.settings.recovery_hours)
            self.resolver.start()
            self.ingest.start()
            self.sdr_view.start()
            threads_started = True
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            poller.register(control, zmq.POLLIN)
            poller.register(status, zmq.POLLIN)
            next_status = time.monotonic()
            while not self._stop.is_set():
                self._queue_incoming()
                now = time.monotonic()
                if now >= next_status:
                    self._tick(status)
                    next_status = max(next_status + STATUS_INTERVAL, now)
                    continue
                if self.store.compacting and not self.writer.behind:  # advances in small steps between requests
                    self.writer.write(lambda: self.store.compaction_step(0.001), "compacted state")
                    wait = 0.0
                else:
                    wait = min(POLL_SECONDS, next_status - now)
                ready = dict(poller.poll(int(wait * 1000) + (wait > 0)))
                if ready:
                    self._queue_incoming()
                    if router in ready:
                        self._serve(router)
                    if control in ready:
                        self._control(control)
                    if status in ready:
                        self._greet(status)
            self._shutdown(router, status)
            return 0
        finally:
            if threads_started:
                self._stop_threads()
            self.store.abort_compaction()
            self.store.close()
            router.close()
            status.close()
            control.close()
            context.term()

    def _status(self, status: zmq.Socket, stopping: bool = False) -> None:
        """Publish the status: the queue and the day's counts; when ``stopping``, the last word before a stop."""
        message = self.queue.status()
        if stopping:
            message.update({"queue length": 0, "products waiting": [], "tasks by product": {}, "stopping": True,
                            "queued": len(self.queue)})
        message.update({f"{kind} (24 h)": count for kind, count in self.counts().items()})
        if self.writer.behind:
            message["state behind"] = True
        try:
            status.send_json(message, zmq.NOBLOCK)
        except zmq.ZMQError as err:
            log.warning("status not published: %s", err)

    def _greet(self, status: zmq.Socket) -> None:
        """A new subscriber on UPDATE_PORT gets the status now, not at the next second (``avoviirscollector status``
        and the HEALTHCHECK then answer within milliseconds); the others get one more status, which is harmless."""
        subscribed = False
        while status.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frame = status.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            subscribed = subscribed or frame[:1] == b"\x01"
        if subscribed:
            self._status(status)

    def _tick(self, status: zmq.Socket) -> None:
        self._status(status)
        self._write_bad_requests()
        wall = self.wall()
        while self._recent and wall - self._recent[0][0] > 2 * DOUBT_SECONDS:
            self._recent.popleft()
        if self._marks:  # the journal's last record tells a later start when the broker was last alive
            self._marks -= 1
            self.writer.write(lambda: self.store.append({"op": "mark"}), "a mark")
        if self._unsynced:
            self._unsynced = False
            self.writer.write(self.store.sync, "hand-outs")
        self.writer.catch_up(self._compact)
        if wall >= self._next_prune:
            self._next_prune = wall + 60
            self._prune(self._now())
        if self.store.needs_compaction(self._live()) and not self.store.compacting and not self.writer.behind:
            self.writer.write(lambda: self.store.start_compaction(*self._snapshot()), "compacted state")

    def _stop_threads(self) -> None:
        self.ingest.stopping.set()
        self.sdr_view.stop()
        self.ingest.join(timeout=1.5)
        if self.ingest.is_alive():
            log.warning("the bus follower did not stop within 1.5 s; leaving it")
        self.resolver.stop()
        self.resolver.join(timeout=2)
        self.sdr_view.join(timeout=1)

    def _shutdown(self, router: zmq.Socket, status: zmq.Socket) -> None:
        """Tell the workers to stop asking, stop taking granules, write the state, then answer every request
        received until 0.2 s pass without one (so a request that came while the state was written is answered
        too), then mark the stop clean.

        Deployed workers ask while the last status said ``queue length > 0`` and wait for their reply forever: a
        request that reached this process after its last answer would never be answered (a REQ socket does not
        resend it to the next broker). So the first thing a stop does is publish a status with ``queue length`` 0
        and ``"stopping": true`` (``"queued"`` keeps the real count): the workers stop asking within a message's
        time, the requests already sent are answered, and the quiet comes."""
        self._status(status, stopping=True)
        log.info("stopping: workers told so; no more bus messages; answering the requests received")
        self._stop_threads()
        self._queue_incoming()
        self._write_bad_requests(force=True)
        if self.writer.behind:
            self.writer.catch_up(self._compact, force=True)
        else:
            self.writer.write(self._compact, "final state")
        quiet_until = time.monotonic() + 0.2
        give_up = time.monotonic() + 1.5
        while time.monotonic() < min(quiet_until, give_up):
            if self._serve(router, limit=100000):
                quiet_until = time.monotonic() + 0.2
            else:
                router.poll(20)
        self._write_bad_requests(force=True)
        self.writer.write(lambda: self.store.append({"op": "stop"}, sync=True), "the clean stop")
        log.info("stopped: %d tasks queued and written to %s", len(self.queue), self.store.path)


@dataclass(frozen=True)
class _Planned:
    case: str
    waited: float
    planned_at: float


def _peer(frame: zmq.Frame) -> str:
    """The worker's address as logged and kept in the ledger (an IPv4 peer of the dual-stack socket, which ZeroMQ
    gives as ``::ffff:a.b.c.d``, as ``a.b.c.d``)."""
    try:
        return shown_address(frame.get("Peer-Address") or "")
    except zmq.ZMQError:
        return ""


def _epoch(value: object) -> float | None:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _count(op: dict) -> int:
    count = op.get("count", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def _task_summary(task: Task) -> dict:
    return {"id": task.id, "product": task.product, "platform_name": task.data["platform_name"],
            "orbit_number": task.data["orbit_number"], "pass_direction": task.pass_direction,
            "start_time": task.start_time.isoformat(), "end_time": task.end_time.isoformat(),
            "files": len(task.data.get("dataset", [])),
            "granules": [key.to_json() for key in sorted(keys_of(task.product, task.data.get("dataset", [])))]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    settings = settings_or_exit(PROGRAM)
    setup_logging(PROGRAM, args.verbose, settings)  # ERROR lines are mailed when MAILHOST etc. are set
    broker = TaskBroker(settings)
    stop_on_signals(broker.stop)
    return broker.run()


if __name__ == "__main__":
    raise SystemExit(main())
