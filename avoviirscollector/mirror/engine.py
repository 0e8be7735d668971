"""The engine of mirror_gina: one run over its queues (locks, listings, planning, the downloader, placement, the
memory of failures and the health record), and the per-queue locks. The command line is mirror/cli.py."""


from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from avoviirscollector.config import Settings
from avoviirscollector.mirror.download import Downloader, Fault, Outcome, os_reason, remove_stale_temps
from avoviirscollector.mirror.gina import (
    ListingClient,
    ListingError,
    Queue,
    fetch_listing,
    listing_days,
    plan_jobs,
)
from avoviirscollector.mirror.memory import (
    HEALTH_NAME,
    FailureMemory,
    ListingTimes,
    MirrorHealth,
    SkippedRecords,
    is_outage,
)
from avoviirscollector.mirror.place import AlreadyPlaced, Journal, PlacementError, place_file, warm_up
from avoviirscollector.ondisk.state import read_json
from avoviirscollector.space import sweep
from avoviirscollector.viirs import SATELLITE_TO_SHORT

PROGRAM = "mirror_gina"


class QueueLocks:
    """Non-blocking ``flock`` per queue in ``state/``; released when the process ends, whatever the cause."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fds: dict[str, int] = {}

    def path(self, queue: str) -> Path:
        return self.state_dir / f"{PROGRAM}.{queue}.lock"

    def acquire(self, queue: str) -> bool:
        """True when this run now holds the queue's lock. Raises OSError when the lock file cannot be created."""
        fd = os.open(self.path(queue), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # the pid is for the operator only: the flock is the lock, so a full disk does not stop the run
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fds[queue] = fd
        return True

    def release_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Placed:
    """What counts as placed already: a name the journal remembers, or a file of that name in sdr/ (looked up one
    name at a time: sdr/ holds months of files, a listing only days of them)."""

    def __init__(self, sdr_dir: Path, remembered: set[str]) -> None:
        self.sdr_dir = sdr_dir
        self.remembered = remembered

    def __contains__(self, name: object) -> bool:
        return name in self.remembered or (isinstance(name, str) and os.path.lexists(self.sdr_dir / name))


class _Progress:
    """A tqdm bar on the terminal (stderr), fed by the downloader once a second and on every outcome."""

    def __init__(self, files: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=files, unit="file", dynamic_ncols=True, file=sys.stderr)

    def active(self, items: list[tuple[str, int, int | None]]) -> None:
        parts = [f"{name.split('_', 1)[0]} {done * 100 // total if total else 0}%" for name, done, total in items]
        self.bar.set_postfix_str(", ".join(parts[:4]))

    def one_done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class MirrorRun:
    """One run of mirror_gina over ``queues``. ``run()`` returns the exit status; ``stop()`` may come from a signal."""

    def __init__(self, settings: Settings, queues: list[Queue], log: logging.Logger, *, stall_seconds: int = 30,
                 connect_timeout: float = 10.0, show_progress: bool = False,
                 downloader_options: dict | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.settings = settings
        self.queues = queues
        self.log = log
        self.stall_seconds = stall_seconds
        self.connect_timeout = connect_timeout
        self.show_progress = show_progress
        self.downloader_options = downloader_options or {}
        self.clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.placed: list[str] = []
        self.first_listed: dict[str, str] = {}  # name -> when a listing first showed it (ISO), for the journal
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.listing_failed = False
        self.lock_failed = False
        self.bytes_placed = 0
        self.own_faults: dict[str, str] = {}  # failures of the files' own fault (FailureMemory counts them)
        self.resuming: list[str] = []  # failed, partial kept for the next run
        self.satellites: dict[str, dt.datetime | None] = {}

    def stop(self) -> None:
        self._stop.set()

    @property
    def journal_keep(self) -> dt.timedelta:
        """How long the journal remembers a placed file: the longer of the listing window (the largest backfill,
        plus the day the listing's end date runs ahead) and RECOVERY_HOURS."""
        days = max([self.settings.gina_backfill_days] + [q.backfill_days for q in self.queues])
        return max(dt.timedelta(days=days + 1), dt.timedelta(hours=self.settings.recovery_hours))

    def run(self) -> int:
        s = self.settings
        try:
            for path in (s.sdr_dir, s.tmp_dir, s.state_dir):
                path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.log.error("cannot create %s: %s; the next run tries again", err.filename, os_reason(err))
            return 1
        locks = QueueLocks(s.state_dir)
        try:
            mine = []
            for queue in self.queues:
                try:
                    got = locks.acquire(queue.name)
                except OSError as err:
                    self.log.error("queue %s: cannot create its lock %s: %s; the next run tries again", queue.name,
                                   locks.path(queue.name), os_reason(err))
                    self.lock_failed = True
                    continue
                if got:
                    mine.append(queue)
                else:
                    self.log.info("queue %s: another mirror_gina run still holds %s; skipping this queue",
                                  queue.name, locks.path(queue.name))
            if not mine:
                if self.lock_failed:
                    return 1
                self.log.info("every queue is busy with another mirror_gina run; exiting")
                return 0
            return self._run_queues(mine)
        finally:
            locks.release_all()

    def _listings(self, queues: list[Queue]) -> list:
        """The good records of every listing these queues need; notes each satellite's newest granule listed
        (None when its listing failed) in ``self.satellites``."""
        client = ListingClient()
        try:
            return self._list_with(client, queues)
        finally:
            client.close()

    def _list_with(self, client: ListingClient, queues: list[Queue]) -> list:
        now = self.clock()
        today = now.date()
        listings = ListingTimes(self.settings.state_dir)
        skipped = SkippedRecords(self.settings.state_dir)
        groups: dict[tuple, list[Queue]] = {}
        for queue in queues:
            groups.setdefault(queue.listing_key, []).append(queue)
        records = []
        for key, members in groups.items():
            if self._stop.is_set():
                break
            names = ", ".join(q.name for q in members)
            days = listing_days(now, listings.last_full(key))
            try:
                good, problems = fetch_listing(client, self.settings.gina_url, key, today,
                                               timeout=(self.connect_timeout, 60.0), days=days)
                if days is None:
                    listings.listed_in_full(key, now)
            except ListingError as err:
                self.listing_failed = True
                self.satellites.setdefault(key[0], None)
                self.log.error("listing for %s (queues %s) failed: %s; the next run tries again", key[0], names, err)
                continue
            newest = max((rec.sdr.start_time.replace(tzinfo=dt.UTC) for rec in good), default=None)
            if newest is not None or key[0] not in self.satellites:
                self.satellites[key[0]] = max(filter(None, (newest, self.satellites.get(key[0]))), default=None)
            to_name = skipped.to_name(problems, now)
            for problem in to_name:  # one WARNING per unusable record (again a day later if still listed)
                self.log.warning("listing for %s: skipped %s", key[0], problem)
            if len(problems) > len(to_name):
                self.log.info("listing for %s: skipped %d unusable records again (each named in a WARNING within "
                              "the last 24 hours)", key[0], len(problems) - len(to_name))
            records += good
        return records

    def _run_queues(self, queues: list[Queue]) -> int:
        s = self.settings
        now = self.clock()
        started = time.monotonic()
        try:
            count, size = remove_stale_temps(s.tmp_dir)
        except OSError as err:
            self.log.warning("cannot clean %s of stale temp files: %s", s.tmp_dir, os_reason(err))
        else:
            if count:
                self.log.info("removed %d stale temp file(s) (%.1f MB) untouched for a day from %s", count,
                              size / 1e6, s.tmp_dir)
        pending = read_json(s.state_dir / HEALTH_NAME).get("pending")  # first listed by an earlier run
        listed_now = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        records = self._listings(queues)
        self.first_listed = {rec.name: (pending.get(rec.name) if isinstance(pending, dict) else None) or listed_now
                             for rec in records}
        if self._stop.is_set():
            self.log.info("stopped before any download")
            return 1
        journal = Journal(s.state_dir)
        # placed before and removed since (cleanup, free-space sweep): not fetched again while GINA lists it
        have = Placed(s.sdr_dir, journal.remembered(self.journal_keep))
        planned, counts = plan_jobs(records, queues, have)
        memory = FailureMemory(s.state_dir, s.mirror_give_up_tries)
        waiting = {job.name: memory.waiting(job.name, now) for job in planned}
        jobs = [job for job in planned if waiting[job.name] is None]
        held = Counter(w for w in waiting.values() if w)
        if held:
            self.log.info("not fetched now: %d file(s) waiting after failing (backoff), %d given up on (see "
                          "avo_status)", held["backoff"], held["given up"])
        listed = sum(c[0] for c in counts.values())
        wanted = {rec.name for rec in records if any(q.wants(rec.name) and SATELLITE_TO_SHORT[q.satellite] ==
                                                     rec.sdr.platform for q in queues)}
        try:
            status = self._fetch(jobs, listed, queues, journal, started) if jobs else self._nothing(listed, queues)
        finally:
            self._remember(memory, now, wanted, planned, waiting)
        return status

    def _nothing(self, listed: int, queues: list[Queue]) -> int:
        if self.lock_failed and not self.listing_failed:
            self.log.info("nothing fetched: %d wanted files listed, all placed before; a queue's lock could "
                          "not be taken (see above)", listed)
            return 1
        if self.listing_failed:
            self.log.info("nothing fetched: %d wanted files listed for %d queue(s), all placed before; "
                          "a listing failed (see above)", listed, len(queues))
            return 1
        self.log.info("nothing new: %d wanted files listed for %d queue(s), all placed before", listed,
                      len(queues))
        return 0

    def _remember(self, memory: FailureMemory, now: dt.datetime, wanted: set[str], planned: list,
                  waiting: dict[str, str | None]) -> None:
        """Failure memory and the health record, after the run (both skipped quietly when they cannot be
        written: a full disk has been reported per file already)."""
        s = self.settings
        attempted = len(planned) - sum(1 for w in waiting.values() if w)
        own = {} if self._stop.is_set() else self.own_faults
        if own and is_outage(len(own), attempted, self.listing_failed):
            self.log.warning("%d of %d files failed at once (or a listing failed): taken for an outage of GINA, no "
                             "file is put into backoff", len(own), attempted)
            own = {}
        try:
            for name, entry in memory.record(own, self.placed, now, now - self.journal_keep):
                self.log.error("giving up on %s after %d tries (last: %s); it is not fetched again (avo_status "
                               "lists it)", name, entry["tries"], entry["reason"])
        except OSError as err:
            self.log.warning("cannot write %s: %s", memory.path, os_reason(err))
        given_up = set(memory.given_up())
        unplaced = {job.name for job in planned} - set(self.placed) - set(self.skipped) - given_up
        succeeded = not (self.listing_failed or self.lock_failed or self._stop.is_set()) and \
            unplaced <= set(self.resuming)
        summary = (f"placed {len(self.placed)}, failed {len(self.failed)}, waiting {len(unplaced)}"
                   + ("; a listing failed" if self.listing_failed else ""))
        try:
            MirrorHealth(s.state_dir).record_run(now, succeeded, self.satellites, unplaced,
                                                 (wanted - unplaced) | given_up, summary)
        except OSError as err:
            self.log.warning("cannot write the health record in %s: %s", s.state_dir, os_reason(err))

    def _fetch(self, jobs: list, listed: int, queues: list[Queue], journal: Journal, started: float) -> int:
        s = self.settings
        try:  # room for the downloads first: below VIIRS_MIN_FREE the oldest granule files go (space.py)
            sweep(s, self.log)
        except OSError as err:
            self.log.warning("free-space sweep of %s failed: %s", s.sdr_dir, os_reason(err))
        connections = max(q.connections for q in queues)
        self.log.info("%d of %d wanted files to fetch with %d connections per file", len(jobs), listed, connections)
        progress = _Progress(len(jobs)) if self.show_progress else None
        downloader = Downloader(s.tmp_dir, connections, connect_timeout=self.connect_timeout,
                                low_speed_time=self.stall_seconds, progress=progress.active if progress else None,
                                **self.downloader_options)
        placer = ThreadPoolExecutor(1, thread_name_prefix="place")
        placer.submit(warm_up)

        def failed(name: str, fault: Fault, reason: str, partial_kept: bool = False) -> None:
            with self._lock:
                self.failed.append(name)
                if fault is Fault.FILE:
                    self.own_faults[name] = reason
                if partial_kept:
                    self.resuming.append(name)

        def place(outcome: Outcome) -> None:
            name = outcome.job.name

            def journal_entry():
                record = journal.append(name, outcome.size, outcome.md5, outcome.seconds, outcome.connections,
                                        listed=self.first_listed.get(name))
                return lambda: journal.retract(record)

            try:
                place_file(outcome.path, s.sdr_dir, name, before_rename=journal_entry)
            except AlreadyPlaced:
                self.log.info("skipped %s: another run placed it meanwhile; this copy is removed", name)
                with self._lock:
                    self.skipped.append(name)
                return
            except PlacementError as err:
                self.log.error("FAILED %s: %s; temp removed; the next run tries again", name, err)
                failed(name, Fault.FILE, str(err))
                return
            except OSError as err:
                self.log.error("FAILED %s: cannot place (%s); temp removed; the next run tries again", name,
                               os_reason(err))
                failed(name, Fault.LOCAL, os_reason(err))
                return
            mbps = outcome.size / 1e6 / outcome.seconds if outcome.seconds > 0 else 0.0
            resumed = f" resumed from byte {outcome.resumed_from}" if outcome.resumed_from else ""
            self.log.info("placed %s bytes=%d seconds=%.2f MB/s=%.1f connections=%d md5_after_last_byte=%.3fs%s",
                          name, outcome.size, outcome.seconds, mbps, outcome.connections, outcome.verify_seconds,
                          resumed)
            with self._lock:
                self.placed.append(name)
                self.bytes_placed += outcome.size

        def on_outcome(outcome: Outcome) -> None:
            if progress:
                progress.one_done()
            if outcome.ok:
                placer.submit(place, outcome)
            elif outcome.fault is Fault.SKIPPED:
                self.log.info("skipped %s: %s", outcome.job.name, outcome.reason)
                with self._lock:
                    self.skipped.append(outcome.job.name)
            else:
                self.log.error("FAILED %s: %s; %s", outcome.job.name, outcome.reason, outcome.next_step)
                failed(outcome.job.name, outcome.fault, outcome.reason, outcome.partial_kept)

        if progress:  # log lines go above the bar instead of through it
            from tqdm.contrib.logging import logging_redirect_tqdm

            redirect = logging_redirect_tqdm()
        else:
            redirect = contextlib.nullcontext()
        try:
            with redirect:
                downloader.run(jobs, on_outcome, self._stop)
        finally:
            placer.shutdown(wait=True)
            downloader.close()
            if progress:
                progress.close()
        seconds = time.monotonic() - started
        stopped = self._stop.is_set()
        self.log.info(
            "%s: placed %d files (%.1f MB in %.1f s, %.1f MB/s), failed %d, skipped %d%s",
            "stopped" if stopped else "done", len(self.placed), self.bytes_placed / 1e6, seconds,
            self.bytes_placed / 1e6 / seconds if seconds else 0.0, len(self.failed), len(self.skipped),
            "; listing failed for some queues" if self.listing_failed else "",
        )
        return 1 if (self.failed or self.listing_failed or self.lock_failed or stopped) else 0
