"""Reconciliation of task_broker's queue with ``sdr/``, the source of truth (SPEC section 10).

The pytroll bus is the fast path, and it keeps nothing: a granule whose ``dataset`` message was published while the
broker was down, whose files arrived while trollstalker was down, whose gatherer restarted half-way or whose last
file came after the gatherer's slot timed out never reaches the broker by the bus. So the broker keeps a view of
sdr/ (:class:`SdrView`: one full pass at start, then inotify, never a listing of the archive again) and every few
seconds (``server.SCAN_SECONDS``) hands the complete granules of the recovery window to the broker's loop;
:class:`Planner` (pure) then picks those that are neither queued nor in the hand-out ledger and that the live path
has really failed to bring, and names the case for the log. The broker queues them through the same direction finder
and queue rules as live granules, and checks again at that moment, so a dataset that arrives meanwhile never makes a
second task.

When has the live path failed? Its dataset follows a granule's last file within a second on a quiet host, but after
an outage or a first listing hundreds of granules arrive at once, and each gatherer works through trollstalker's file
messages in the order they were published (tens of milliseconds each, with every file of every product): the dataset
of the hundredth granule can come a minute after its files. So the broker also follows trollstalker's ``file``
messages and every gatherer's datasets (:class:`LivePath`), and a granule complete on disk is left to the live path
for :data:`GRACE_SECONDS` after the latest of: its completion on disk, the last announcement of its files, and, while
its gatherer has not yet delivered a granule completed at or after it, that gatherer's last dataset (a gatherer still
publishing is still working through older messages). It is recovered once the live path has been silent about it
that long, and the log names what failed:

- task_broker was not following the bus when it completed (it was stopped or restarting);
- a late file: the granule's files spread over more than the gatherer's slot timeout;
- trollstalker never announced one of its files (stopped or restarting when the file was placed);
- its gatherer went on to later granules without a dataset for it (restarted while its files arrived, or the
  dataset was lost on the way);
- its gatherer published nothing since its files were announced (stopped, restarting or stuck).
"""

from __future__ import annotations

import configparser
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector.granules import GranuleKey, GranuleMap, Inventory, OnDisk
from avoviirscollector.ondisk.sdr import SdrWatch, names_by_start
from avoviirscollector.viirs import start_key_of

log = logging.getLogger("task_broker.reconcile")

GRACE_SECONDS = 10.0
#: a recovery sent to the direction finder and not back after this long may be sent again
PENDING_SECONDS = 300.0
DEFAULT_TIMELINESS = 600.0


def gatherer_timeouts(ini: Path) -> dict[str, float]:
    """The slot timeout (``timeliness``, seconds) of each product's segment_gatherer section in ``ini``."""
    parser = configparser.RawConfigParser()
    try:
        parser.read(ini)
    except configparser.Error as err:
        log.warning("cannot read %s (%s): assuming %d s slot timeouts", ini, err, DEFAULT_TIMELINESS)
        return {}
    out = {}
    for section in parser.sections():
        try:
            out[section] = parser.getfloat(section, "timeliness", fallback=DEFAULT_TIMELINESS)
        except ValueError:
            out[section] = DEFAULT_TIMELINESS
    return out


@dataclass(frozen=True)
class Recovery:
    """A complete granule found in sdr/ with no task: why, and how long it has been complete."""

    found: OnDisk
    case: str
    waited: float  # seconds it has been complete on disk

    @property
    def key(self) -> GranuleKey:
        return self.found.key


