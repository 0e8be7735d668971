"""The two threads that bring granules to task_broker's loop: the bus follower and the direction resolver.

:class:`Ingest` follows ``/AVO/viirs/granule/<product>`` on the internal posttroll bus (every publisher, including
those that start or restart later) and sorts each ``dataset`` message into granules by its file names
(``granules.py``): only whole granules of one platform and start time go on (a gatherer slot keyed by start time
alone can mix two satellites' files: logged at WARNING, the rest left to reconciliation with sdr/). It also follows
trollstalker's ``file`` messages on ``/AVO/viirs/sdr``: with the datasets they tell the reconciliation how far the
live path has come (``reconcile.LivePath``), so that a granule still on its way is not taken for a lost one.

:class:`Resolver` decides the pass direction of each granule submitted (live, recovered or re-queued by an
operator), one at a time, with the direction finder it is given (in the daemon the helper process of
``direction_client.py``), and hands the result to the broker's loop as a ``core.Decided`` on its queue. A granule
whose direction cannot be found is still queued, as ``unknown``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from posttroll.message import Message

from avoviirscollector.broker.core import TOPIC, Announced, Decided, Delivered, Resolve
from avoviirscollector.broker.direction import Direction
from avoviirscollector.broker.taskqueue import NotAGranule, parse_granule
from avoviirscollector.bus import follow
from avoviirscollector.granules import keys_of, split_dataset

log = logging.getLogger("task_broker")
#: trollstalker's topic: one ``file`` message per file placed in sdr/
FILE_TOPIC = "/AVO/viirs/sdr"


class DirectionFinding(Protocol):
    """What the resolver needs of a direction finder (``DirectionClient`` in the daemon)."""

    def find(self, platform_name, start_time, dataset) -> Direction: ...

    def close(self) -> None: ...


class Resolver(threading.Thread):
    """Decides the pass direction of each granule submitted, one at a time, and puts a ``Decided`` on ``out``."""

    def __init__(self, finder: DirectionFinding, out: queue.SimpleQueue) -> None:
        super().__init__(name="direction", daemon=True)
        self.finder = finder
        self.out = out
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, resolve: Resolve) -> None:
        self.jobs.put(resolve)

    def stop(self) -> None:
        self.jobs.put(None)

    def run(self) -> None:
        try:
            while (resolve := self.jobs.get()) is not None:
                granule = resolve.granule
                try:
                    direction = self.finder.find(granule.platform_name, granule.start_time,
                                                 granule.data.get("dataset", []))
                except Exception as err:  # noqa: BLE001 - a granule is queued even if its direction cannot be found
                    direction = Direction("unknown", "none", f"error: {err}")
                self.out.put(Decided(resolve, direction))
        finally:
            self.finder.close()


class Ingest(threading.Thread):
    """Follows the granule topic and checks each message: whole granules of one platform and start time go on to
    the resolver (a gatherer slot keyed by start time alone can mix granules: only the complete ones are taken;
    the rest is left to reconciliation)."""

    def __init__(self, resolver: Resolver, follow_bus=follow, heard: Callable[[Announced | Delivered], None] = None
                 ) -> None:
        super().__init__(name="ingest", daemon=True)
        self.resolver = resolver
        self.follow_bus = follow_bus
        self.heard = heard or (lambda item: None)  # what the live path said, for the broker's loop
        self.stopping = threading.Event()
        self.subscribed = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._follow()
            except TimeoutError as err:
                log.warning("no answer from the posttroll nameserver on localhost (%s); retrying", err)
                self.stopping.wait(1)
            except Exception:  # noqa: BLE001 - keep following whatever the bus does
                log.exception("bus subscription failed; retrying in 1 s")
                self.stopping.wait(1)

    def _follow(self) -> None:
        with self.follow_bus([TOPIC, FILE_TOPIC]) as sub:
            log.info("following %s on the bus", TOPIC)
            self.subscribed.set()
            for msg in sub.recv(timeout=0.25):  # wakes 4 times a second to see the stop flag
                if self.stopping.is_set():
                    return
                if msg is not None:
                    self.handle(msg)

    def handle(self, msg: Message) -> None:
        if msg.type == "file":
            self._announced(msg)
            return
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
        taken = tuple(key for part in parts for key in keys_of(granule.product, part.data.get("dataset", [])))
        named = tuple(keys_of(granule.product, granule.data.get("dataset", [])))
        self.heard(Delivered(granule.product, taken, named))
        for part in parts:
            self.resolver.submit(Resolve(part, "live"))

    def _announced(self, msg: Message) -> None:
        uid = msg.data.get("uid") if isinstance(msg.data, dict) else None
        if isinstance(uid, str) and msg.subject.startswith(FILE_TOPIC):
            self.heard(Announced(uid))
