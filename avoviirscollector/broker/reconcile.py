"""Reconciliation of task_broker's queue with ``sdr/``, the source of truth (SPEC section 10).

The pytroll bus is the fast path, and it keeps nothing: a granule whose ``dataset`` message was published while the
broker was down, whose files arrived while trollstalker was down, whose gatherer restarted half-way or whose last
file came after the gatherer's slot timed out never reaches the broker by the bus. So the broker keeps a view of
sdr/ (:class:`SdrView`: one full pass at start, then inotify, never a listing of the archive again) and every few
seconds (``server.SCAN_SECONDS``) hands the complete granules of the recovery window to the broker's loop;
:class:`Planner` (pure) then picks those that are neither queued nor in the hand-out ledger and have been complete for
:data:`GRACE_SECONDS` (time for the live path, whose dataset follows the last file within a second), and names the
case for the log. The broker queues them through the same direction finder and queue rules as live granules, and
checks again at that moment, so a dataset that arrives meanwhile never makes a second task.
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


class Planner:
    """Picks the granules to recover from a scan. Pure: times are epoch seconds passed in."""

    def __init__(self, window_seconds: float, ledger_since: float, started_at: float,
                 timeouts: dict[str, float] | None = None, grace: float = GRACE_SECONDS) -> None:
        self.window = window_seconds
        self.ledger_since = ledger_since  # nothing completed before this is recovered (the first start, an upgrade)
        self.started_at = started_at  # when this broker started following the bus
        self.timeouts = timeouts or {}
        self.grace = grace
        self.pending = GranuleMap()  # recoveries on their way to the queue -> when sent

    def since(self, now: float) -> float:
        """The oldest completion time a scan needs to report."""
        return max(now - self.window, self.ledger_since)

    def plan(self, found: Iterable[OnDisk], knows: Callable[[GranuleKey], bool], now: float) -> list[Recovery]:
        since = self.since(now)
        self.pending = GranuleMap((key, sent) for key, sent in self.pending.items() if now - sent < PENDING_SECONDS)
        out = []
        for item in found:
            if item.complete_at < since or now - item.complete_at < self.grace:
                continue
            if item.key in self.pending or knows(item.key):
                continue
            self.pending[item.key] = now
            out.append(Recovery(item, self.case(item), now - item.complete_at))
        out.sort(key=lambda r: (r.found.complete_at, r.key))
        return out

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
        return (f"no dataset from segment_gatherer-{product} (trollstalker or the gatherer was stopped or restarted "
                f"while its files arrived, or its slot mixed granules)")


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