class LivePath:
    """What task_broker heard of the live path, to tell a granule still on its way from one that was lost. Pure: times
    are epoch seconds passed in; not thread-safe (the broker's loop owns it).

    It keeps the file names trollstalker announced (and when) and the granules each gatherer's datasets named, for
    ``keep`` seconds (the recovery window), and learns from each scan of sdr/ how far each stage has come: trollstalker
    announces files in the order they were placed and a gatherer works through those messages in order, so once a
    stage has passed a granule completed later than another, that other one is behind it for good."""

    def __init__(self, keep_seconds: float) -> None:
        self.keep = keep_seconds
        self.announced: dict[str, float] = {}  # file name -> when its file message came; in the order they came
        self.last_announcement: float | None = None
        self.delivered = GranuleMap()  # granules taken from a dataset, not yet queued -> when
        self.mentioned = GranuleMap()  # every granule a gatherer's dataset named -> when
        self.last_dataset: dict[str, float] = {}  # product -> when its gatherer's last dataset came
        self.announced_through = float("-inf")  # completion (on disk) of the latest granule whose files were announced
        self.progress: dict[str, float] = {}  # product -> completion (on disk) of the latest granule its gatherer named
        self._pruned = float("-inf")

    def file(self, name: str, now: float) -> None:
        """trollstalker's ``file`` message for ``name`` came."""
        self.announced.pop(name, None)
        self.announced[name] = now
        self.last_announcement = now

    def dataset(self, product: str, taken: Iterable[GranuleKey], named: Iterable[GranuleKey], now: float) -> None:
        """A dataset of ``product``'s gatherer came; ``taken``: its granules on their way to the queue; ``named``:
        every granule it named (a slot that mixed granules names some that are not taken)."""
        self.last_dataset[product] = now
        for key in taken:
            self.delivered[key] = now
        for key in named:
            self.mentioned[key] = now

    def queued(self, key: GranuleKey) -> None:
        self.delivered.pop(key, None)

    def learn(self, found: list[OnDisk], now: float) -> None:
        """How far trollstalker and each gatherer have come, from the complete granules of a scan."""
        if now - self._pruned >= 60:
            self._prune(now)
        for item in found:
            if item.complete_at > self.announced_through and not self.unannounced(item):
                self.announced_through = item.complete_at
            product = item.key.product
            if item.complete_at > self.progress.get(product, float("-inf")) and item.key in self.mentioned:
                self.progress[product] = item.complete_at

    def _prune(self, now: float) -> None:
        self._pruned = now
        while self.announced:
            name, when = next(iter(self.announced.items()))
            if now - when < self.keep:
                break
            del self.announced[name]
        self.delivered = GranuleMap((k, t) for k, t in self.delivered.items() if now - t < PENDING_SECONDS)
        self.mentioned = GranuleMap((k, t) for k, t in self.mentioned.items() if now - t < self.keep)

    def unannounced(self, item: OnDisk) -> list[str]:
        return [name.name for name in item.files if name.name not in self.announced]

    def heard_of(self, item: OnDisk) -> float:
        """The last moment the live path said something that ``item`` may still be waiting behind: its completion
        on disk, the announcement of its files (or, while trollstalker has not reached them, its last announcement),
        and, while its gatherer has not reached it, that gatherer's last dataset."""
        last = item.complete_at
        if self.unannounced(item):
            if item.complete_at > self.announced_through and self.last_announcement is not None:
                last = max(last, self.last_announcement)
            return last
        last = max(last, max(self.announced[name.name] for name in item.files))
        product = item.key.product
        if item.complete_at > self.progress.get(product, float("-inf")) and product in self.last_dataset:
            last = max(last, self.last_dataset[product])
        return last


