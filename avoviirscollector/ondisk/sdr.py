"""``$VIIRS_BASE/sdr`` without listing it again and again: one full pass, then the kernel's word for each change.

sdr/ is one flat folder that holds months of files (the default keeps them until space runs low: about 5,400 files a
day, 600,000 in four months), while every program cares about a recent window of it (task_broker: RECOVERY_HOURS
and the listing window; monitor: a day). So a :class:`SdrWatch` thread lists it once, at start (``scandir`` and one
``lstat`` per entry: a few seconds of CPU for 600,000 files, in the background), and from then on follows it
through inotify (watchdog's ``InotifyFD``, the piece trollstalker runs on too): every name renamed or moved in,
created (a hard link) or closed after writing is looked at and reported *seen* with its placement time (the inode
change time: a placement is one rename, which sets it), every name removed or moved out that is really gone is
reported *gone*. An event is only a hint: the name is looked at (``lstat``) when the event is taken, so neither
the order nor the number of events matters. The files stay the source of truth: a file put into sdr/ by anyone
counts, one removed by anyone stops counting.

A full pass makes the view whole again, logged at WARNING, when the kernel's event queue overflowed
(``IN_Q_OVERFLOW``: events were lost) or when sdr/ itself was removed, moved or replaced (its watch is set again as
soon as sdr/ exists, then the pass). What to keep of what is seen is the owner's business: a :class:`Sink`
(task_broker's ``granules.Inventory``, monitor's day of files).

:func:`names_by_start` is the on-demand pass for the rare jobs that need the whole archive (the free-space sweep, an
operator's re-queue): names only, each granule start read from fixed places in the name (``viirs.start_key``), no
``stat`` and no parsing of names outside the range asked for.
"""

from __future__ import annotations

import logging
import os
import queue as stdqueue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyEvent, InotifyFD

from avoviirscollector.viirs import start_key

log = logging.getLogger("sdr")

#: what the watch asks the kernel for (IN_ONLYDIR: sdr/ must be a folder; IN_EXCL_UNLINK: nothing of files removed)
WATCH_MASK = (InotifyConstants.IN_MOVED_TO | InotifyConstants.IN_CREATE | InotifyConstants.IN_CLOSE_WRITE
              | InotifyConstants.IN_DELETE | InotifyConstants.IN_MOVED_FROM | InotifyConstants.IN_DELETE_SELF
              | InotifyConstants.IN_MOVE_SELF | InotifyConstants.IN_ONLYDIR | InotifyConstants.IN_DONT_FOLLOW
              | InotifyConstants.IN_EXCL_UNLINK)
CHECK_STOP_EVERY = 4096  # entries of a pass between two looks at the stop flag
EVENTS_PER_ROUND = 10_000  # events taken before the periodic work gets its turn
COMPLAIN_EVERY = 600.0  # seconds between two log lines about the same trouble
NICE = 10  # the watch's thread's nice value (its steady work is a few milliseconds now and then)


class Sink(Protocol):
    """What a :class:`SdrWatch` tells its owner. Called from the watch's thread only."""

    def begin_pass(self) -> None:
        """A full pass starts: every file of sdr/ will be ``seen`` (events meanwhile are taken after it)."""

    def seen(self, name: str, placed: float) -> None:
        """``name`` is in sdr/, placed at ``placed`` (epoch seconds); may come again for the same file."""

    def gone(self, name: str) -> None:
        """``name`` is no longer in sdr/ (it may never have been reported)."""

    def end_pass(self, complete: bool) -> None:
        """The pass ended; ``complete``: every entry was seen, so what was not seen this time is gone."""


class _Hints:
    """watchdog's callback for the one watch: every event becomes a hint in the watch's queue."""

    def __init__(self, hints: stdqueue.SimpleQueue) -> None:
        self.hints = hints

    def on_event(self, event: InotifyEvent) -> None:
        if event.is_move_self or event.is_delete_self or event.mask & InotifyConstants.IN_UNMOUNT:
            self.hints.put(("lost", "sdr/ itself was moved or removed"))
        elif event.name and not event.is_directory:
            self.hints.put(("name", os.fsdecode(event.name)))

    def on_watch_deleted(self, wd: int) -> None:
        self.hints.put(("lost", "the watch of sdr/ ended"))

    def on_queue_overflow(self) -> None:
        self.hints.put(("overflow", "the kernel's inotify queue overflowed: events were lost"))


