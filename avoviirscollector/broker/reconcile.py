"""Reconciliation of task_broker's queue with ``sdr/``, the source of truth (SPEC section 10).

The pytroll bus is the fast path, and it keeps nothing: a granule whose ``dataset`` message was published while the
broker was down, whose files arrived while trollstalker was down, whose gatherer restarted half-way or whose last
file came after the gatherer's slot timed out never reaches the broker by the bus. So every
:data:`SCAN_SECONDS` (and at start) a thread lists ``sdr/`` (:class:`Scanner`: only new names are parsed and
looked at, so a scan of a folder of 100,000 files costs a few milliseconds) and hands the complete granules of the
recovery window to the broker's loop; :class:`Planner` (pure) then picks those that are neither queued nor in the
hand-out ledger and have been complete for :data:`GRACE_SECONDS` (time for the live path, whose dataset follows the
last file within a second), and names the case for the log. The broker queues them through the same direction
finder and queue rules as live granules, and checks again at that moment, so a dataset that arrives meanwhile
never makes a second task.
"""

from __future__ import annotations

import configparser
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector.granules import GranuleKey, Inventory, OnDisk, scan_folder

log = logging.getLogger("task_broker.reconcile")

SCAN_SECONDS = 5.0
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
        self.pending: dict[GranuleKey, float] = {}  # recoveries on their way to the queue -> when sent

    def since(self, now: float) -> float:
        """The oldest completion time a scan needs to report."""
        return max(now - self.window, self.ledger_since)

    def plan(self, found: Iterable[OnDisk], knows: Callable[[GranuleKey], bool], now: float) -> list[Recovery]:
        since = self.since(now)
        self.pending = {key: sent for key, sent in self.pending.items() if now - sent < PENDING_SECONDS}
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


class Scanner(threading.Thread):
    """Lists ``sdr/`` every ``interval`` seconds (and at once) and passes the complete granules found since
    ``since(now)`` to ``deliver(found)``. Stops within a second of :meth:`stop`."""

    def __init__(self, folder: Path, since: Callable[[float], float], deliver: Callable[[list[OnDisk]], None],
                 interval: float = SCAN_SECONDS, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="reconcile", daemon=True)
        self.folder = Path(folder)
        self.since = since
        self.deliver = deliver
        self.interval = interval
        self.clock = clock
        self.inventory = Inventory()
        self.stopping = threading.Event()
        self._failed_at: float | None = None

    def stop(self) -> None:
        self.stopping.set()

    def scan(self) -> list[OnDisk]:
        now = self.clock()
        names, placed_of = scan_folder(self.folder)
        added, removed = self.inventory.sync(names, placed_of)
        if added or removed:
            log.debug("sdr/: %d new files, %d gone, %d in all", added, removed, len(self.inventory))
        return list(self.inventory.complete(self.since(now)))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.deliver(self.scan())
                if self._failed_at is not None:
                    log.info("sdr/ can be listed again")
                    self._failed_at = None
            except Exception as err:  # noqa: BLE001 - a scan that fails is tried again at the next interval
                now = self.clock()
                if self._failed_at is None or now - self._failed_at >= 600:
                    log.error("cannot reconcile with %s: %s (trying again every %.0f s)", self.folder, err,
                              self.interval)
                    self._failed_at = now
            self.stopping.wait(self.interval)