class Planner:
    """Picks the granules to recover from a scan. Pure: times are epoch seconds passed in."""

    def __init__(self, window_seconds: float, ledger_since: float, started_at: float,
                 timeouts: dict[str, float] | None = None, grace: float = GRACE_SECONDS) -> None:
        self.window = window_seconds
        self.ledger_since = ledger_since  # nothing completed before this is recovered (before the suite's first start)
        self.started_at = started_at  # when this broker started following the bus
        self.timeouts = timeouts or {}
        self.grace = grace
        self.pending = GranuleMap()  # recoveries on their way to the queue -> when sent
        self.live = LivePath(window_seconds)

    def since(self, now: float) -> float:
        """The oldest completion time a scan needs to report."""
        return max(now - self.window, self.ledger_since)

    def plan(self, found: Iterable[OnDisk], knows: Callable[[GranuleKey], bool], now: float) -> list[Recovery]:
        since = self.since(now)
        found = list(found)
        self.live.learn(found, now)
        self.pending = GranuleMap((key, sent) for key, sent in self.pending.items() if now - sent < PENDING_SECONDS)
        out = []
        for item in found:
            if item.complete_at < since or now - self._waited_from(item) < self.grace:
                continue
            if item.key in self.pending or item.key in self.live.delivered or knows(item.key):
                continue
            self.pending[item.key] = now
            out.append(Recovery(item, self.case(item), now - item.complete_at))
        out.sort(key=lambda r: (r.found.complete_at, r.key))
        return out

    def _waited_from(self, item: OnDisk) -> float:
        """Since when the granule has waited for the live path: since it became complete when this broker was not
        following the bus then, else since the live path last said something it may be waiting behind."""
        return item.complete_at if item.complete_at < self.started_at else self.live.heard_of(item)

    def done(self, key: GranuleKey) -> None:
        self.pending.pop(key, None)

    def case(self, item: OnDisk) -> str:
        product = item.key.product
        timeout = self.timeouts.get(product, DEFAULT_TIMELINESS)
        if item.complete_at < self.started_at:
            return "completed while task_broker was not following the bus (stopped or restarting)"
        if item.spread > timeout:
            return (f"late file: the granule's last file came {item.spread:.0f} s after its first, past "
                    f"segment_gatherer-{product}'s {timeout:.0f} s slot timeout")
        unannounced = {name.name for name in item.files} & set(self.live.unannounced(item))
        if unannounced:
            segments = ", ".join(name.segment for name in item.files if name.name in unannounced)
            return (f"trollstalker announced no file message for its {segments} (stopped or restarting when "
                    f"{'it was' if len(unannounced) == 1 else 'they were'} placed)")
        if item.complete_at <= self.live.progress.get(product, float("-inf")):
            return (f"segment_gatherer-{product} went on to later granules without a dataset for this one (restarted "
                    f"while its files arrived, or its dataset was lost on the way)")
        return (f"no dataset from segment_gatherer-{product} within {self.grace:.0f} s of its files' messages "
                f"(stopped, restarting or stuck)")


class SdrView:
    """task_broker's view of sdr/: an :class:`~avoviirscollector.granules.Inventory` of the recovery window and the
    listing window, fed by an ``ondisk.sdr.SdrWatch`` (one full pass at start, then inotify), which every
    ``interval`` seconds moves the inventory's limits on (``since(now)``; granules that started within ``horizon``
    of now) and passes the complete granules found since ``since(now)`` to ``deliver(found)``, from its own thread.
    What it costs follows the window, not the archive. Stops within a second of :meth:`stop`."""

    def __init__(self, folder: Path, since: Callable[[float], float], deliver: Callable[[list[OnDisk]], None],
                 horizon: dt.timedelta, interval: float, clock: Callable[[], float] = time.time) -> None:
        self.since = since
        self.deliver = deliver
        self.horizon = horizon
        self.clock = clock
        now = clock()
        self.inventory = Inventory(since(now), self._start_since(now))
        self.watch = SdrWatch(Path(folder), self.inventory, tick=self.tick, interval=interval, logger=log)

    def _start_since(self, now: float) -> dt.datetime:
        return (dt.datetime.fromtimestamp(now, dt.UTC) - self.horizon).replace(tzinfo=None)

    def tick(self) -> None:
        now = self.clock()
        since = self.since(now)
        self.inventory.bounds(since, self._start_since(now))
        self.deliver(list(self.inventory.complete(since)))

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    def join(self, timeout: float | None = None) -> None:
        self.watch.join(timeout)


def complete_between(folder: Path, first: dt.datetime, last: dt.datetime) -> list[OnDisk]:
    """The complete product granules in ``folder`` that start within ``[first, last]`` (an operator's re-queue):
    one pass over the names, parsing only those in the range."""
    inventory = Inventory()
    margin = dt.timedelta(seconds=1)
    for _key, name in names_by_start(folder, start_key_of(first - margin), start_key_of(last + margin)):
        try:
            placed = os.lstat(Path(folder) / name).st_ctime
        except OSError:
            continue
        inventory.seen(name, placed)
    return [item for item in inventory.complete() if first <= item.key.start_time <= last]