class SdrWatch(threading.Thread):
    """Follows ``folder`` for ``sink`` (see the module docstring) and calls ``tick()`` every ``interval`` seconds
    from the same thread (so the sink needs no lock for what ``tick`` does with it). ``ready`` is set once the first
    full pass is done. Stops within a second of :meth:`stop` (a pass in progress is cut short)."""

    def __init__(self, folder: Path, sink: Sink, tick: Callable[[], None] | None = None, interval: float = 5.0,
                 logger: logging.Logger | None = None) -> None:
        super().__init__(name="sdr-watch", daemon=True)
        self.folder = Path(folder)
        self.sink = sink
        self.tick = tick
        self.interval = interval
        self.log = logger or log
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.passes = 0
        self.hints: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        self._callback = _Hints(self.hints)
        self._inotify: InotifyFD | None = None
        self._wd: int | None = None
        self._pass_due: str | None = "start"
        self._complained: dict[str, float] = {}

    def stop(self) -> None:
        self.stopping.set()
        self.hints.put(None)  # wakes the thread at once

    # -- the thread --------------------------------------------------------------------------------------------
    def run(self) -> None:
        next_tick = time.monotonic()
        self._be_nice()
        try:
            while not self.stopping.is_set():
                if self._wd is None and not self._watch():
                    self.stopping.wait(1.0)
                    continue
                if self._pass_due is not None:
                    self._full_pass()
                    continue
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + self.interval
                    if self.tick is not None:
                        self._guarded(self.tick, "periodic work")
                self._take_hints(max(0.0, min(1.0, next_tick - time.monotonic())))
        finally:
            self._close()

    def _be_nice(self) -> None:
        """Run this thread below its program's other work (Linux keeps a nice value per thread): a full pass over
        months of files at a start then takes the CPU the live path (trollstalker, the gatherers, the broker's loop)
        does not need, instead of competing with the first granule after the start."""
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except (AttributeError, OSError):
            pass

    def _guarded(self, work: Callable[[], None], what: str) -> None:
        try:
            work()
        except Exception:  # noqa: BLE001 - the view must go on whatever its owner's work does
            self.log.exception("sdr/: %s failed", what)

    def _complain(self, key: str, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._complained.get(key, -COMPLAIN_EVERY) >= COMPLAIN_EVERY:
            self._complained[key] = now
            self.log.error(fmt, *args)

    def _watch(self) -> bool:
        """Set the watch on sdr/ (a new inotify instance when the old one's thread has gone); True when set."""
        if self._inotify is not None and not self._inotify.is_alive():
            self._close()
        if self._inotify is None:
            try:
                self._inotify = InotifyFD()
            except OSError as err:
                self._complain("inotify", "sdr/: no inotify instance (%s): changes in %s are not followed; trying "
                               "again every second", err, self.folder)
                return False
            self._inotify.start()
        try:
            self._wd = self._inotify.add_callback(os.fsencode(self.folder), WATCH_MASK, self._callback,
                                                  CallbackId(id(self)))
        except OSError as err:
            self._complain("watch", "sdr/: cannot watch %s (%s); trying again every second", self.folder, err)
            return False
        if self._wd == -1:  # watchdog does not raise for EACCES
            self._wd = None
            self._complain("watch", "sdr/: cannot watch %s (permission denied); trying again every second",
                           self.folder)
            return False
        if "watch" in self._complained:
            self._complained.pop("watch")
            self.log.info("sdr/: %s is watched again", self.folder)
        return True

    def _unwatch(self) -> None:
        if self._wd is not None and self._inotify is not None:
            try:
                self._inotify.remove_callbacks([(self._wd, CallbackId(id(self)))])
            except (OSError, KeyError):
                pass
        self._wd = None

    def _close(self) -> None:
        self._unwatch()
        if self._inotify is not None:
            self._inotify.stop()
            self._inotify = None

    def _take_hints(self, timeout: float) -> None:
        try:
            hint = self.hints.get(timeout=timeout) if timeout > 0 else self.hints.get_nowait()
        except stdqueue.Empty:
            return
        for _ in range(EVENTS_PER_ROUND):
            if hint is None:
                return
            kind, value = hint
            if kind == "name":
                self._look(value)
            elif kind == "lost":
                self._unwatch()
                self._pass_due = self._pass_due or value
            else:  # the kernel's queue overflowed
                self._pass_due = self._pass_due or value
            try:
                hint = self.hints.get_nowait()
            except stdqueue.Empty:
                return

    def _look(self, name: str) -> None:
        if name.startswith("."):
            return
        try:
            st = os.lstat(self.folder / name)
        except FileNotFoundError:
            self.sink.gone(name)
            return
        except OSError:
            return
        if not stat.S_ISDIR(st.st_mode):
            self.sink.seen(name, st.st_ctime)

    def _full_pass(self) -> None:
        why, self._pass_due = self._pass_due, None
        began = time.monotonic()
        entries = 0
        complete = False
        self.sink.begin_pass()
        try:
            with os.scandir(self.folder) as listing:
                for entry in listing:
                    entries += 1
                    if entries % CHECK_STOP_EVERY == 0 and self.stopping.is_set():
                        break
                    if entry.name.startswith("."):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if not stat.S_ISDIR(st.st_mode):
                        self.sink.seen(entry.name, st.st_ctime)
                else:
                    complete = True
        except OSError as err:
            self._complain("pass", "sdr/: cannot list %s (%s); trying again", self.folder, err)
            self._unwatch()
            self._pass_due = why
        finally:
            self.sink.end_pass(complete)
        if not complete:
            return
        self.passes += 1
        level = logging.INFO if why == "start" else logging.WARNING
        self.log.log(level, "sdr/: full pass (%s): %d entries in %.1f s; following its changes from here on", why,
                     entries, time.monotonic() - began)
        self.ready.set()


def names_by_start(folder: Path, first: str | None = None, last: str | None = None) -> Iterator[tuple[str, str]]:
    """(start key, name) of each entry of ``folder`` shaped like a VIIRS SDR name whose granule start key
    (``viirs.start_key``) lies in ``[first, last]`` (either bound may be None); names only, no ``stat``, in
    directory order. The caller still parses the names it keeps."""
    with os.scandir(folder) as listing:
        for entry in listing:
            key = start_key(entry.name)
            if key is None or (first is not None and key < first) or (last is not None and key > last):
                continue
            yield key, entry.name
