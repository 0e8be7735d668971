"""task_broker: turns granule messages into product tasks and hands them to viirsprocessor workers.

What it does (SPEC section 6):

- follows every publisher of ``/AVO/viirs/granule/<product>`` on the internal posttroll bus (segment_gatherer's
  ``dataset`` messages), including publishers that start or restart later;
- decides each granule's pass direction (TLE in ``$VIIRS_BASE/elements``, else the granule's geolocation file;
  the log line says which; the work is done by a helper child process, ``python -m
  avoviirscollector.broker.direction``, so that pyorbital/scipy and h5py never weigh on or crash the process
  that holds the queue) and queues it as a task, merging it into a queued task of the same identity (subject,
  platform, orbit, direction) whose start is within 30 minutes;
- answers requests on ``TASK_PORT`` (default 19091), a ZeroMQ ROUTER that speaks to any number of REQ workers:
  request ``{"desired products": ["tir", ...], "just testing": false}``, reply the oldest task of a desired
  product as a posttroll message (v1.01, naive UTC datetimes, data key ``pass_direction`` added), removed from the
  queue unless "just testing", or empty bytes when nothing matches. **Every request gets exactly one reply**:
  anything malformed (not JSON, not an object, a missing or mistyped key, an empty product list, more than
  64 KiB) is answered with ``{"error": "..."}``. Replies never wait for another worker. (Only a single frame over
  256 MiB is refused by ZeroMQ itself, which drops that connection; no worker sends such a thing. And a worker
  whose request was in flight when the broker process died gets no reply from the next one: a REQ socket does not
  resend, so a worker with no timeout must be restarted then);
- publishes ``{"queue length": N, "products waiting": [...], "tasks by product": {...}}`` as JSON on
  ``UPDATE_PORT`` (default 19191) once a second, always.

Persistence and the guarantee given. The queue lives in ``$VIIRS_BASE/state/task_queue.journal`` (see
``store.py``). A granule counts as *queued* (acknowledged) from the moment it is visible: in the status stream or
to a worker. That moment comes only after its journal record has been written and fsync'd: the broker's single
main loop writes and syncs a batch of arrived granules before it answers any further request or publishes any
status. So a SIGKILL at any moment loses no acknowledged task. A granule message that had been received but not
yet written when the process died is lost: it was never acknowledged (posttroll PUB/SUB has no replay; the
gatherer does not resend it). A hand-out is written to the journal (one ``write``, which outlives a kill of the
process) before the reply is sent, and fsync'd within a second: a kill between the write and the send loses
that one hand-out rather than handing the task out twice; after a power cut (not a mere kill) a task handed out
in the last second before it can be handed out once more. A reply that cannot be delivered because the worker
has gone puts the task back in its place.

Settings (environment, see config.py): ``VIIRS_BASE``, ``TASK_PORT``, ``UPDATE_PORT``; ``MAILHOST``,
``LOG_SENDER``, ``LOG_RECIPIENT`` (ERROR lines mailed, batched, when all three are set); the posttroll nameserver
is ``localhost``.

Signals: SIGTERM or SIGINT stop taking bus messages, queue (and write) those already received, answer every
request already received, write the state compactly and exit 0, within about two seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from posttroll.message import Message

from avoviirscollector.broker.direction import Direction, DirectionHelper
from avoviirscollector.broker.queue import (
    Granule,
    NotAGranule,
    Task,
    TaskQueue,
    parse_granule,
    task_from_record,
    task_to_record,
)
from avoviirscollector.broker.store import JournalStore
from avoviirscollector.bus import encode_legacy, follow
from avoviirscollector.config import Settings, settings_or_exit
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
    """Follows the granule topic, checks each message and decides its direction; hands results to the broker."""

    def __init__(self, finder: DirectionHelper, out: stdqueue.SimpleQueue, follow_bus=follow) -> None:
        super().__init__(name="ingest", daemon=True)
        self.finder = finder
        self.out = out
        self.follow_bus = follow_bus
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self._follow()
        finally:
            self.finder.close()

    def _follow(self) -> None:
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
        except NotAGranule as err:
            log.warning("ignored %s message on %s from %s: %s", msg.type, msg.subject, msg.sender, err)
            return
        try:
            direction = self.finder.find(granule.platform_name, granule.start_time, granule.data.get("dataset", []))
        except Exception as err:  # noqa: BLE001 - a granule is queued even if its direction cannot be found
            direction = Direction("unknown", "none", f"error: {err}")
        self.out.put((granule, direction))


class TaskBroker:
    """The daemon. ``run()`` blocks until ``stop()``; one thread owns the queue, the journal and the sockets."""

    def __init__(self, settings: Settings, follow_bus=follow) -> None:
        self.settings = settings
        self.store = JournalStore(settings.state_dir)
        self.queue = TaskQueue()
        self.incoming: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        self.ingest = Ingest(DirectionHelper(settings.elements_dir), self.incoming, follow_bus)
        self._stop = threading.Event()
        self._bad = RateLimitedWarning(log, "bad requests")
        self._encoded: dict[int, bytes] = {}  # task id -> its reply, made when queued or merged (or first asked for)
        self._unsynced = False
        self.served = 0

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler: only sets a flag)."""
        self._stop.set()

    # -- state -------------------------------------------------------------------------------------------------

    def _load(self) -> None:
        tasks, next_id = self.store.load(decode=task_from_record)
        self.queue = TaskQueue(tasks, next_id=next_id)
        self._encoded = {task.id: encode_task(task) for task in self.queue}  # hand-outs only send bytes
        self._compact()
        log.info("state: %d tasks queued from %s %s", len(self.queue), self.store.path, self.queue.products_waiting())

    def _compact(self) -> None:
        self.store.compact((task_to_record(task) for task in self.queue), self.queue.next_id)

    def _write(self, action: Callable[[], None], what: str) -> None:
        try:
            action()
        except OSError as err:
            log.error("state: could not write %s to %s: %s (kept in memory only)", what, self.store.path, err)

    # -- granules ----------------------------------------------------------------------------------------------

    def _queue_incoming(self) -> None:
        """Queue every granule received so far; they become visible only after the journal is fsync'd."""
        wrote = False
        while True:
            try:
                granule, direction = self.incoming.get_nowait()
            except stdqueue.Empty:
                break
            try:
                self._offer(granule, direction)
            except Exception:  # noqa: BLE001 - one odd message must not stop the broker
                log.exception("could not queue %s orbit %s", granule.subject, granule.orbit_number)
            wrote = True
        if wrote:
            self._write(self.store.sync, "queued tasks")

    def _offer(self, granule: Granule, direction: Direction) -> None:
        task, merged = self.queue.offer(granule, direction.value)
        self._encoded.pop(task.id, None)
        self._encoded[task.id] = encode_task(task)
        self._write(lambda: self.store.put(task_to_record(task), new=not merged, sync=False), task.describe())
        log.info("%s %s, pass direction %s", "merged into" if merged else "queued", task.describe(),
                 direction.describe())

    # -- requests ----------------------------------------------------------------------------------------------

    def _answer(self, body: list[bytes]) -> tuple[bytes, Task | None]:
        if len(body) != 1:
            return error_reply(f"a request is one frame, got {len(body)}"), None
        try:
            request = parse_request(body[0])
        except BadRequest as err:
            self._bad.warn("bad request answered with an error: %s", err)
            return error_reply(str(err)), None
        task = self.queue.peek(request.desired_products)
        if task is None:
            return b"", None
        try:
            reply = self._encode(task)
        except Exception:  # noqa: BLE001 - a task that cannot be encoded must not block its product for ever
            log.exception("dropped %s: it cannot be encoded", task.describe())
            self.queue.take(request.desired_products)
            self._write(lambda: self.store.take(task.id), f"drop of task {task.id}")
            return error_reply(f"task {task.id} could not be encoded; ask again"), None
        if request.just_testing:
            return reply, None
        self.queue.take(request.desired_products)
        self._encoded.pop(task.id, None)
        # written (it survives a kill of this process) before the reply goes out; fsync'd at the next tick
        self._write(lambda: self.store.take(task.id, sync=False), f"hand-out of task {task.id}")
        self._unsynced = True
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
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            envelope, body = split_envelope(frames)
            try:
                reply, task = self._answer(body)
            except Exception as err:  # noqa: BLE001 - a bug must still produce a reply, never a hung worker
                log.exception("request failed")
                reply, task = error_reply(f"internal error: {type(err).__name__}"), None
            try:
                router.send_multipart(envelope + [reply], zmq.NOBLOCK)
                if task is not None:
                    log.info("handed out %s", task.describe())
            except zmq.ZMQError as err:
                if task is not None:
                    self.queue.restore(task)
                    self._write(lambda t=task: self.store.put(task_to_record(t), new=True), f"return of {task.id}")
                    log.warning("could not deliver %s (%s): put back in its place", task.describe(), err)
                else:
                    log.warning("could not deliver a reply (%s): the client has gone", err)
            served += 1
        self.served += served
        return served

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._load()
        context = zmq.Context()
        router = context.socket(zmq.ROUTER)
        status = context.socket(zmq.PUB)
        try:
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE)
            router.setsockopt(zmq.LINGER, 1000)
            status.setsockopt(zmq.LINGER, 0)
            try:
                router.bind(f"tcp://*:{self.settings.task_port}")
                status.bind(f"tcp://*:{self.settings.update_port}")
            except zmq.ZMQError as err:
                log.error("cannot bind TASK_PORT %d / UPDATE_PORT %d: %s", self.settings.task_port,
                          self.settings.update_port, err)
                return 1
            log.info("serving tasks on %d, status on %d", self.settings.task_port, self.settings.update_port)
            self.ingest.start()
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            next_status = time.monotonic()
            while not self._stop.is_set():
                self._queue_incoming()
                now = time.monotonic()
                if now >= next_status:
                    self._tick(status)
                    next_status = max(next_status + STATUS_INTERVAL, now)
                    continue
                if self.store.compacting:  # a compaction advances in small steps between requests
                    self._write(lambda: self.store.compaction_step(0.001), "compacted state")
                    wait = 0.0
                else:
                    wait = min(POLL_SECONDS, next_status - now)
                if poller.poll(int(wait * 1000) + (wait > 0)):
                    self._queue_incoming()
                    self._serve(router)
            self._shutdown(router)
            return 0
        finally:
            self.store.abort_compaction()
            self.store.close()
            router.close()
            status.close()
            context.term()

    def _tick(self, status: zmq.Socket) -> None:
        try:
            status.send_json(self.queue.status(), zmq.NOBLOCK)
        except zmq.ZMQError as err:
            log.warning("status not published: %s", err)
        if self._unsynced:
            self._unsynced = False
            self._write(self.store.sync, "hand-outs")
        if self.store.needs_compaction() and not self.store.compacting:
            self._write(lambda: self.store.start_compaction(list(self.queue), task_to_record, self.queue.next_id),
                        "compacted state")

    def _shutdown(self, router: zmq.Socket) -> None:
        log.info("stopping: no more bus messages; answering the requests received")
        self.ingest.stopping.set()
        self.ingest.join(timeout=1.5)
        if self.ingest.is_alive():
            log.warning("the bus follower did not stop within 1.5 s; leaving it")
        self._queue_incoming()
        self._serve(router, limit=100000)
        self._write(self._compact, "final state")
        log.info("stopped: %d tasks queued and written to %s", len(self.queue), self.store.path)


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
